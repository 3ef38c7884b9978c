"""Checks of the user's inputs that run before any work starts: output locations, seeds, devices, files.

A command calls these first, so a typo in `--out` or `--seed` costs a second, not the minutes (or hours)
of sampling, evaluation or training that would otherwise run before the write fails. Nothing is created
by a check: the writability probe removes its own file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bloodgen.errors import UserError

# numpy's SeedSequence takes any non-negative integer, torch's manual_seed one below 2**64; a seed also
# goes through derived seeds, so the bound leaves room for them.
MAX_SEED = 2**63 - 1


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_folder(folder: Path, option: str, target: Path) -> None:
    """Raise unless a file can be created in `folder` (or, if absent, in its nearest existing ancestor)."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise UserError(f"{option} {target}: {existing} is a file, not a folder; choose another location")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bloodgen-write-check-", dir=existing)
    except OSError as err:
        raise UserError(f"{option} {target}: cannot write in {existing} ({err.strerror or err}); "
                        f"choose a writable location") from None
    os.close(fd)
    os.unlink(probe)


def output_file(path: str | os.PathLike, option: str, suffix: str | None = None) -> Path:
    """`path` as a Path if a file can be written there (its folders may not exist yet); else a UserError."""
    target = Path(path).expanduser()
    if suffix is not None and target.suffix.lower() != suffix:
        raise UserError(f"{option} must name a {suffix} file, got {target}")
    if target.is_dir():
        example = target / f"out{suffix or ''}"
        raise UserError(f"{option} {target} is a folder; give a file path such as {example}")
    _probe_folder(target.parent, option, target)
    return target


def output_folder(path: str | os.PathLike, option: str) -> Path:
    """`path` as a Path if it is (or can become) a writable folder; else a UserError."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise UserError(f"{option} {target} is a file; give a folder (it is created if missing)")
    _probe_folder(target, option, target)
    return target


def seed(value, option: str = "--seed") -> int:
    """A seed is an integer in 0..2**63-1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise UserError(f"{option} must be a non-negative integer (0 to 2**63 - 1), got {value!r}")
    return int(value)


def positive(value, option: str, minimum: int = 1):
    """`value` unless it is below `minimum` (None passes: the default applies)."""
    if value is not None and value < minimum:
        raise UserError(f"{option} must be at least {minimum}, got {value}")
    return value


def device(name: str | None = None):
    """`None`/"auto": CUDA when available, else CPU. A named device must exist here."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"device {name} requested but {torch.cuda.device_count()} CUDA device(s) are available; "
                        f"use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device mps requested but MPS is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {name} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return dev


def _looks_like_torch(path: Path) -> bool:
    """PyTorch files are zip archives (a truncated one keeps its first local header), or pickles
    (protocol 2) in the legacy format of older weights such as pytorch-fid's."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head == b"PK\x03\x04" or head[:2] == b"\x80\x02"


def torch_header(path: Path, what: str, fix: str) -> None:
    """Refuse at once a file that cannot be a PyTorch file (before it is needed, maybe minutes later)."""
    if not _looks_like_torch(path):
        raise UserError(f"{path} is not a readable {what} (not a PyTorch file); {fix}")


def torch_file(path: Path, what: str, fix: str):
    """`torch.load(path, weights_only=True)`, or one line naming the file and `fix` when it cannot be read.

    PyTorch's own messages for such files are long and, for a file that is not a weights file, advise
    loading it with weights_only=False, which would run whatever code the file holds; they are not shown.
    """
    import torch

    torch_header(path, what, fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # zip, pickle and EOF errors all mean the same to the user
        raise UserError(f"{path} is not a readable {what} (damaged or truncated); {fix}") from None


def npz_archive(path: Path, source: str) -> None:
    """Raise unless `path` starts like a zip archive, as every .npz does (np.load would try a pickle)."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise UserError(f"{source} is not an .npz file (no zip archive inside); write it with "
                            f"np.savez(path, images=uint8 (N, 28, 28, 3)[, labels=(N,) ints])")
