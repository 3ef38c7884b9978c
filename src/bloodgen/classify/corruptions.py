"""Corrupted copies of BloodMNIST images with the `medmnistc` package's BloodMNIST corruptions.

medmnistc (the optional `robustness` extra; it needs Debian's libmagickwand-dev for Wand) defines 11
corruptions for BloodMNIST at 5 severities. They are applied here to the 28x28 images the classifiers
see, with two fixes of our own:

- motion_blur calls `np.fromstring` on bytes, which NumPy 2 removed; ours is the same ImageMagick
  motion blur decoded with `np.frombuffer`.
- stain_deposit and bubble draw blots and bubbles sized in pixels for 224x224 images (a 10-pixel margin,
  radii up to 15), so on 28x28 their random ranges are empty; ours applies them to a 224x224 bicubic
  upscale and scales the result back down (box filter), which keeps the blot's or bubble's share of the
  cell what medmnistc intended.

A corruption that still cannot run (e.g. medmnistc is not installed) is reported as skipped with the
reason, never dropped silently. medmnistc draws from the global `random` and `np.random` streams; they
are seeded per (seed, corruption, severity) and restored afterwards.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO

import numpy as np
from PIL import Image

from bloodgen.errors import UserError

# medmnistc's corruptions for BloodMNIST (its registry CORRUPTIONS_DS["bloodmnist"]), in its order.
BLOODMNIST_CORRUPTIONS = ("pixelate", "jpeg_compression", "defocus_blur", "motion_blur", "brightness_up",
                          "brightness_down", "contrast_up", "contrast_down", "saturate", "stain_deposit", "bubble")
SEVERITIES = (1, 2, 3, 4, 5)
UPSCALED = ("stain_deposit", "bubble")  # drawn in pixel sizes meant for 224x224 images
UPSCALE_SIZE = 224
INSTALL_HINT = "pip install 'bloodgen[robustness]' (needs apt-get install libmagickwand-dev)"


@dataclass
class CorruptedSets:
    """images[(name, severity)] -> uint8 (N, 28, 28, 3); skipped[name] -> why it did not run."""

    images: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def load_corruptors() -> tuple[dict, dict[str, str]]:
    """(name -> corruptor object, name -> reason it is unavailable) for every BloodMNIST corruption."""
    try:
        from medmnistc.corruptions.registry import CORRUPTIONS_DS
    except Exception as err:  # ImportError, or OSError/ImportError from Wand when ImageMagick is missing
        reason = f"medmnistc not importable ({type(err).__name__}: {str(err).splitlines()[0]}); {INSTALL_HINT}"
        return {}, {name: reason for name in BLOODMNIST_CORRUPTIONS}
    registry = dict(CORRUPTIONS_DS["bloodmnist"])
    corruptors, skipped = {}, {}
    for name in BLOODMNIST_CORRUPTIONS:
        if name not in registry:
            skipped[name] = "not in this medmnistc version's BloodMNIST registry"
        elif name == "motion_blur":
            corruptors[name] = _fixed_motion_blur(registry[name])
        elif name in UPSCALED:
            corruptors[name] = _Upscaled(registry[name])
        else:
            corruptors[name] = registry[name]
    return corruptors, skipped


def _fixed_motion_blur(original):
    import cv2  # medmnistc's own dependency, present only where the optional corruptions extra is installed
    from medmnistc.corruptions.filter import MotionBlur, MotionImage

    class FixedMotionBlur(MotionBlur):
        def apply(self, img, severity=-1, augmentation=False):
            radius, sigma = self.severity_params[severity]
            with BytesIO() as buffer:
                img.save(buffer, format="PNG")
                wand_img = MotionImage(blob=buffer.getvalue())
            wand_img.motion_blur(radius=radius, sigma=sigma, angle=np.random.uniform(-45, 45))
            out = cv2.imdecode(np.frombuffer(wand_img.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)
            if out.ndim == 2:  # ImageMagick writes greyscale PNGs for grey-looking images
                out = np.stack([out] * 3, axis=-1)
            return np.clip(out[..., [2, 1, 0]], 0, 255).astype(np.uint8)  # BGR -> RGB

    return FixedMotionBlur(original.severity_params)


class _Upscaled:
    """Applies a corruption to a UPSCALE_SIZE upscale of the image and scales the result back."""

    def __init__(self, corruptor):
        self.corruptor = corruptor

    def apply(self, img, severity=-1):
        size = img.size
        big = img.resize((UPSCALE_SIZE, UPSCALE_SIZE), Image.BICUBIC)
        out = Image.fromarray(np.asarray(self.corruptor.apply(big, severity), dtype=np.uint8))
        return np.asarray(out.resize(size, Image.BOX))


@contextmanager
def _seeded_global_random(seed_parts: list[int]):
    state_py, state_np = random.getstate(), np.random.get_state()
    seed = int(np.random.SeedSequence(seed_parts).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state_py)
        np.random.set_state(state_np)


def corrupt(images: np.ndarray, corruptor, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """uint8 (N, 28, 28, 3) images with one corruption at severity 1-5 applied to each."""
    out = np.empty_like(images)
    with _seeded_global_random([seed, BLOODMNIST_CORRUPTIONS.index(name), severity]):
        for i, img in enumerate(images):
            res = np.asarray(corruptor.apply(Image.fromarray(img).convert("RGB"), severity - 1))
            if res.shape != img.shape:
                raise RuntimeError(f"{name} returned shape {res.shape} for a {img.shape} image")
            out[i] = np.clip(res, 0, 255).astype(np.uint8)
    return out


def corrupt_all(images: np.ndarray, names: tuple[str, ...] = BLOODMNIST_CORRUPTIONS,
                severities: tuple[int, ...] = (1, 3, 5), seed: int = 0) -> CorruptedSets:
    """Every requested corruption at every severity, or the reason it was skipped."""
    unknown = [n for n in names if n not in BLOODMNIST_CORRUPTIONS]
    if unknown:
        raise UserError(f"unknown corruption(s) {', '.join(unknown)}: choose from {', '.join(BLOODMNIST_CORRUPTIONS)}")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise UserError(f"corruption severities must be among 1-5, got {list(severities)}")
    corruptors, unavailable = load_corruptors()
    result = CorruptedSets()
    for name in names:
        if name in unavailable:
            result.skipped[name] = unavailable[name]
            continue
        try:
            for severity in severities:
                result.images[(name, severity)] = corrupt(images, corruptors[name], name, severity, seed)
        except Exception as err:  # a corruption that breaks on these images is reported, not fatal
            for severity in severities:
                result.images.pop((name, severity), None)
            result.skipped[name] = f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return result
