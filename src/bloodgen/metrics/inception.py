"""The FID feature network: pytorch-fid's InceptionV3, pool3 (2048-d), with a fast inference path.

Why not `pytorch_fid.inception.InceptionV3` as it is: it only loads weights by downloading them from a
fixed URL (no path can be given, so offline machines cannot point it at a copy), and it runs the
network as trained, with separate batch-norm layers in NCHW layout, which on CPU is about half the speed
of the same arithmetic with batch norm folded into the convolutions and channels-last tensors.
The architecture itself is still pytorch-fid's own code (built below with its download swapped for our
state dict), so only the execution differs and the features stay within 1e-4 of the library's.

Input contract: float RGB in [0, 1] at the native 28x28, resized inside the network to 299x299 with
bilinear interpolation (align_corners=False), exactly what pytorch-fid does to PNG files it reads.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_fid import inception as pfi
from torch import nn

from bloodgen import checks
from bloodgen.errors import UserError
from bloodgen.metrics.features import FeatureExtractor
from bloodgen.provenance import file_digests, portable_path

WEIGHTS_ENV = "BLOODGEN_INCEPTION_WEIGHTS"
WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILENAME}"
_REDOWNLOAD = f"download {WEIGHTS_FILENAME} again from {WEIGHTS_URL}"
FEATURE_DIM = 2048
INPUT_SIZE = 299
# Identifies the network and its preprocessing; part of every feature-cache key, so a change to either
# (another resize, another layer) must change this string.
NAME = "pytorch-fid-inception-v3-pool3-bilinear299-v1"


def hub_checkpoint_path() -> Path:
    """Where pytorch-fid's own download puts the file (torch hub cache, honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def resolve_weights(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Find the weights: `path`, then $BLOODGEN_INCEPTION_WEIGHTS, then the torch hub cache, then download.

    An explicit location that holds no file is an error rather than a fall-through, so a typo never
    silently evaluates with another file.
    """
    if path is not None:
        return _explicit(Path(path), "--inception-weights")
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return _explicit(Path(env), f"${WEIGHTS_ENV}")
    hub = hub_checkpoint_path()
    if hub.is_file():
        return hub
    looked = ["--inception-weights (not given)", f"${WEIGHTS_ENV} (not set)", f"{hub} (absent)"]
    if download:
        reason = _download(hub)
        if hub.is_file():
            return hub
        looked.append(f"download from {WEIGHTS_URL} ({reason})")
    raise UserError(
        f"InceptionV3 FID weights {WEIGHTS_FILENAME} not found; looked at: {'; '.join(looked)}. "
        f"Download the file from {WEIGHTS_URL} and pass --inception-weights PATH or set {WEIGHTS_ENV}=PATH."
    )


def _explicit(path: Path, source: str) -> Path:
    path = path.expanduser()
    if path.is_dir():
        path = path / WEIGHTS_FILENAME
    if not path.is_file():
        raise UserError(f"InceptionV3 FID weights not found at {path} (from {source}); give the path of "
                        f"{WEIGHTS_FILENAME} (or a copy of it), or download it from {WEIGHTS_URL}")
    return path


def _download(dst: Path) -> str:
    """pytorch-fid's download (same URL, same destination); returns why it failed, or 'ok'."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(dst), progress=True)
    except Exception as err:  # URLError, HTTPError, OSError: all mean "not available here"
        return f"failed: {type(err).__name__}: {err}"
    return "ok"


@functools.lru_cache(maxsize=4)
def _sha256(path_str: str, mtime_ns: int, size: int) -> str:
    return file_digests(path_str, ("sha256",))["sha256"]


def weights_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = checks.torch_file(path, "InceptionV3 weights file", _REDOWNLOAD)
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict of pytorch-fid's InceptionV3")
    return state


@contextlib.contextmanager
def _hub_cache_holding(state: dict[str, torch.Tensor]) -> Iterator[None]:
    """A temporary torch hub folder whose checkpoint cache holds `state` under the file name pytorch-fid
    asks for: torch's own offline route (`load_state_dict_from_url` loads a cached file and downloads
    nothing), which lets the library build its network from weights it cannot be given a path to."""
    # torch.hub keeps a folder given by set_dir in `_hub_dir` (None: follow $TORCH_HOME); putting the old value
    # back, rather than set_dir(get_dir()), leaves later lookups following $TORCH_HOME as before.
    previous = torch.hub._hub_dir
    with tempfile.TemporaryDirectory(prefix="bloodgen-hub-") as hub:
        (Path(hub) / "checkpoints").mkdir()
        torch.save(state, Path(hub) / "checkpoints" / WEIGHTS_FILENAME)
        torch.hub.set_dir(hub)
        try:
            yield
        finally:
            torch.hub._hub_dir = previous


