"""BloodMNIST: locating, validating and loading the file, and turning it into training tensors."""

from bloodgen.data.bloodmnist import (CLASS_NAMES, CLASS_NAMES_FULL, DATA_ENV, N_CLASSES, SPLITS, BloodMNIST,
                                      load_bloodmnist, resolve_data_path)

_TORCH_NAMES = ("ImageDataset", "dihedral", "make_loader", "random_colour_jitter", "random_dihedral",
                "random_rotation", "to_model_range", "to_uint8")

__all__ = [
    "CLASS_NAMES", "CLASS_NAMES_FULL", "DATA_ENV", "N_CLASSES", "SPLITS", "BloodMNIST", "load_bloodmnist",
    "resolve_data_path", *_TORCH_NAMES,
]


def __getattr__(name: str):
    # The tensor helpers import torch (~2 s); loading them on first use keeps `bloodgen --help` instant.
    if name in _TORCH_NAMES:
        from bloodgen.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'bloodgen.data' has no attribute {name!r}")
