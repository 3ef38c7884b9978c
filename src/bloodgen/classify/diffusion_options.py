"""The diffusion classifier's options, kept free of torch so `--help` can show their defaults instantly."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bloodgen.errors import UserError

WEIGHTINGS = ("uniform", "snr", "min-snr", "paper")


@dataclass(frozen=True)
class ClassifierOptions:
    """How the diffusion classifier spends its draws. Every field is recorded with the results."""

    weighting: str = "paper"
    prune: bool = True
    min_draws: int = 20
    max_draws: int = 2000
    p_value: float = 2e-3
    draws_per_round: int = 10
    batch_size: int = 512
    seed: int = 0
    # The error counted within a centred disc of this radius in pixels only (0: the whole image); the
    # paper's 20 of 45 px is about 12 of 28, leaving out the neighbouring cells at the corners.
    disc_radius: float = 0.0
    # Test-time augmentation: each draw sees the image under one of the 8 flips and quarter turns, the
    # same one for every class of the draw, so the errors stay paired.
    tta: bool = False

    def check(self) -> "ClassifierOptions":
        if self.weighting not in WEIGHTINGS:
            raise UserError(f"unknown weighting {self.weighting!r}: choose one of {', '.join(WEIGHTINGS)}")
        if self.min_draws < 2:
            raise UserError(f"--min-draws must be >= 2 (the t-test needs pairs), got {self.min_draws}")
        if self.max_draws < self.min_draws:
            raise UserError(f"--max-draws ({self.max_draws}) must be >= --min-draws ({self.min_draws})")
        if not 0 < self.p_value < 1:
            raise UserError(f"--p-value must be in (0, 1), got {self.p_value}")
        if self.draws_per_round < 1:
            raise UserError(f"--draws-per-round must be >= 1, got {self.draws_per_round}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.disc_radius < 0:
            raise UserError(f"--disc-radius must be >= 0 (0: the whole image), got {self.disc_radius}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)
