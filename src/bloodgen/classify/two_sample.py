"""How real do the samples look to a network? The classifier two-sample test (C2ST, Lopez-Paz & Oquab 2017),
in place of the CytoDiffusion paper's expert Turing test (the human version is `bloodgen.classify.quiz`).

A ResNet-18 (the reference recipe with two outputs) learns to tell N generated images from N real ones on
60 % of both, picks its epoch on 20 % and is scored on the held-out 20 %: accuracy with its exact
(Clopper-Pearson) 95 % interval and the two-sided binomial p-value against chance, sensitivity (generated
called generated) and specificity (real called real). 50 % means the network cannot tell them apart; an
interval above 50 % says it can, however small the gap. Each side is cut alike, so the held-out set is half
generated. The callers draw both sides class-balanced when the generated images are labelled, and the real
side at random otherwise (an unconditional model's class mix is the data's), so the test compares cells,
not class mixes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy.stats import binomtest

from bloodgen.classify.recipe import ClassifierRecipe
from bloodgen.classify.reference import predict_proba, resnet18_28, train_classifier
from bloodgen.errors import UserError

GENERATED, REAL = 1, 0
FRACTIONS = (0.6, 0.2)  # train, validation; the rest is held out


@dataclass(frozen=True)
class TwoSampleResult:
    n_per_side: int
    n_test: int
    accuracy: float
    ci95: tuple[float, float]
    p_value: float  # two-sided binomial test against 0.5
    sensitivity: float  # generated images called generated
    specificity: float  # real images called real
    train_seconds: float

    def to_json(self) -> dict:
        return {**asdict(self), "ci95": list(self.ci95)}

    @classmethod
    def from_json(cls, record: dict) -> "TwoSampleResult":
        return cls(**{**record, "ci95": tuple(record["ci95"])})


def _splits(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and held-out indices into [generated (n), real (n)], cut alike on each side, so the
    held-out set is half generated and a constant answer scores exactly 50 %."""
    a, b = int(FRACTIONS[0] * n), int((FRACTIONS[0] + FRACTIONS[1]) * n)
    sides = [rng.permutation(n) + offset for offset in (0, n)]
    return tuple(np.concatenate([side[lo:hi] for side in sides]) for lo, hi in ((0, a), (a, b), (b, n)))


def classifier_two_sample_test(generated: np.ndarray, real: np.ndarray, recipe: ClassifierRecipe,
                               seed: int = 0, progress: bool = True) -> TwoSampleResult:
    """The C2ST on equally many uint8 (N, 28, 28, 3) generated and real images."""
    n = min(len(generated), len(real))
    if n < 10:
        raise UserError(f"the two-sample test needs at least 10 images per side, got {len(generated)} generated "
                        f"and {len(real)} real")
    images = np.concatenate([generated[:n], real[:n]])
    labels = np.concatenate([np.full(n, GENERATED), np.full(n, REAL)]).astype(np.int64)
    train, val, test = _splits(n, np.random.default_rng(seed))
    model, info = train_classifier((images[train], labels[train]), (images[val], labels[val]),
                                   replace(recipe, seed=seed), model=resnet18_28(n_classes=2, width=recipe.width),
                                   progress=progress, desc="real or generated")
    called = predict_proba(model, images[test]).argmax(1)
    truth = labels[test]
    correct = int((called == truth).sum())
    interval = binomtest(correct, len(test), 0.5).proportion_ci(0.95, method="exact")
    return TwoSampleResult(
        n_per_side=n, n_test=int(len(test)), accuracy=correct / len(test),
        ci95=(float(interval.low), float(interval.high)), p_value=float(binomtest(correct, len(test), 0.5).pvalue),
        sensitivity=float((called[truth == GENERATED] == GENERATED).mean()),
        specificity=float((called[truth == REAL] == REAL).mean()), train_seconds=round(info["train_seconds"], 1))


def balanced_draw(images: np.ndarray, labels: np.ndarray | None, n: int, rng: np.random.Generator,
                  n_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """n images, as equally many per class as the classes allow (any n images when unlabelled)."""
    if labels is None:
        pick = rng.choice(len(images), size=min(n, len(images)), replace=False)
        return images[pick], None
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in range(n_classes)]
    picked: list[int] = []
    while len(picked) < n and any(len(p) for p in pools):
        for c, pool in enumerate(pools):
            if len(pool) and len(picked) < n:
                picked.append(int(pool[0]))
                pools[c] = pool[1:]
    pick = rng.permutation(np.asarray(picked, dtype=np.int64))
    return images[pick], labels[pick]
