"""Find, download, validate and load the BloodMNIST `.npz` file.

Where the file comes from, in order: the `--data` flag, the `BLOODGEN_DATA` variable, medmnist's
default root (`~/.medmnist`), then medmnist's own download into that root. An explicit location
that holds no file is an error rather than a silent fall-through, so a typo never loads other data.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bloodgen.errors import UserError
from bloodgen.provenance import file_digests, portable_path

DATA_ENV = "BLOODGEN_DATA"
FLAG = "bloodmnist"
FILENAME = f"{FLAG}.npz"
SPLITS = ("train", "val", "test")
ALL = "all"  # train + val + test, concatenated in that order; image indices into it are stable
N_CLASSES = 8
IMAGE_SHAPE = (28, 28, 3)

# medmnist's INFO holds these too; they are repeated here so that resolving a path, printing help
# and the error messages never need to import medmnist (which imports torch, ~2 s).
OFFICIAL_MD5 = "7053d0359d879ad8a5505303e11de1dc"
OFFICIAL_URL = "https://zenodo.org/records/10519652/files/bloodmnist.npz?download=1"
OFFICIAL_SPLIT_SIZES = {"train": 11959, "val": 1712, "test": 3421}
CLASS_NAMES_FULL = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
# Short names for tables and figure labels.
CLASS_NAMES = ("basophil", "eosinophil", "erythroblast", "immature granulocyte",
               "lymphocyte", "monocyte", "neutrophil", "platelet")


@dataclass(frozen=True)
class BloodMNIST:
    """The loaded and validated file. Images are uint8 (N, 28, 28, 3); labels int64 (N,)."""

    path: Path
    md5: str
    sha256: str
    _images: dict[str, np.ndarray] = field(repr=False)
    _labels: dict[str, np.ndarray] = field(repr=False)

    @property
    def is_official(self) -> bool:
        return self.md5 == OFFICIAL_MD5

    @property
    def split_sizes(self) -> dict[str, int]:
        return {s: len(self._labels[s]) for s in SPLITS}

    def images(self, split: str) -> np.ndarray:
        return self._get(self._images, split)

    def labels(self, split: str) -> np.ndarray:
        return self._get(self._labels, split)

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return self.images(split), self.labels(split)

    def provenance(self) -> dict:
        return {"path": portable_path(str(self.path)), "md5": self.md5, "sha256": self.sha256,
                "official": self.is_official, "split_sizes": self.split_sizes}

    @staticmethod
    def _get(arrays: dict[str, np.ndarray], split: str) -> np.ndarray:
        if split == ALL:
            return np.concatenate([arrays[s] for s in SPLITS])
        if split not in arrays:
            raise UserError(f"unknown split {split!r}: choose one of {', '.join(SPLITS + (ALL,))}")
        return arrays[split]


def default_root() -> Path:
    """medmnist's default data folder, read from its environment-independent default."""
    return Path(os.path.expanduser("~/.medmnist"))


