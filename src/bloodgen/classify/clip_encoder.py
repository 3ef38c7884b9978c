"""A CLIP image tower (open-clip-torch) as the frozen prototype encoder: IMPROVE's choice of f.

The encoder spec is `clip[:ARCH[:WEIGHTS]]`: ARCH an open_clip architecture (default ViT-L-14, whose 768-d
image features IMPROVE uses) and WEIGHTS an open_clip checkpoint file or, where the internet is reachable, one
of open_clip's pretrained tags (e.g. `openai`, downloaded and cached by open_clip). Without WEIGHTS the file
named by $BLOODGEN_CLIP_WEIGHTS is used, so offline machines never try a download. The `clip` prefix is
reserved: a plug-in encoder cannot be a module named `clip`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from bloodgen.errors import UserError
from bloodgen.provenance import file_sha256

CLIP_ENCODER = "clip"
DEFAULT_ARCH = "ViT-L-14"
WEIGHTS_ENV = "BLOODGEN_CLIP_WEIGHTS"


def is_clip_spec(spec: str) -> bool:
    return spec == CLIP_ENCODER or spec.startswith(CLIP_ENCODER + ":")


class ClipImageTower(nn.Module):
    """Images in [-1, 1] (N, 3, 28, 28) -> CLIP image features (N, D): resized to the tower's input size with
    its preprocessing's interpolation and normalised with its mean and std, as open_clip's transform does to a
    PIL image (done on tensors here, so a batch never leaves torch)."""

    def __init__(self, model: nn.Module, size: tuple[int, int], mean, std, interpolation: str):
        super().__init__()
        self.model, self.size, self.interpolation = model, size, interpolation
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate((images.to(self.mean.device) + 1) / 2, size=self.size, mode=self.interpolation,
                          align_corners=False)
        return self.model.encode_image((x.clamp(0, 1) - self.mean) / self.std)


def parse_clip_spec(spec: str) -> tuple[str, str]:
    """(architecture, weights) of a `clip[:ARCH[:WEIGHTS]]` spec; WEIGHTS defaults to $BLOODGEN_CLIP_WEIGHTS."""
    _, _, rest = spec.partition(":")
    arch, _, weights = rest.partition(":")
    weights = weights or os.environ.get(WEIGHTS_ENV, "")
    if not weights:
        raise UserError(f"--encoder {spec} needs CLIP weights: write clip:{arch or DEFAULT_ARCH}:FILE (an open_clip "
                        f"checkpoint) or set ${WEIGHTS_ENV}")
    return arch or DEFAULT_ARCH, weights


def _open_clip():
    try:
        import open_clip  # optional: the 'clip' extra
    except ImportError:
        raise UserError("--encoder clip needs open-clip-torch: pip install 'bloodgen[clip]'") from None
    return open_clip


def _is_tag(arch: str, weights: str) -> bool:
    return weights in _open_clip().list_pretrained_tags_by_model(arch)


def recorded_encoder_spec(spec: str) -> str:
    """An encoder spec as records keep it: any other encoder's unchanged; a CLIP tag as such, a CLIP weights
    file by its name and the start of its sha256 (no machine's path, and another file of the same name is not
    mistaken for it)."""
    if not is_clip_spec(spec):
        return spec
    arch, weights = parse_clip_spec(spec)
    if _is_tag(arch, weights) or not Path(weights).is_file():
        return f"{CLIP_ENCODER}:{arch}:{weights}"
    return f"{CLIP_ENCODER}:{arch}:{Path(weights).name}#{file_sha256(weights)[:16]}"


def clip_encoder(spec: str) -> tuple[ClipImageTower, dict]:
    """The frozen image tower of a `clip[:ARCH[:WEIGHTS]]` spec and what it was trained on (for the record)."""
    open_clip = _open_clip()
    arch, weights = parse_clip_spec(spec)
    if arch not in open_clip.list_models():
        raise UserError(f"unknown CLIP architecture {arch!r}: choose one of open_clip.list_models(), e.g. "
                        f"{DEFAULT_ARCH}")
    is_file = not _is_tag(arch, weights)
    if is_file and not Path(weights).is_file():
        raise UserError(f"CLIP weights file {weights} not found: give an open_clip checkpoint of {arch}")
    try:
        model = open_clip.create_model(arch, pretrained=weights, device="cpu")
    except Exception as err:  # a tag that needs a download offline, or a checkpoint of another architecture
        raise UserError(f"cannot load CLIP {arch} weights {weights!r}: {type(err).__name__}: {err}") from None
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"] if isinstance(cfg["size"], (tuple, list)) else (cfg["size"], cfg["size"])
    tower = ClipImageTower(model, tuple(size), cfg["mean"], cfg["std"], cfg.get("interpolation", "bicubic"))
    trained_on = {"images": f"CLIP {arch} image-text pre-training: no BloodMNIST image or label",
                  "weights": Path(weights).name if is_file else weights,
                  "weights_sha256": file_sha256(weights) if is_file else None}
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a ViT-L at 224 px is slow on a CPU
    return tower.to(device).eval().requires_grad_(False), trained_on
