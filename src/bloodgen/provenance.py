"""What every run writes beside its outputs: versions, hashes, config; and atomic file writes.

Outputs are written to a temporary file in the same folder and renamed into place, so an interrupted
run never leaves a half-written checkpoint, JSON or report behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

TRACKED_PACKAGES = (
    "bloodgen", "torch", "torchvision", "numpy", "scipy", "medmnist", "pytorch-fid",
    "diffusers", "accelerate", "scikit-learn", "matplotlib", "safetensors",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The processor's name: /proc/cpuinfo's on Linux (platform.processor() is often empty there)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def portable_path(text: str) -> str:
    """A path as a record may keep it: relative to the working folder when inside it, else only its last two
    parts (records are committed and shared; the machine's folders mean nothing elsewhere). Other text as is."""
    if not os.path.isabs(text):
        return text
    path = Path(text)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(Path(*path.parts[-2:])) if len(path.parts) > 2 else path.name


def environment() -> dict[str, Any]:
    """Versions plus the machine the run happened on (device names matter for timings)."""
    info: dict[str, Any] = {
        "versions": package_versions(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "argv": [portable_path(arg) for arg in sys.argv],
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        # The SIMD kernels torch picked (e.g. AVX512 or AVX2): the same CPU name can run at different speeds.
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # provenance must never be the reason a run fails
        pass
    return info


def file_digests(path: str | os.PathLike, algorithms: tuple[str, ...] = ("md5", "sha256")) -> dict[str, str]:
    """Hex digests of a file, all computed in one pass over it."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            for h in hashes.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


def file_sha256(path: str | os.PathLike) -> str:
    return file_digests(path, ("sha256",))["sha256"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates files readable by the owner only; give the result the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def state_digest(obj: Any) -> str:
    """SHA-256 over every tensor and value in a nested state, in key order (identical states, identical digest)."""
    import torch

    h = hashlib.sha256()

    def visit(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                visit(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)
        else:
            h.update(repr(x).encode())

    visit(obj)
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def timestamped(message: str) -> None:
    print(f"[{_dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def saved_parts(path: str | os.PathLike, what: str,
                say: Callable[[str], None] = timestamped) -> Callable[[str, Callable[[], Any]], Any]:
    """A `step(name, compute)` that keeps each finished part of a long computation in `path` (JSON, written
    atomically after every part), so a run cut between parts resumes at the next one."""
    path = Path(path)
    done = json.loads(path.read_text()) if path.is_file() else {}

    def step(name: str, compute: Callable[[], Any]) -> Any:
        if name in done:
            say(f"{what}, {name}: done already ({path})")
        else:
            say(f"{what}, {name}")
            done[name] = compute()
            write_json(path, done)
        return done[name]

    return step


def _json_default(obj: Any) -> Any:
    # NumPy scalars and arrays and Paths appear in results; JSON has no type for them.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
