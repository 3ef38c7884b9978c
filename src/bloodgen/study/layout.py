"""What a study folder holds: its sub-folders, and results.json as typed records (written by the pipeline,
read by the report and the publishing script; `from_json(to_json())` gives back the same JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bloodgen.metrics.records import figure
from bloodgen.metrics.registry import FID
from bloodgen.training.records import RunSummary

RUNS_DIR = "runs"
EVAL_DIR = "eval"
UTILITY_DIR = "utility"  # utility samples (not published) and the images the memorisation figure shows
RESULTS_FILE = "results.json"
# The figure a study adds to each run's evaluation record: seconds to sample 10,000 images.
SAMPLING_TIME_10K = "sampling_seconds_per_10k"


@dataclass
class RunResult:
    """One training seed of a family: its summary.json as it was when evaluated (kept as recorded, so the
    file re-reads byte for byte; `summary` types it), its evaluation record and its sample grid."""

    seed: int
    run_dir: str  # relative to the study folder
    train: dict[str, Any]
    eval: dict[str, Any]  # a metrics.protocol record
    grid: str  # relative to the study folder

    @property
    def summary(self) -> RunSummary:
        return RunSummary.from_dict(self.train)

    @property
    def fid(self) -> float:
        """The mean FID over the protocol's seeds (infinite where it is missing, so it never ranks first)."""
        value = figure(self.eval, FID.key)
        return value.mean if value is not None and value.mean is not None else float("inf")

    @property
    def sampling_seconds_10k(self) -> float | None:
        return self.eval.get(SAMPLING_TIME_10K)

    @classmethod
    def from_json(cls, record: dict) -> RunResult:
        return cls(**{f.name: record[f.name] for f in fields(cls)})

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FamilyResult:
    """A family's runs (one per training seed), their aggregate over seeds, the config they were trained
    with and, when the study ran them, the utility checks of its best run."""

    runs: list[RunResult]
    aggregate: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    utility: dict[str, Any] | None = None

    def best(self) -> RunResult:
        """The run with the lowest mean FID (the first run where FID is missing)."""
        return min(self.runs, key=lambda run: run.fid)

    @classmethod
    def from_json(cls, record: dict) -> FamilyResult:
        return cls([RunResult.from_json(r) for r in record["runs"]], record["aggregate"], record["config"],
                   record.get("utility"))

    def to_json(self) -> dict:
        out = {"runs": [r.to_json() for r in self.runs], "aggregate": self.aggregate, "config": self.config}
        if self.utility is not None:
            out["utility"] = self.utility
        return out


@dataclass
class StudyInfo:
    """What was run: the preset and its settings, the data, the feature network, the machine, the command."""

    preset: str
    settings: dict[str, Any]
    models: list[str]
    data: dict[str, Any]
    network: dict[str, Any]
    environment: dict[str, Any]
    command: str
    wall_seconds_this_invocation: float


@dataclass
class StudyResults:
    """results.json. `floor` is the floor stage's evaluation record (metrics.records.Floor reads it);
    `pending_units` is None in results written before unfinished studies were recorded."""

    study: StudyInfo
    floor: dict[str, Any]
    families: dict[str, FamilyResult]
    experiments: dict[str, Any] = field(default_factory=dict)
    pending_units: list[str] | None = None

    @property
    def protocol(self) -> dict[str, Any]:
        return self.floor["protocol"]

    @classmethod
    def from_json(cls, record: dict) -> StudyResults:
        return cls(StudyInfo(**record["study"]), record["floor"],
                   {name: FamilyResult.from_json(f) for name, f in record["families"].items()},
                   record.get("experiments") or {}, record.get("pending_units"))

    @classmethod
    def load(cls, folder: str | Path) -> StudyResults:
        return cls.from_json(json.loads((Path(folder) / RESULTS_FILE).read_text()))

    def to_json(self) -> dict:
        out = {"study": asdict(self.study), "floor": self.floor,
               "families": {name: f.to_json() for name, f in self.families.items()},
               "experiments": self.experiments}
        if self.pending_units is not None:
            out["pending_units"] = self.pending_units
        return out


def utility_samples_file(model: str, seed: int) -> str:
    """The utility checks' samples of a run, relative to the study folder (tens of MB: not published)."""
    return f"{UTILITY_DIR}/{model}-s{seed}-samples.npz"


def closest_samples_file(model: str, seed: int) -> str:
    """The few generated images the memorisation figure shows, relative to the study folder (published)."""
    return f"{UTILITY_DIR}/{model}-s{seed}-closest.npz"
