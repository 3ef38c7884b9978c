"""Checkpoints (everything needed to continue a run bit-for-bit) and exports (EMA weights for sampling).

A checkpoint is one `torch.save` file written atomically: the run spec (model, preset, seed, config),
the step, every network, the EMA weights, optimisers, LR schedules, the fp16 grad scaler, the RNG
states of every process, the training class counts (for sampling with the class prior) and the data
hash. It holds only tensors and plain containers, so it loads with `weights_only=True`: opening a
downloaded checkpoint runs no code.

An export is the sampling network's EMA weights as `model.safetensors` beside a `model.json` holding
the same spec, class counts and provenance: small, safe, and all `bloodgen sample` needs.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bloodgen import checks
from bloodgen.errors import UserError
from bloodgen.models.config import upgrade
from bloodgen.provenance import atomic_path, write_json
from bloodgen.training.records import CHECKPOINT_DIR

FORMAT = "bloodgen-checkpoint"
EXPORT_FORMAT = "bloodgen-export"
VERSION = 1

FORMAT_KEY, VERSION_KEY = "format", "version"


@dataclass
class RunSpec:
    """What a run is, independent of how far it got: config.json, and part of every checkpoint and export."""

    model: str
    preset: str
    seed: int
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "RunSpec":
        """A saved spec; its config gains the keys added since it was saved (`models.config.upgrade`)."""
        model = record["model"]
        return cls(model, record["preset"], int(record["seed"]), upgrade(model, record["config"]))


@dataclass
class Checkpoint:
    """Everything needed to continue a run bit for bit. Written with `torch.save` as a dict of tensors and
    plain containers (the field names as keys), so it loads with `weights_only=True`."""

    spec: RunSpec
    step: int
    networks: dict[str, Any]
    ema: dict[str, Any]
    optimizers: dict[str, Any]
    lr_schedulers: dict[str, Any]
    grad_scaler: dict[str, Any] | None
    rng: list[dict[str, Any]]  # one state per process, by rank
    world_size: int
    class_counts: list[int]
    data: dict[str, Any]  # the data file's provenance
    train_time_s: float
    rank_digests: list[str]  # per rank: a digest of its network weights (DDP replicas must agree)
    parameters: dict[str, int]
    log_accumulator: dict[str, Any]  # losses summed since the last log line, and over how many steps

    def payload(self) -> dict[str, Any]:
        fields_ = {f.name: getattr(self, f.name) for f in fields(self)}  # no deep copy of the tensors
        return {FORMAT_KEY: FORMAT, VERSION_KEY: VERSION, **fields_, "spec": self.spec.to_dict()}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Checkpoint":
        values = {f.name: payload.get(f.name) for f in fields(cls)}
        return cls(**{**values, "spec": RunSpec.from_dict(payload["spec"])})


@dataclass
class ExportMeta:
    """model.json beside an export's weights: the run spec, the step, the training class counts (sampling
    with the class prior) and provenance."""

    spec: RunSpec
    step: int
    class_counts: list[int]
    data: dict[str, Any]
    parameters: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {FORMAT_KEY: EXPORT_FORMAT, VERSION_KEY: VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "ExportMeta":
        return cls(RunSpec.from_dict(record["spec"]), int(record["step"]), list(record["class_counts"]),
                   record.get("data") or {}, record.get("parameters") or {})


CHECKPOINT_NAME = "checkpoint.pt"
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_META = "model.json"


def rng_state() -> dict[str, Any]:
    """Every RNG this process may draw from, as tensors and plain containers."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "has_gauss": n["has_gauss"], "gauss": n["gauss"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]}})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    with atomic_path(path) as tmp:
        torch.save(checkpoint.payload(), tmp)
    return path


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder -> its latest checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / CHECKPOINT_DIR / CHECKPOINT_NAME
        if not candidate.is_file():
            raise UserError(f"no checkpoint in run folder {path} (expected {candidate})")
        return candidate
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = find_checkpoint(path)
    ckpt = checks.torch_file(path, "bloodgen checkpoint", "give a run folder, another checkpoint .pt or a "
                                                           "model.safetensors export")
    if not isinstance(ckpt, dict) or ckpt.get(FORMAT_KEY) != FORMAT:
        raise UserError(f"{path} is not a bloodgen checkpoint (no '{FORMAT_KEY}: {FORMAT}' entry)")
    if ckpt.get(VERSION_KEY) != VERSION:
        raise UserError(f"{path} has checkpoint format version {ckpt.get(VERSION_KEY)}; this bloodgen reads {VERSION}")
    return Checkpoint.from_payload(ckpt)


def export_model(run_dir: Path, state: dict[str, torch.Tensor], meta: ExportMeta) -> Path:
    """Write `model.safetensors` (+ `model.json`); returns the weights' path."""
    weights = run_dir / EXPORT_WEIGHTS
    with atomic_path(weights) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp),
                  metadata={FORMAT_KEY: EXPORT_FORMAT})
    write_json(run_dir / EXPORT_META, meta.to_dict())
    return weights


def load_export(path: Path) -> tuple[ExportMeta, dict[str, torch.Tensor]]:
    """(meta, state) from `X.safetensors` + `X.json` (or either path of the pair)."""
    weights, meta_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for p in (weights, meta_path):
        if not p.is_file():
            raise UserError(f"exported model incomplete: {p} not found (an export is a .safetensors file "
                            f"and a .json file of the same name)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{meta_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get(FORMAT_KEY) != EXPORT_FORMAT:
        raise UserError(f"{meta_path} is not a bloodgen model description (no '{FORMAT_KEY}: {EXPORT_FORMAT}')")
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for truncated or foreign files
        raise UserError(f"{weights} is not a readable safetensors file ({type(err).__name__}: "
                        f"{_first_line(err)})") from None
    return ExportMeta.from_dict(meta), state


def _first_line(err: Exception) -> str:
    return next((ln.strip() for ln in str(err).splitlines() if ln.strip()), "no details")
