"""Sampling cost of each family's preset against the sampling batch size, on this machine, without a trained run.

    python benchmarks/sample_time.py --preset record --models ddpm --n 256 --batch-sizes 32 64 128 256
    python benchmarks/sample_time.py --preset cpu --models gan vae cgan ddpm --n 512

Draws N images with the preset's own sampler settings (steps, guidance, eta) from freshly initialised
networks (the cost does not depend on the weights) through `bloodgen.sampling.api.generate`, the code the
study uses; after one untimed warm-up batch, each batch size is timed `--repeats` times and the fastest
repeat is kept, which damps the noise of a shared machine. Prints a Markdown table and writes
OUT/sample-time-<preset>-<device>-n<N>.json with milliseconds per image and the minutes 10,000 images
take. This is what chose the default sampling batch per device (`DEFAULT_BATCH_SIZE` in sampling/api.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bloodgen.models.base import count_parameters  # noqa: E402
from bloodgen.models.config import PRESETS, resolve_config  # noqa: E402
from bloodgen.models.registry import get_family, model_names  # noqa: E402
from bloodgen.provenance import environment, write_json  # noqa: E402
from bloodgen.sampling.api import generate  # noqa: E402


def time_sampling(model: str, preset: str, n: int, batch_size: int, repeats: int, device: torch.device) -> dict:
    config = resolve_config(model, preset)
    family = get_family(model)(model, config, 8)
    torch.manual_seed(0)
    network = family.build()[family.sampling_network].to(device)
    labels = np.arange(n) % 8 if family.conditional else None
    warm_up = labels[:batch_size] if labels is not None else None  # first-call allocations are not timed
    generate(family, network, warm_up, batch_size, seed=0, batch_size=batch_size)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(family, network, labels, n, seed=0, batch_size=batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    best = min(seconds)
    return {"model": model, "preset": preset, "batch_size": batch_size, "n": n, "repeats": repeats,
            "seconds": [round(s, 3) for s in seconds], "ms_per_image": round(1000 * best / n, 3),
            "minutes_per_10k": round(best / n * 10_000 / 60, 1), "parameters": count_parameters(network),
            "sampler": {k: config[k] for k in ("sampler", "sample_steps", "guidance", "eta") if k in config},
            "device": str(device)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="record", choices=PRESETS)
    p.add_argument("--models", nargs="+", default=["ddpm"], choices=model_names())
    p.add_argument("--n", type=int, default=256, help="images per timed draw")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cpu", action="store_true", help="time on the CPU even where a GPU is present")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if args.n < 1 or args.repeats < 1 or min(args.batch_sizes) < 1:
        p.error("--n, --repeats and every --batch-sizes value must be >= 1")
    if max(args.batch_sizes) > args.n:
        p.error(f"--n {args.n} is smaller than batch size {max(args.batch_sizes)}, which would never be filled")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    rows = []
    for model in args.models:
        for batch_size in args.batch_sizes:
            row = time_sampling(model, args.preset, args.n, batch_size, args.repeats, device)
            rows.append(row)
            print(f"{model} batch {batch_size}: {row['ms_per_image']} ms/image", flush=True)
    print("| model | batch | parameters | sampler | ms/image | min per 10k |\n|---|---:|---:|---|---:|---:|")
    for r in rows:
        sampler = ", ".join(f"{k} {v}" for k, v in r["sampler"].items()) or "one pass"
        print(f"| {r['model']} | {r['batch_size']} | {r['parameters'] / 1e6:.2f}M | {sampler} | "
              f"{r['ms_per_image']} | {r['minutes_per_10k']} |")
    out = Path(args.out) / f"sample-time-{args.preset}-{device.type}-n{args.n}.json"
    write_json(out, {"rows": rows, "environment": environment(), "torch_threads": torch.get_num_threads(),
                     "argv": sys.argv})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
