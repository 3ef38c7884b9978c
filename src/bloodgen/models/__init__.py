"""Generative model families. `registry.REGISTRY` describes them; `base.Family` is what each implements."""

from bloodgen.models.registry import REGISTRY, FamilySpec, get_family, model_names

__all__ = ["REGISTRY", "FamilySpec", "get_family", "model_names"]
