"""Why a ddpm's samples come out colour-cast, measured without InceptionV3: the per-image mean colour of
samples against that of real images, for several samplers, and the model's one-step x0 estimate by t.

    python benchmarks/ddpm_colour_drift.py results/runs/ddpm-s0-37d4c90c79e8 --n 64 \
        --out benchmarks/results/ddpm_colour_drift.json    # the cpu study's ddpm (epsilon prediction)

Colour cast: the share of images whose mean RGB lies outside the real images' 99.9% ellipse (Mahalanobis
distance^2 > 16.27, the chi-square(3) quantile; 2.4% of real images by construction of the threshold on a
finite sample), and the Frechet distance between the mean-RGB distributions (real: ~0.6). The x0 table
noises real test images to t, takes the model's epsilon, and reports the error of the implied x0's mean
colour: an epsilon model cannot give x0 at t = T - 1, where 1/sqrt(abar) is about 20,000.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bloodgen.data import load_bloodmnist, to_model_range  # noqa: E402
from bloodgen.provenance import environment, write_json  # noqa: E402
from bloodgen.sampling.api import generate, load_model  # noqa: E402

CHI2_3_999 = 16.27
SAMPLERS = [
    {"sampler": "ddim", "steps": 25, "guidance": 1.5, "eta": 0.0},
    {"sampler": "ddim", "steps": 25, "guidance": 1.0, "eta": 0.0},
    {"sampler": "ddim", "steps": 100, "guidance": 1.5, "eta": 0.0},
    {"sampler": "dpm", "steps": 25, "guidance": 1.5},
    {"sampler": "ddim", "steps": 25, "guidance": 1.5, "eta": 1.0},
    {"sampler": "ddim", "steps": 50, "guidance": 1.5, "eta": 1.0},
]
ANCESTRAL = {"sampler": "ddpm", "steps": 1000, "guidance": 1.0}
TIMES = (50, 200, 400, 600, 800, 900, 960, 999)


class ColourReference:
    """Mean-RGB statistics of the real images, and how far a set of images is from them."""

    def __init__(self, real: np.ndarray):
        means = self.means(real)
        self.mu, self.cov = means.mean(0), np.cov(means.T)
        self.icov = np.linalg.inv(self.cov)

    @staticmethod
    def means(images: np.ndarray) -> np.ndarray:
        return images.astype(np.float64).reshape(len(images), -1, 3).mean(1)

    def compare(self, images: np.ndarray) -> dict:
        from scipy import linalg

        m = self.means(images)
        d2 = np.einsum("ij,jk,ik->i", m - self.mu, self.icov, m - self.mu)
        cov = np.cov(m.T)
        fd = ((m.mean(0) - self.mu) ** 2).sum() + np.trace(cov + self.cov - 2 * linalg.sqrtm(cov @ self.cov).real)
        return {"colour_cast_fraction": float((d2 > CHI2_3_999).mean()), "mean_rgb": m.mean(0).round(1).tolist(),
                "colour_frechet": round(float(fd), 1)}


@torch.no_grad()
def x0_colour_error(loaded, images: np.ndarray, labels: np.ndarray) -> list[dict]:
    family, net = loaded.family, loaded.network
    scheduler = family.noise_scheduler()
    x0 = to_model_range(images)
    y = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(0)
    rows = []
    for t in TIMES:
        noise = torch.randn(x0.shape, generator=g)
        tt = torch.full((len(x0),), t)
        xt = scheduler.add_noise(x0, noise, tt)
        eps = family.denoise(net, xt, tt, y)
        abar = scheduler.alphas_cumprod[t]
        x0_hat = (xt - (1 - abar).sqrt() * eps) / abar.sqrt()
        err = x0_hat.mean((2, 3)) - x0.mean((2, 3))  # model range [-1, 1]
        rows.append({"t": t, "abar": float(abar), "mean_colour_bias": err.mean(0).numpy().round(4).tolist(),
                     "mean_colour_abs_error": round(float(err.abs().mean()), 4)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a ddpm checkpoint, run folder, export or pretrained:ddpm")
    parser.add_argument("--n", type=int, default=128, help="samples per sampler (the ancestral one gets n/4)")
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = load_bloodmnist(args.data)
    real = data.images("all")
    reference = ColourReference(real)
    loaded = load_model(args.model, "cpu")
    rows = {"real (2,000 images)": reference.compare(real[np.random.default_rng(0).choice(len(real), 2000, False)])}
    labels = np.arange(args.n) % 8
    for options in SAMPLERS + [ANCESTRAL]:
        n = args.n // 4 if options is ANCESTRAL else args.n
        start = time.perf_counter()
        images = generate(loaded.family, loaded.network, labels[:n], n, 1000, **options)
        name = json.dumps(options)
        rows[name] = {**reference.compare(images), "n": n, "seconds": round(time.perf_counter() - start, 1)}
        print(name, rows[name], flush=True)
    x0 = x0_colour_error(loaded, data.images("test")[:256], data.labels("test")[:256])
    for row in x0:
        print(row)
    write_json(args.out, {"model": args.model, "samplers": rows, "x0_estimate_by_t": x0, "environment": environment()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
