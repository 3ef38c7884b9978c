"""What a run folder records about itself, as typed records that read and write the same JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bloodgen.provenance import portable_path

CHECKPOINT_DIR = "checkpoints"  # the run folder's checkpoint folder

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