def resolve_data_path(data: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the path of an existing BloodMNIST file, downloading it with medmnist if needed."""
    if data is not None:
        return _explicit(Path(data), "--data")
    env = os.environ.get(DATA_ENV)
    if env:
        return _explicit(Path(env), f"${DATA_ENV}")
    root = default_root()
    candidate = root / FILENAME
    if candidate.is_file():
        return candidate
    looked = ["--data (not given)", f"${DATA_ENV} (not set)", f"{candidate} (absent)"]
    if download:
        reason = _download(root)
        if candidate.is_file():
            return candidate
        looked.append(f"download from {OFFICIAL_URL} ({reason})")
    raise UserError(
        f"BloodMNIST file {FILENAME} not found; looked at: {'; '.join(looked)}. "
        f"Download it from {OFFICIAL_URL} and pass --data PATH or set {DATA_ENV}=PATH (a file or its folder)."
    )


def _explicit(path: Path, source: str) -> Path:
    path = path.expanduser()
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise UserError(f"BloodMNIST file not found at {path} (from {source}); give the path of {FILENAME} or of "
                        f"the folder holding it, or download it from {OFFICIAL_URL}")
    return path


def _download(root: Path) -> str:
    """Let medmnist download the file into `root`; return why it failed, or 'ok'."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        import medmnist

        medmnist.BloodMNIST(split="train", root=str(root), download=True)
    except Exception as err:  # medmnist wraps every network failure in a RuntimeError with a long text
        first_line = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        return f"failed: {first_line}"
    return "ok"


def load_bloodmnist(data: str | os.PathLike | None = None, download: bool = True) -> BloodMNIST:
    """Locate, load and validate BloodMNIST. Raises UserError with a one-line reason on bad files."""
    path = resolve_data_path(data, download=download).resolve()
    stat = path.stat()
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load_cached(path_str: str, mtime_ns: int, size: int) -> BloodMNIST:
    path = Path(path_str)
    images, labels = _read_arrays(path)
    _validate(path, images, labels)
    digests = file_digests(path)
    if digests["md5"] != OFFICIAL_MD5:
        warnings.warn(f"{path} is not the official BloodMNIST file (md5 {digests['md5']}, medmnist lists "
                      f"{OFFICIAL_MD5}); results will not be comparable with published ones", stacklevel=3)
    sizes = {s: len(labels[s]) for s in SPLITS}
    if sizes != OFFICIAL_SPLIT_SIZES:
        got = "/".join(str(sizes[s]) for s in SPLITS)
        official = "/".join(str(OFFICIAL_SPLIT_SIZES[s]) for s in SPLITS)
        warnings.warn(f"{path} has split sizes train/val/test {got}, not the official {official}", stacklevel=3)
    return BloodMNIST(path=path, md5=digests["md5"], sha256=digests["sha256"], _images=images, _labels=labels)


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # every .npz is a zip archive; np.load would try it as a pickle
            raise UserError(f"{path} is not an .npz file (no zip archive inside): download BloodMNIST again "
                            f"from {OFFICIAL_URL}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels") if f"{s}_{kind}" not in keys]
            if missing:
                raise UserError(f"{path} is not a BloodMNIST file: missing key(s) {', '.join(missing)} "
                                f"(has {', '.join(sorted(keys)) or 'none'})")
            # Read every array now: a truncated file fails here, not later in the middle of training.
            images = {s: np.asarray(npz[f"{s}_images"]) for s in SPLITS}
            labels = {s: np.asarray(npz[f"{s}_labels"]) for s in SPLITS}
    except UserError:
        raise
    except Exception as err:  # zipfile, zlib, pickle and format errors all mean "not a usable npz"
        raise UserError(f"{path} is not a readable .npz file (damaged or truncated: {type(err).__name__}); "
                        f"download it again from {OFFICIAL_URL}") from None
    return images, labels


def _validate(path: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    for s in SPLITS:
        img, lab = images[s], labels[s]
        if img.dtype != np.uint8 or lab.dtype != np.uint8:
            raise UserError(f"{path}: {s} arrays must be uint8, got images {img.dtype} and labels {lab.dtype}")
        if img.ndim != 4 or img.shape[1:] != IMAGE_SHAPE:
            raise UserError(f"{path}: {s}_images must have shape (N, 28, 28, 3), got {img.shape}")
        if lab.ndim != 2 or lab.shape[1] != 1 or len(lab) != len(img):
            raise UserError(f"{path}: {s}_labels must have shape ({len(img)}, 1), got {lab.shape}")
        if len(img) == 0:
            raise UserError(f"{path}: split {s} is empty")
        if lab.max() >= N_CLASSES:
            raise UserError(f"{path}: {s}_labels must lie in 0..{N_CLASSES - 1}, found {int(lab.max())}")
        labels[s] = lab[:, 0].astype(np.int64)
