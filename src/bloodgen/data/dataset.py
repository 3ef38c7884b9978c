"""Images as training tensors: uint8 NHWC <-> float NCHW in [-1, 1], and label-preserving augmentation.

Blood-cell crops have no canonical orientation, so the 8 flips/rotations of the square (the dihedral
group) keep the class. They are applied to whole batches on the device the batch lives on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2


def to_model_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28, 3) -> float32 (N, 3, 28, 28) in [-1, 1]."""
    x = torch.as_tensor(images)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Inverse of `to_model_range`: float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), clipped and rounded."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def random_dihedral(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply an independent random flip/rot90 (one of 8) to each image of a (N, C, H, W) batch."""
    n = x.shape[0]
    k = torch.randint(0, 4, (n,), generator=generator).to(x.device)
    flip = torch.randint(0, 2, (n,), generator=generator).to(x.device).bool()
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    rotations = torch.stack([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])
    return rotations[k, torch.arange(n, device=x.device)]


def random_rotation(x: torch.Tensor) -> torch.Tensor:
    """Each image of a (N, C, H, W) batch turned by its own uniform angle in [0, 360), corners filled by
    reflection (the cell stays centred, the background continues). Written with affine_grid/grid_sample
    because torchvision rotates a batch by one angle only."""
    angle = torch.rand(x.shape[0], device=x.device) * 2 * math.pi
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_colour_jitter(x: torch.Tensor, strengths: tuple[float, float, float, float]) -> torch.Tensor:
    """torchvision's ColorJitter (brightness, contrast, saturation, hue) drawn anew for each image of a batch
    in [-1, 1] (one ColorJitter call on a batch would draw one set of factors for all of it)."""
    jitter = v2.ColorJitter(*strengths)
    images = (x + 1) / 2
    return torch.stack([jitter(image) for image in images]) * 2 - 1


def dihedral(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Image j of a (k, C, H, W) batch under symmetry which[j] of the square: quarter turns 0-3, then the same
    with a flip; the chosen counterpart of `random_dihedral`."""
    out = []
    for image, w in zip(x, which.tolist()):
        image = torch.rot90(image, w % 4, dims=(-2, -1))
        out.append(image.flip(-1) if w >= 4 else image)
    return torch.stack(out)


class ImageDataset(Dataset):
    """Holds the whole (small) dataset as one tensor; batches are gathered with one indexing op.

    `__getitems__` lets the DataLoader fetch a batch in one call instead of one Python call per image,
    which matters at 28x28 where per-item overhead would dominate the model's own cost.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool = False):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = to_model_range(images)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[idx]
        if self.augment:
            x = random_dihedral(x)
        return x, self.labels[idx]


def _keep_batch(batch):
    # `__getitems__` already returns stacked tensors; a module-level function so workers can pickle it.
    return batch


def make_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool = True,
                augment: bool = False, drop_last: bool = True, seed: int = 0, num_workers: int = 0) -> DataLoader:
    """A DataLoader over uint8 images; `accelerate.prepare` shards it across processes unchanged."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(ImageDataset(images, labels, augment=augment), batch_size=batch_size, shuffle=shuffle,
                      drop_last=drop_last, collate_fn=_keep_batch, generator=generator, num_workers=num_workers)
