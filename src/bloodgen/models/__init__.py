"""Generative model families. `registry.FAMILIES` names them; `base.Family` is what each implements."""

from bloodgen.models.registry import FAMILIES, get_family, model_names

__all__ = ["FAMILIES", "get_family", "model_names"]
