"""The reference classifier as a feature network: its penultimate (pooled) activations, a feature space
trained on BloodMNIST itself, for the protocol's 'classifier' metric (Frechet distance and KID there).

Inception features come from ImageNet photos; these come from a network that learned to tell the 8 cell
types apart, so a distance here weighs what separates blood cells. It is not FID and is never called so.
"""

from __future__ import annotations

import copy

from torch import nn

from bloodgen.classify.reference import reference_classifier
from bloodgen.metrics.features import FeatureExtractor
from bloodgen.provenance import state_digest

NAME = "bloodmnist-resnet18-penultimate"


class PenultimateFeatures(nn.Module):
    """float (N, 3, 28, 28) in [0, 1] -> the classifier's pooled features before its last layer."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.body = copy.deepcopy(classifier)
        self.body.fc = nn.Identity()

    def forward(self, x):
        return self.body(x * 2.0 - 1.0)  # the classifier reads images in [-1, 1]


def classifier_extractor(data, recipe=None, cache_dir=None, device=None, batch_size: int | None = None,
                         progress: bool = True) -> FeatureExtractor:
    """A `FeatureExtractor` over the reference classifier for `data` (shipped, cached or trained now)."""
    model, info = reference_classifier(data, recipe, cache_dir=cache_dir)
    network = PenultimateFeatures(model).eval()
    return FeatureExtractor(lambda: network, name=NAME, dim=model.fc.in_features,
                            weights_sha256=state_digest(model.state_dict()),
                            info={"recipe": info["recipe"], "test_accuracy": info["test"].get("accuracy")},
                            device=device, batch_size=batch_size, progress=progress)
