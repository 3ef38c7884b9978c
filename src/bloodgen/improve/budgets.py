"""What an IMPROVE comparison spends, per preset: the diffusion preset of both arms, the prototype and
classifier settings, and the sample and protocol sizes. Apart from the comparison's machinery, so the
commands and the study read the presets (their help, their checks) without importing a network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bloodgen.classify.prototype_options import PrototypeOptions
from bloodgen.errors import UserError

FULL, LOW = "full", "low"
REGIMES = {FULL: None, LOW: 100}  # images per class kept in train and val
REGIME_LABELS = {FULL: "full data", LOW: "100 images per class"}


@dataclass(frozen=True)
class Budget:
    """What one comparison spends; all of it is recorded in results.json."""

    diffusion_preset: str  # the proto-ddpm preset both arms train with
    diffusion_overrides: dict = field(default_factory=dict)  # on top of it, identical for both arms
    prototypes: PrototypeOptions = PrototypeOptions()
    prototype_max_per_class: int | None = None  # train images whose encoder features are computed
    classifier: str = "full"  # RECIPES name of the reference classifier: fidelity judge and default encoder
    classifier_epochs: int | None = None  # overrides that recipe's epochs (a smaller CPU budget)
    n_samples: int = 10_000  # generated images per run (FID draws and the TSTR training set)
    fid_n: int = 10_000
    fid_seeds: int = 3
    tstr_epochs: int = 30  # the TSTR classifiers: the reference classifier's recipe with this many epochs
    eval_per_class: int | None = None  # cap on val/test images per class for TSTR (None: whole splits)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "Budget":
        return cls(**{**record, "prototypes": PrototypeOptions(**record["prototypes"])})


PRESETS = {
    # A CPU budget: minutes per diffusion run, a few hundred images, a weak classifier. It shows the
    # pipeline and the direction of effects at best; FID at N=256 is strongly biased upwards.
    "quick": Budget(diffusion_preset="quick", diffusion_overrides={"sample_steps": 10},
                    prototypes=PrototypeOptions(epochs=60), prototype_max_per_class=300,
                    classifier="cpu", n_samples=256, fid_n=256, fid_seeds=1,
                    tstr_epochs=20, eval_per_class=50),
    # The record diffusion recipe on a CPU, in the paper's setting (100 generated images per class, TSTR on
    # 50 real test images per class); FID at N = 800 says little, the TSTR and fidelity rows more.
    "record": Budget(diffusion_preset="record", prototypes=PrototypeOptions(epochs=60), prototype_max_per_class=300,
                     classifier="cpu", n_samples=800, fid_n=800, fid_seeds=1, tstr_epochs=6, eval_per_class=50),
    # A GPU budget: the full presets and protocol-sized sample sets.
    "full": Budget(diffusion_preset="full", n_samples=12_000, fid_n=10_000, fid_seeds=3),
}


def budget_for(preset: str, steps: int | None = None, classifier_epochs: int | None = None) -> Budget:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    budget = PRESETS[preset]
    if classifier_epochs is not None:
        if classifier_epochs < 1:
            raise UserError(f"--classifier-epochs must be >= 1, got {classifier_epochs}")
        budget = replace(budget, classifier_epochs=classifier_epochs)
    if steps is not None:
        if steps < 1:
            raise UserError(f"--steps must be >= 1, got {steps}")
        budget = replace(budget, diffusion_overrides={**budget.diffusion_overrides, "steps": steps})
    return budget
