"""Ship a cached reference classifier with the package, so class fidelity needs no training:

    bloodgen classifier train --recipe cpu --data PATH/bloodmnist.npz   # trains once, into the cache
    python benchmarks/publish_classifier.py --data PATH/bloodmnist.npz

copies its weights and info.json into src/bloodgen/pretrained/reference-classifier/, with the machine's
paths removed from the record. `bloodgen.classify.reference.reference_classifier` then uses it whenever
the recipe and the data file's hash are the ones it was trained with.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.recipe import RECIPES  # noqa: E402
from bloodgen.classify.reference import SHIPPED_CLASSIFIER  # noqa: E402
from bloodgen.data import load_bloodmnist  # noqa: E402
from bloodgen.metrics.features import default_cache_dir  # noqa: E402
from bloodgen.provenance import write_json  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="the BloodMNIST file the classifier was trained on")
    parser.add_argument("--recipe", default="cpu", choices=tuple(RECIPES))
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    data = load_bloodmnist(args.data)
    recipe = RECIPES[args.recipe]
    source = Path(args.cache_dir or default_cache_dir()) / "classifier" / f"{data.sha256[:16]}-{recipe.key()}"
    if not (source / "model.safetensors").is_file():
        sys.exit(f"no cached classifier in {source}: run `bloodgen classifier train --recipe {args.recipe}` first")
    target = ROOT / "src" / "bloodgen" / "pretrained" / SHIPPED_CLASSIFIER
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "model.safetensors", target / "model.safetensors")
    info = json.loads((source / "info.json").read_text())
    info["data"].pop("path", None)  # the machine's path; the hashes identify the file
    info["environment"]["argv"] = ["bloodgen", *info["environment"]["argv"][1:2], "..."]  # paths of that machine
    assert info["recipe"] == asdict(recipe)
    write_json(target / "info.json", info)
    print(f"shipped {source} as {target.relative_to(ROOT)} (test accuracy {info['test']['accuracy']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
