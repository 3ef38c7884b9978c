"""What a run folder records about itself, as typed records that read and write the same JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from bloodgen.provenance import portable_path

CHECKPOINT_DIR = "checkpoints"  # the run folder's checkpoint folder
LOG_JSONL = "log.jsonl"

# Status values in summary.json and TrainResult.
COMPLETED, INTERRUPTED, TIME_LIMIT, DIVERGED, RUNNING = "completed", "interrupted", "time_limit", "diverged", "running"


@dataclass
class RunSummary:
    """summary.json: how a run ended. `run_dir` is kept as `portable_path` writes it (records are shared, a
    machine's folders mean nothing elsewhere); `checkpoint` and `export` are relative to the run folder."""

    status: str
    run_dir: str
    model: str
    preset: str
    seed: int
    step: int
    steps: int
    train_time_s: float
    steps_per_s: float | None
    parameters: dict[str, int]
    sampling_parameters: int
    device: str
    processes: int
    mixed_precision: str
    last_log: dict[str, Any] | None
    extras: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    export: str | None = None

    @classmethod
    def make(cls, run_dir: Path, checkpoint: Path | None, export: Path | None, **values) -> "RunSummary":
        def inside(path: Path | None) -> str | None:
            return None if path is None else str(Path(path).relative_to(run_dir))

        return cls(run_dir=portable_path(str(run_dir)), checkpoint=inside(checkpoint), export=inside(export),
                   **values)

    @classmethod
    def from_dict(cls, record: dict) -> "RunSummary":
        """Also reads summaries that kept other forms of the paths (absolute, or relative to another folder):
        only the file names inside the run folder count."""
        values = {f.name: record[f.name] for f in fields(cls) if f.name in record}
        for name, folder in (("checkpoint", CHECKPOINT_DIR), ("export", None)):
            if values.get(name):
                file = Path(values[name]).name
                values[name] = str(Path(folder, file)) if folder else file
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def export_in(self, run_dir: Path) -> Path | None:
        """The run's EMA weights, found in its folder wherever that folder now lives."""
        return None if self.export is None else Path(run_dir) / Path(self.export).name


@dataclass(frozen=True)
class LogRow:
    """One line of log.jsonl: where training stood, then the family's logged means (losses, gradient
    norms) by name, flat in the same JSON object."""

    BOOKKEEPING: ClassVar[tuple[str, ...]] = ("step", "epoch", "train_time_s", "lr", "steps_per_s")

    step: int
    epoch: int
    train_time_s: float
    lr: float
    steps_per_s: float
    means: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> LogRow:
        return cls(**{k: record[k] for k in cls.BOOKKEEPING},
                   means={k: v for k, v in record.items() if k not in cls.BOOKKEEPING})

    def to_json(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.BOOKKEEPING}, **self.means}

    def losses(self) -> dict[str, float]:
        """The means that are losses (gradient norms left out)."""
        return {k: v for k, v in self.means.items() if not k.startswith("grad_norm")}


def read_log(run_dir: str | Path) -> list[LogRow]:
    """A run folder's log.jsonl, [] where it has none."""
    path = Path(run_dir) / LOG_JSONL
    if not path.is_file():
        return []
    return [LogRow.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
