"""Turning images into features: batched extraction on any device, and a disk cache of real-image features.

The cache holds the features of the dataset's images by their index in the `all` split (train+val+test),
keyed by the data file's and the weights' SHA-256 and the network's name. An evaluation asks for the
indices it draws; only those not yet cached are computed, so the full dataset is computed once over all
runs and a small evaluation never pays for the whole dataset. A cache file whose key does not match, or
that cannot be read, is ignored (with a warning) and rebuilt.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
from tqdm import tqdm

from bloodgen import checks
from bloodgen.data.bloodmnist import ALL
from bloodgen.errors import UserError
from bloodgen.provenance import atomic_path

if TYPE_CHECKING:
    import torch

CACHE_ENV = "BLOODGEN_CACHE"
CACHE_FORMAT = 1
CACHE_WRITE_EVERY = 2048  # images
DEFAULT_BATCH_SIZE = {"cpu": 50, "cuda": 500}


class Extractor(Protocol):
    """What the protocol needs from a feature network; tests substitute a cheap one."""

    name: str
    dim: int
    weights_sha256: str

    def __call__(self, images: np.ndarray, desc: str = ...) -> np.ndarray:
        """uint8 (N, 28, 28, 3) -> float32 (N, dim)."""

    def logits_weight(self) -> np.ndarray:
        """The classifier matrix on top of the features (Inception Score); UserError if there is none."""

    def provenance(self) -> dict:
        """Network name, weights file and hash, device: what the JSON records."""


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bloodgen").expanduser()


@contextlib.contextmanager
def _full_precision_cuda():
    """Turn TF32 off while extracting: TF32 rounds convolution inputs to 10 mantissa bits, and the 1e-4
    agreement with pytorch-fid's features is established for full float32 only."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class FeatureExtractor:
    """Runs a feature network (float (N, 3, 28, 28) in [0, 1] -> (N, dim)) over uint8 images in batches.

    The network is loaded on first use, so a run whose features all come from the cache never pays for
    it. The whole uint8 array goes to the device in one copy (17,092 images are 40 MB) and is converted
    there, batch by batch: no per-image Python work, and a GPU waits on the network, not on loading.
    """

    def __init__(self, load_network: Callable[[], "torch.nn.Module"], *, name: str, dim: int, weights_sha256: str,
                 info: dict, device=None, batch_size: int | None = None, progress: bool = True):
        self._load_network = load_network
        self.name = name
        self.dim = dim
        self.weights_sha256 = weights_sha256
        self.info = info
        self.device = checks.device(device)
        if batch_size is not None and batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE.get(self.device.type, DEFAULT_BATCH_SIZE["cpu"])
        self.progress = progress

    @functools.cached_property
    def network(self):
        return self._load_network().to(self.device)

    def logits_weight(self) -> np.ndarray:
        return self.network.logits_weight()

    def provenance(self) -> dict:
        return {"name": self.name, "dim": self.dim, "sha256": self.weights_sha256, **self.info,
                "device": str(self.device), "batch_size": self.batch_size}

    def __call__(self, images: np.ndarray, desc: str = "features") -> np.ndarray:
        import torch

        n = len(images)
        out = np.empty((n, self.dim), dtype=np.float32)
        precision = _full_precision_cuda() if self.device.type == "cuda" else contextlib.nullcontext()
        bar = tqdm(total=n, desc=desc, unit="img", disable=not self.progress or n == 0, mininterval=2.0,
                   dynamic_ncols=True)
        with torch.inference_mode(), precision, bar:
            pixels = torch.as_tensor(np.ascontiguousarray(images)).to(self.device)
            for start in range(0, n, self.batch_size):
                # NHWC uint8 permuted to NCHW is already channels-last in memory: no copy before the network.
                batch = pixels[start:start + self.batch_size].permute(0, 3, 1, 2).float().div_(255)
                out[start:start + len(batch)] = self.network(batch).cpu().numpy()
                bar.update(len(batch))
        return out


