"""The one training loop for every family: `train(...)` -> a run folder, `resume(run)` continues one (see
`loop` for the folder's layout).

Names are imported on first use so that `bloodgen --help` (which imports the `cli` modules) needs no torch.
"""

__all__ = ["RunOptions", "TrainResult", "TrainingDiverged", "resume", "train"]


def __getattr__(name):
    if name in __all__:
        from bloodgen.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
