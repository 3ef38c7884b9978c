"""The evaluation JSON as typed records: a figure over the protocol's seeds, the same per class, the
real-vs-real floor, and every figure of one comparison. Field names are the JSON keys, so writers and
readers (reports, the study, the Python API) take attributes instead of repeating key strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Figure:
    """One metric over the protocol's seeds: mean, sample std (None for one seed) and each seed's value."""

    mean: float | None
    std: float | None
    per_seed: tuple[Any, ...]

    @classmethod
    def of(cls, values: Sequence) -> Figure:
        """Mean and sample std (ddof=1) of the seeds' values; None where any seed has no value."""
        if any(v is None for v in values):
            return cls(None, None, tuple(values))
        std = float(np.std(values, ddof=1)) if len(values) > 1 else None
        return cls(float(np.mean(values)), std, tuple(values))

    @staticmethod
    def is_block(block: Any) -> bool:
        return isinstance(block, Mapping) and "mean" in block and "std" in block

    @classmethod
    def from_json(cls, block: Mapping) -> Figure:
        """A protocol figure, or a study aggregate over training runs (which has no per-seed values)."""
        return cls(block["mean"], block["std"], tuple(block.get("per_seed", ())))

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std, "per_seed": list(self.per_seed)}

    def __str__(self) -> str:
        if self.mean is None:
            return "n/a"
        return f"{self.mean:.4g}" + ("" if self.std is None else f" ± {self.std:.2g}")


@dataclass(frozen=True)
class ClassFigures:
    """A per-class metric over seeds: class names, the mean and std of each class, and each seed's list."""

    classes: tuple[str, ...]
    mean: tuple[float | None, ...]
    std: tuple[float | None, ...]
    per_seed: tuple[list, ...]

    @classmethod
    def of(cls, classes: Sequence[str], per_seed: Sequence[Sequence]) -> ClassFigures:
        by_class = [Figure.of([values[c] for values in per_seed]) for c in range(len(classes))]
        return cls(tuple(classes), tuple(f.mean for f in by_class), tuple(f.std for f in by_class),
                   tuple(list(v) for v in per_seed))

    @classmethod
    def from_json(cls, block: Mapping) -> ClassFigures:
        return cls(tuple(block["classes"]), tuple(block["mean"]), tuple(block["std"]),
                   tuple(list(v) for v in block["per_seed"]))

    def to_json(self) -> dict:
        return {"classes": list(self.classes), "mean": list(self.mean), "std": list(self.std),
                "per_seed": [list(v) for v in self.per_seed]}

    def figure(self, c: int) -> Figure:
        return Figure(self.mean[c], self.std[c], tuple(v[c] for v in self.per_seed))

    def by_name(self) -> dict[str, Figure]:
        return {name: self.figure(c) for c, name in enumerate(self.classes)}


@dataclass(frozen=True)
class Floor:
    """The real-vs-real floor at the protocol's N and seeds: each form's figures by key, as in the JSON
    (`same_pool` adds its N; `disjoint` its images per side and, when capped, why)."""

    key: ClassVar[str] = "floor"

    note: str
    same_pool: dict
    disjoint: dict

    @classmethod
    def of(cls, record: Mapping) -> Floor | None:
        """The floor of an evaluation record, None where it was not asked for."""
        block = record.get(cls.key)
        return cls(block["note"], block["same_pool"], block["disjoint"]) if block else None

    def to_json(self) -> dict:
        return {"note": self.note, "same_pool": self.same_pool, "disjoint": self.disjoint}

    @property
    def disjoint_n(self) -> int:
        return self.disjoint["n_per_side"]

    @property
    def cap_note(self) -> str | None:
        return self.disjoint.get("cap_note")


@dataclass(frozen=True)
class Scores:
    """The metrics of one comparison (samples vs real, or one form of the real-vs-real floor); None where
    the metric was not selected. `other` holds metrics without a field here, by their JSON key."""

    fid: Figure | None = None
    kid: Figure | None = None
    precision: Figure | None = None
    recall: Figure | None = None
    density: Figure | None = None
    coverage: Figure | None = None
    fid_class_averaged: Figure | None = None
    fid_infinity: Figure | None = None
    alpha_precision: Figure | None = None
    beta_recall: Figure | None = None
    authenticity: Figure | None = None
    fd_classifier: Figure | None = None
    kid_classifier: Figure | None = None
    fid_per_class: dict[str, Figure] | None = None
    other: dict[str, Figure] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping) -> Scores:
        named = {f.name for f in fields(cls)} - {"fid_per_class", "other"}
        values: dict[str, Any] = {"other": {}}
        for key, block in record.items():
            if not Figure.is_block(block):
                continue
            if "classes" in block:
                values["fid_per_class"] = ClassFigures.from_json(block).by_name()
            elif key in named:
                values[key] = Figure.from_json(block)
            else:
                values["other"][key] = Figure.from_json(block)
        return cls(**values)


def figure(block: Mapping, key: str) -> Figure | None:
    """The figure `key` of an evaluation block (a record, a floor form, a study aggregate); None if absent."""
    value = block.get(key)
    return Figure.from_json(value) if Figure.is_block(value) else None


@dataclass(frozen=True)
class SampleSpread:
    """Written when a fixed sample file is drawn from per seed: how far the seeds' draws overlap, and so what
    the ± over seeds measures."""

    key: ClassVar[str] = "spread"

    sample_draw_overlap: float
    note: str

    @classmethod
    def of(cls, overlap: float) -> SampleSpread:
        if overlap == 1.0:
            return cls(overlap, "std over seeds: the real draws' spread only (every seed scores the same generated "
                                "images)")
        return cls(overlap, f"std over seeds: real draws and sample draws sharing {overlap:.0%} of their images on "
                            f"average")

    def to_json(self) -> dict:
        return {"sample_draw_overlap": self.sample_draw_overlap, "note": self.note}
