"""Class fidelity and pixel-space memorisation of a labelled sample file, without the TSTR/augmentation
trainings of `bloodgen evaluate --utility` (two classifier trainings, about an hour on 2 CPU cores).

    python benchmarks/fidelity_memorisation.py samples.npz --recipe cpu --out fidelity.json
    python benchmarks/fidelity_memorisation.py samples.npz --out fidelity.json --memorisation-only

--memorisation-only recomputes the memorisation block of an existing --out file from the same samples
(their content hash must match the file's record) and keeps its class fidelity: for records made before
the exact-distance fix of issue #14, without retraining the classifier.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.recipe import RECIPES  # noqa: E402
from bloodgen.classify.reference import reference_classifier  # noqa: E402
from bloodgen.classify.utility import (class_fidelity, copy_masks, memorisation,  # noqa: E402
                                       pixel_vectors)
from bloodgen.data import load_bloodmnist  # noqa: E402
from bloodgen.metrics.inputs import load_images  # noqa: E402
from bloodgen.provenance import environment, write_json  # noqa: E402


def pixel_memorisation(images, data, n: int) -> dict:
    m = min(n, len(images))
    train, test = data.images("train"), data.images("test")
    mem = memorisation(pixel_vectors(images[:m]), pixel_vectors(train), pixel_vectors(test),
                       **copy_masks(images[:m], train, test)).to_json()
    mem.pop("closest")  # indices into this benchmark's samples, which are not kept
    return mem


def update_memorisation(args, data) -> None:
    record = json.loads(Path(args.out).read_text())
    samples = load_images(args.samples)
    if samples.provenance()["content_sha256"] != record["samples"]["content_sha256"]:
        sys.exit(f"{args.samples} are not the samples {args.out} was computed from (content sha256 differs)")
    before = record["memorisation_pixels"]
    record["memorisation_pixels"] = pixel_memorisation(samples.images, data, args.memorisation_n)
    record["memorisation_recomputed"] = {
        "date": datetime.date.today().isoformat(), "before": before, "environment": environment(),
        "command": f"python benchmarks/fidelity_memorisation.py {args.samples} --out {args.out} --memorisation-only",
        "why": "exact nearest distances and copies by pixel equality (issue #14)"}
    write_json(args.out, record)
    mem = record["memorisation_pixels"]
    print(f"memorised {mem['memorised_fraction']:.4f}, exact copies {mem['exact_copies']}, threshold "
          f"{mem['threshold']:.4f} (was {before['threshold']:.4f}); wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", help=".npz with images and labels (e.g. from `bloodgen sample --balanced`)")
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="cpu")
    parser.add_argument("--memorisation-n", type=int, default=5000)
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--memorisation-only", action="store_true",
                        help="update the memorisation block of an existing --out record (same samples)")
    args = parser.parse_args()
    started = time.perf_counter()
    data = load_bloodmnist(args.data)
    if args.memorisation_only:
        update_memorisation(args, data)
        return
    model, info = reference_classifier(data, RECIPES[args.recipe])
    samples = load_images(args.samples)
    fidelity = class_fidelity(model, samples.images, samples.labels).to_json()
    mem = pixel_memorisation(samples.images, data, args.memorisation_n)
    write_json(args.out, {"samples": samples.provenance(), "classifier_test": info["test"], "fidelity": fidelity,
                          "memorisation_pixels": mem, "seconds": round(time.perf_counter() - started, 1),
                          "environment": environment()})
    print(f"class fidelity {fidelity['class_fidelity_macro']:.4f} (macro); memorised {mem['memorised_fraction']:.4f}, "
          f"exact copies {mem['exact_copies']}; wrote {args.out}")


if __name__ == "__main__":
    main()
