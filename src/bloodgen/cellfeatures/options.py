"""The choices and options of `bloodgen features`, importable without torch (the commands' --help reads them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bloodgen.errors import UserError

INPUTS = ("inception", "pixels")  # h: frozen Inception pool3 features, or the pixels
VIEWS = ("whole", "cell")  # the whole image, or the segmented cell alone
IMAGE_LOSSES = ("ssim", "mse")
ALIGNMENTS = ("none", "mmd", "normal", "adversarial")
ORACLE = "resnet18"  # a ResNet-18 on the images, trained in each domain: the cross-domain table's oracle
METHODS = ("raw", "ae", "normal", "adversarial", "mmd", ORACLE)  # the study's feature spaces, then the oracle
BOTTLENECKS = (5, 10, 20, 50, 100, 200, 500, 1000)  # the bottleneck study's range (Table 3.1)


@dataclass(frozen=True)
class AEOptions:
    """The autoencoder's training options. `batch_size` images a step, shared evenly by the source and
    target domains (the cost of a step does not grow with the number of domains); the defaults are sized
    for 2 CPU cores (about 1 s a step on Inception features). `beta` weighs the domain loss."""

    bottleneck: int = 100
    image_loss: str = "ssim"
    alignment: str = "none"
    beta: float = 1.0
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    save_every: int = 250
    log_every: int = 50

    def check(self, has_target: bool) -> AEOptions:
        if self.image_loss not in IMAGE_LOSSES or self.alignment not in ALIGNMENTS:
            raise UserError(f"unknown image loss {self.image_loss!r} or alignment {self.alignment!r}: choose from "
                            f"{', '.join(IMAGE_LOSSES)} and {', '.join(ALIGNMENTS)}")
        if min(self.bottleneck, self.steps, self.batch_size, self.save_every, self.log_every) < 1:
            raise UserError("--bottleneck, --steps, --batch-size and the save/log intervals must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0 and math.isfinite(self.beta) and self.beta >= 0):
            raise UserError(f"--lr must be positive and --beta non-negative, got {self.lr} and {self.beta}")
        if self.save_every % self.log_every:  # a checkpoint must fall where the running log means restart
            raise UserError(f"save_every ({self.save_every}) must be a multiple of log_every ({self.log_every})")
        if self.alignment != "none" and not has_target:
            raise UserError(f"--alignment {self.alignment} needs a target domain: pass --target FILE [FILE ...]")
        return self