def _pytorch_fid_network(state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """pytorch-fid's `InceptionV3([pool3])`, built by the library with `state` in place of its download."""
    if pfi.FID_WEIGHTS_URL.rsplit("/", 1)[-1] != WEIGHTS_FILENAME:
        raise UserError(f"this pytorch-fid asks for {pfi.FID_WEIGHTS_URL}, not {WEIGHTS_FILENAME}: "
                        f"install pytorch-fid 0.3.x")
    with _hub_cache_holding(state):
        try:
            network = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]])
        except RuntimeError as err:  # load_state_dict: missing/unexpected keys or wrong shapes
            first = str(err).splitlines()[0]
            raise UserError(f"{path} does not hold pytorch-fid's InceptionV3 weights ({first}); "
                            f"use {WEIGHTS_FILENAME} from {WEIGHTS_URL}") from None
    return network.eval()


class _ConvReLU(nn.Module):
    """A BasicConv2d (conv, batch norm, ReLU) with the batch norm folded into the convolution."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x), inplace=True)


def _fold_batch_norms(module: nn.Module) -> None:
    """Replace every BasicConv2d by its convolution with the batch norm folded in (in place, no copies)."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights
    from torchvision.models.inception import BasicConv2d

    for name, child in module.named_children():
        if isinstance(child, BasicConv2d):
            conv, bn = child.conv, child.bn
            conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                          bn.eps, bn.weight, bn.bias)
            setattr(module, name, _ConvReLU(conv))
        else:
            _fold_batch_norms(child)


def _fold_input_scaling(stem: _ConvReLU) -> None:
    """Make the first convolution take [0, 1] input instead of pytorch-fid's 2x - 1.

    conv(2x - 1) = conv'(x) with W' = 2W and b' = b - sum(W); exact because this convolution has no
    zero padding (every tap sees a real pixel, so the constant -1 is always there).
    """
    conv = stem.conv
    with torch.no_grad():
        conv.bias -= conv.weight.sum(dim=(1, 2, 3))
        conv.weight *= 2


class InceptionV3Features(nn.Module):
    """pool3 features (N, 2048) of images given as float (N, 3, 28, 28) in [0, 1]; see the module doc."""

    def __init__(self, state: dict[str, torch.Tensor], path: Path):
        super().__init__()
        blocks = _pytorch_fid_network(state, path).blocks
        _fold_batch_norms(blocks)
        _fold_input_scaling(blocks[0][0])
        # The last block ends with pytorch-fid's AdaptiveAvgPool2d(1): pool3 itself.
        self.blocks = blocks.to(memory_format=torch.channels_last).eval().requires_grad_(False)
        self.weights_path = path
        # Loading succeeded, so the file has pytorch-fid's (1008, 2048) logits layer; it may be zeroed.
        self.fc_weight = state["fc.weight"].detach().cpu().numpy().astype(np.float64)

    @property
    def has_logits(self) -> bool:
        """False for a file whose 1008-way logits layer is zeroed (its pool3 features are still exact)."""
        return bool(np.any(self.fc_weight))

    def logits_weight(self) -> np.ndarray:
        """The (1008, 2048) logits matrix, for Inception Score; refuses when the file has no real one."""
        if not self.has_logits:
            raise UserError(
                f"Inception Score needs the network's logits layer, but {self.weights_path} has a zeroed "
                f"fc layer: its pool3 features (FID, KID, precision/recall) are exact, the class logits are not. "
                f"Use the original {WEIGHTS_FILENAME} from {WEIGHTS_URL} for Inception Score")
        return self.fc_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(INPUT_SIZE, INPUT_SIZE),
                          mode="bilinear", align_corners=False)
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)


def load_network(path: Path) -> InceptionV3Features:
    """Read and validate the weights file at `path` and build the network on the CPU, in eval mode."""
    return InceptionV3Features(_read_state_dict(path), path)


def inception_extractor(weights: str | os.PathLike | None = None, device=None, batch_size: int | None = None,
                        progress: bool = True, download: bool = True) -> FeatureExtractor:
    """The FID feature extractor; the weights are located (see `resolve_weights`) and hashed now, loaded on use."""
    path = resolve_weights(weights, download=download)
    checks.torch_header(path, "InceptionV3 weights file", _REDOWNLOAD)
    sha256 = weights_sha256(path)
    return FeatureExtractor(functools.partial(load_network, path), name=NAME, dim=FEATURE_DIM,
                            weights_sha256=sha256, info={"weights_path": portable_path(str(path)), "weights_url": WEIGHTS_URL},
                            device=device, batch_size=batch_size, progress=progress)
