"""The models shipped with bloodgen (`pretrained:NAME`), kept free of torch so `--help` can list them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bloodgen.errors import UserError

PRETRAINED_PREFIX = "pretrained:"


def pretrained_names() -> list[str]:
    """Generative models shipped with the package (bloodgen/pretrained/<name>/model.safetensors + model.json;
    the reference classifier beside them has no model.json)."""
    root = resources.files("bloodgen").joinpath("pretrained")
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir()
                  if d.joinpath("model.safetensors").is_file() and d.joinpath("model.json").is_file())


def resolve_model_path(path: str | Path) -> Path:
    """`pretrained:NAME` -> the shipped export of that family; any other path as given."""
    text = str(path)
    if not text.startswith(PRETRAINED_PREFIX):
        return Path(text).expanduser()
    name = text[len(PRETRAINED_PREFIX):]
    if name not in pretrained_names():
        raise UserError(f"no pretrained model {name!r}: choose one of "
                        f"{', '.join(PRETRAINED_PREFIX + n for n in pretrained_names()) or '(none shipped)'}")
    return Path(str(resources.files("bloodgen").joinpath("pretrained", name)))