class FeatureStore:
    """Features of a fixed set of images, computed on demand by index and kept; optionally backed by a file."""

    def __init__(self, images: np.ndarray, extractor: Extractor, desc: str,
                 cache_path: Path | None = None, cache_key: dict | None = None):
        self.images = images
        self.extractor = extractor
        self.desc = desc
        self.cache_path = cache_path
        self.cache_key = cache_key
        self._features = np.zeros((len(images), extractor.dim), dtype=np.float32)
        self.computed = np.zeros(len(images), dtype=bool)
        self.n_computed_now = 0  # computed by this process, as opposed to read from the cache
        if cache_path is not None:
            self._merge(self._read_cache())

    def features(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        missing = np.unique(indices[~self.computed[indices]])
        # A file-backed store saves after every part, so an interrupted run resumes where it stopped.
        part = CACHE_WRITE_EVERY if self.cache_path is not None else max(missing.size, 1)
        n_parts = -(-missing.size // part)
        for i, start in enumerate(range(0, missing.size, part)):
            chunk = missing[start:start + part]
            desc = self.desc if n_parts == 1 else f"{self.desc}, part {i + 1}/{n_parts}"
            self._features[chunk] = self.extractor(self.images[chunk], desc=desc)
            self.computed[chunk] = True
            self.n_computed_now += chunk.size
            if self.cache_path is not None:
                self._write_cache()
        return self._features[indices]

    def _merge(self, cached: tuple[np.ndarray, np.ndarray] | None) -> None:
        if cached is None:
            return
        features, computed = cached
        take = computed & ~self.computed
        self._features[take] = features[take]
        self.computed |= take

    def _read_cache(self, warn: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.cache_path
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                key = json.loads(str(npz["key"]))
                if key != self.cache_key:
                    raise ValueError(f"it was made for {key}")
                features, computed = npz["features"], npz["computed"]
            if features.shape != self._features.shape or computed.shape != self.computed.shape:
                raise ValueError(f"its arrays have shapes {features.shape} and {computed.shape}")
            if computed.dtype != bool or not np.isfinite(features[computed]).all():
                raise ValueError("its entries are not valid")
        except Exception as err:  # any unreadable or foreign file is just a cache miss
            if warn:
                warnings.warn(f"ignoring feature cache {path} ({type(err).__name__}: {err}); it will be rebuilt")
            return None
        return features, computed

    def _write_cache(self) -> None:
        # Another process may have added features since this one read the file: keep theirs too.
        self._merge(self._read_cache(warn=False))
        try:
            with atomic_path(self.cache_path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, key=np.array(json.dumps(self.cache_key)), features=self._features,
                         computed=self.computed)
        except OSError as err:  # a read-only or full disk costs a recomputation next time, not this run
            warnings.warn(f"could not write feature cache {self.cache_path} ({err}); features are not cached")


def dataset_feature_store(data, extractor: Extractor, cache_dir: str | os.PathLike | None = None,
                          view: tuple[str, np.ndarray] | None = None) -> FeatureStore:
    """The cached features of every image of a loaded `BloodMNIST`, indexed like its `all` split; with `view`
    (a name and the images, one per image of `all`), of that transformed copy instead, cached apart."""
    name, images = view if view is not None else (None, data.images(ALL))
    key = {"format": CACHE_FORMAT, **({"view": name} if name else {}), "network": extractor.name,
           "weights_sha256": extractor.weights_sha256, "data_sha256": data.sha256, "n_images": len(images),
           "dim": extractor.dim}
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    infix = f"-{name}" if name else ""
    path = folder / "features" / (f"{extractor.name}{infix}-data{data.sha256[:16]}"
                                  f"-weights{extractor.weights_sha256[:16]}.npz")
    return FeatureStore(images, extractor, desc=f"real images ({name})" if name else "real images", cache_path=path,
                        cache_key=key)
