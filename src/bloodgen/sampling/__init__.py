"""Reproducible sampling from trained models: `load_model`, `sample`, `make_sample_fn`.

Names are imported on first use so that `bloodgen --help` (which imports the `cli` modules) needs no torch.
"""

__all__ = ["LoadedModel", "load_model", "make_sample_fn", "sample"]


def __getattr__(name):
    if name in __all__:
        from bloodgen.sampling import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
