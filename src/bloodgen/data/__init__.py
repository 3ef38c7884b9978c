"""BloodMNIST: locating, validating and loading the file, and turning it into training tensors."""

from bloodgen.data.bloodmnist import (
    CLASS_NAMES,
    CLASS_NAMES_FULL,
    DATA_ENV,
    N_CLASSES,
    SPLITS,
    BloodMNIST,
    load_bloodmnist,
    resolve_data_path,
)
from bloodgen.data.dataset import ImageDataset, make_loader, random_dihedral, to_model_range, to_uint8

__all__ = [
    "CLASS_NAMES", "CLASS_NAMES_FULL", "DATA_ENV", "N_CLASSES", "SPLITS", "BloodMNIST", "load_bloodmnist",
    "resolve_data_path", "ImageDataset", "make_loader", "random_dihedral", "to_model_range", "to_uint8",
]
