"""CPU speed of bloodgen's InceptionV3 feature path against `python -m pytorch_fid`, and their feature difference.

Both sides run as commands on the same PNG files with the same number of threads, from interpreter
start to the feature statistics (mean and covariance), and images/s is N divided by the wall time:

  pytorch-fid: python -m pytorch_fid --save-stats --device cpu --batch-size B DIR OUT.npz
               (its DataLoader reads the PNGs, its InceptionV3 runs, then mean/cov; no FID, so no sqrtm)
  bloodgen:    python benchmarks/bench_inception_speed.py --child DIR OUT.npz ...
               (bloodgen reads the PNGs, runs its network, then mean/cov)

The two are run alternately `--repeats` times, so a change in machine load hits both. Then, in this
process, the features of the first `--compare` images from pytorch-fid's own `get_activations` and
from bloodgen are compared (max absolute difference).

    .venv/bin/python benchmarks/bench_inception_speed.py --data ../shared/data/bloodmnist.npz \\
        --weights ../shared/data/pt_inception-2015-12-05_fc-zeroed.pth --n 1000 --threads 2 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bloodgen.provenance import cpu_model


def _child(folder: str, out: str, weights: str, batch_size: int) -> None:
    """The bloodgen side of the timing: read the PNGs, extract, save the statistics."""
    from bloodgen.metrics.fid import statistics as feature_statistics
    from bloodgen.metrics.inception import inception_extractor
    from bloodgen.metrics.inputs import load_images

    images = load_images(folder).images
    extractor = inception_extractor(weights, device="cpu", batch_size=batch_size, progress=False)
    mu, sigma = feature_statistics(extractor(images))
    np.savez(out, mu=mu, sigma=sigma)


def _timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="bloodmnist.npz")
    parser.add_argument("--weights", required=True, help="pytorch-fid InceptionV3 weights (.pth)")
    parser.add_argument("--n", type=int, default=1000, help="images timed (the first N of the test split)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both sides")
    parser.add_argument("--batch-size", type=int, default=50, help="batch size for both sides")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timing rounds")
    parser.add_argument("--compare", type=int, default=200, help="images whose features are compared")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--child", nargs=2, metavar=("DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.weights, args.batch_size)
        return

    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="bench-inception-"))
    try:
        with np.load(args.data) as npz:
            images = npz["test_images"][:args.n]
        pngs = work / "png"
        pngs.mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img).save(pngs / f"{i:05d}.png")
        # pytorch-fid reads its weights only from the torch hub cache, under the original name.
        checkpoints = work / "torch" / "hub" / "checkpoints"
        checkpoints.mkdir(parents=True)
        shutil.copy(args.weights, checkpoints / "pt_inception-2015-12-05-6726825d.pth")
        threads = str(args.threads)
        env = {**os.environ, "TORCH_HOME": str(work / "torch"), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        commands = {
            "pytorch_fid": [sys.executable, "-m", "pytorch_fid", "--save-stats", "--device", "cpu", "--batch-size",
                            str(args.batch_size), str(pngs), str(work / "theirs.npz")],
            "bloodgen": [sys.executable, __file__, "--data", args.data, "--weights", args.weights, "--batch-size",
                         str(args.batch_size), "--child", str(pngs), str(work / "ours.npz")],
        }
        rounds = []
        for r in range(args.repeats):
            row = {"load_before": os.getloadavg()[0]}
            (work / "theirs.npz").unlink(missing_ok=True)  # pytorch-fid refuses to overwrite its output
            for name, cmd in commands.items():
                row[name] = _timed(cmd, env)
                print(f"round {r}: {name} {row[name]:.1f} s = {args.n / row[name]:.2f} images/s", flush=True)
            row["load_after"] = os.getloadavg()[0]
            rounds.append(row)
        with np.load(work / "theirs.npz") as theirs, np.load(work / "ours.npz") as ours:
            stats_diff = {"mu_max_abs": float(np.abs(theirs["mu"] - ours["mu"]).max()),
                          "sigma_max_abs": float(np.abs(theirs["sigma"] - ours["sigma"]).max())}

        os.environ["TORCH_HOME"] = str(work / "torch")
        import torch
        from pytorch_fid.fid_score import get_activations
        from pytorch_fid.inception import InceptionV3

        from bloodgen.metrics.inception import inception_extractor
        from bloodgen.metrics.inputs import load_images

        torch.set_num_threads(args.threads)
        files = sorted(pngs.glob("*.png"))[:args.compare]
        theirs = get_activations(files, InceptionV3([3]), batch_size=args.batch_size, device="cpu", num_workers=0)
        ours = inception_extractor(args.weights, device="cpu", batch_size=args.batch_size, progress=False)(
            load_images(pngs).images[:args.compare])
        feature_diff = float(np.abs(theirs - ours).max())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratios = [row["pytorch_fid"] / row["bloodgen"] for row in rounds]
    result = {
        "n_images": args.n, "threads": args.threads, "batch_size": args.batch_size, "rounds": rounds,
        "images_per_s": {name: [args.n / row[name] for row in rounds] for name in commands},
        "speedup_per_round": ratios, "speedup_median": statistics.median(ratios),
        "feature_max_abs_diff": feature_diff, "features_compared": len(files), "statistics_diff": stats_diff,
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(f"speed-up (pytorch-fid time / bloodgen time) per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {result['speedup_median']:.2f}")
    print(f"max |feature difference| over {len(files)} images: {feature_diff:.2e}; statistics: {stats_diff}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
