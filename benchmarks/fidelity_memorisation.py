"""Class fidelity and pixel-space memorisation of a labelled sample file, without the TSTR/augmentation
trainings of `bloodgen evaluate --utility` (two classifier trainings, about an hour on 2 CPU cores).

    python benchmarks/fidelity_memorisation.py samples.npz --recipe cpu --out fidelity.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.recipe import RECIPES  # noqa: E402
from bloodgen.classify.reference import reference_classifier  # noqa: E402
from bloodgen.classify.utility import KEY_CLOSEST, class_fidelity, memorisation, pixel_vectors  # noqa: E402
from bloodgen.data import load_bloodmnist  # noqa: E402
from bloodgen.metrics.inputs import load_images  # noqa: E402
from bloodgen.provenance import environment, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", help=".npz with images and labels (e.g. from `bloodgen sample --balanced`)")
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="cpu")
    parser.add_argument("--memorisation-n", type=int, default=5000)
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    data = load_bloodmnist(args.data)
    model, info = reference_classifier(data, RECIPES[args.recipe])
    samples = load_images(args.samples)
    fidelity = class_fidelity(model, samples.images, samples.labels)
    m = min(args.memorisation_n, len(samples.images))
    mem = memorisation(pixel_vectors(samples.images[:m]), pixel_vectors(data.images("train")),
                       pixel_vectors(data.images("test")))
    mem.pop(KEY_CLOSEST)
    write_json(args.out, {"samples": samples.provenance(), "classifier_test": info["test"], "fidelity": fidelity,
                          "memorisation_pixels": mem, "seconds": round(time.perf_counter() - started, 1),
                          "environment": environment()})
    print(f"class fidelity {fidelity['class_fidelity_macro']:.4f} (macro); memorised {mem['memorised_fraction']:.4f}, "
          f"exact copies {mem['exact_copies']}; wrote {args.out}")


if __name__ == "__main__":
    main()
