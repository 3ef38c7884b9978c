"""proto-ddpm's class conditioning names and the prototypes file it reads (written by `bloodgen prototypes
learn`), free of torch at import so `--help` stays instant."""

from __future__ import annotations

from pathlib import Path

from bloodgen.errors import UserError

# The class conditioning: frozen prototypes from a file (IMPROVE), or a learned embedding (the baseline).
PROTOTYPES, LEARNED = "prototypes", "learned"
CLASS_EMBEDDINGS = (PROTOTYPES, LEARNED)
# The prototypes file `bloodgen prototypes learn` writes: one (classes, K, dim) tensor under this key.
PROTOTYPES_FILE = "prototypes.safetensors"
PROTOTYPES_KEY = "prototypes"


def prototypes_path(path: str | Path) -> Path:
    """A prototypes file, or the folder holding `prototypes.safetensors`."""
    path = Path(path).expanduser()
    return path / PROTOTYPES_FILE if path.is_dir() else path


def read_prototypes(path: str | Path):
    """The (C, K, dim) prototypes in a file written by `learn_prototypes`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = prototypes_path(path)
    if not path.is_file():
        raise UserError(f"prototypes file {path} not found; create it with `bloodgen prototypes learn`")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path} is not a safetensors file ({err})") from None
    prototypes = tensors.get(PROTOTYPES_KEY)
    if prototypes is None or prototypes.ndim != 3:
        raise UserError(f"{path} holds no (classes, K, dim) tensor named {PROTOTYPES_KEY!r}; "
                        f"write it with `bloodgen prototypes learn`")
    return prototypes
