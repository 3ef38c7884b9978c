"""Train-on-synthetic/test-on-real with 50,000 class-balanced synthetic images, for the shipped models:

    python benchmarks/tstr_50k.py --models cgan ddpm [--n 50000] [--out results/record/utility]

Per model (`pretrained:NAME`, its record sampler): N samples, class-balanced, seed 2000, drawn in pieces of
1,000 kept in the cache folder (a cut run resumes; the ddpm's 50,000 take about 4 h on 2 CPU cores, the
cgan's seconds); the shipped reference classifier's recipe trained on them, its checkpoint picked on the real
val split, scored on the real test split. Each model is a part of OUT/tstr-50k.json saved as it finishes (the
same command continues), and OUT/tstr-50k.md holds the table beside the matched-size TSTR of the record study
(`results/record/eval/utility-*.json`, 11,959 synthetic images) and the real-trained classifier. The
classifier's training grows with the images: about four times the matched-size TSTR, 1-2 h on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.recipe import ClassifierRecipe  # noqa: E402
from bloodgen.classify.reference import reference_classifier  # noqa: E402
from bloodgen.classify.scores import ClassificationScores  # noqa: E402
from bloodgen.classify.utility import train_and_test  # noqa: E402
from bloodgen.data import load_bloodmnist  # noqa: E402
from bloodgen.metrics.features import default_cache_dir  # noqa: E402
from bloodgen.provenance import file_sha256, saved_parts, write_text  # noqa: E402
from bloodgen.sampling.api import BALANCED, draw_labels, load_model, sample_resumably  # noqa: E402

SEED = 2000
CHUNK = 1000


def tstr(name: str, n: int, data, recipe: ClassifierRecipe, cache: Path) -> dict:
    model = load_model(f"pretrained:{name}")
    labels = draw_labels(n, SEED, BALANCED, model.class_counts)
    path = cache / "tstr-50k" / f"{file_sha256(model.source)[:16]}-balanced-s{SEED}-n{n}.npz"
    images = sample_resumably(model, labels, n, SEED, path, CHUNK, desc=f"{name} samples")
    result = train_and_test((images, labels), data.split("val"), data.split("test"), recipe,
                            desc=f"{name}: train-on-synthetic ({n:,})")
    return {**result, "model": f"pretrained:{name}", "source_sha256": file_sha256(model.source), "seed": SEED,
            "classes": BALANCED, "recipe": vars(recipe)}


def matched(name: str) -> dict | None:
    """The record study's matched-size TSTR of this model (11,959 synthetic images), when it is committed."""
    for path in sorted((ROOT / "results" / "record" / "eval").glob(f"utility-{name}-*.json")):
        return json.loads(path.read_text()).get("tstr")
    return None


def table(results: dict, real: dict) -> str:
    rows = ["| model | synthetic images | accuracy | balanced accuracy | macro F1 |", "|---|---:|---:|---:|---:|"]
    for name, result in results.items():
        for label, block in (("matched to the real train split", matched(name)), (f"{result['n_train']:,}", result)):
            if block:
                s = ClassificationScores.from_json(block)
                rows.append(f"| {name} | {label} | {s.accuracy:.3f} | {s.balanced_accuracy:.3f} | {s.macro_f1:.3f} |")
    s = ClassificationScores.from_json(real)
    rows.append(f"| real train split | | {s.accuracy:.3f} | {s.balanced_accuracy:.3f} | {s.macro_f1:.3f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["cgan", "ddpm"], help="shipped models (pretrained:NAME)")
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "record" / "utility")
    p.add_argument("--data", default=None)
    args = p.parse_args()
    data = load_bloodmnist(args.data)
    _, info = reference_classifier(data)
    recipe = ClassifierRecipe(**info["recipe"])
    step = saved_parts(args.out / "tstr-50k.json", "tstr-50k")
    results = {name: step(name, lambda name=name: tstr(name, args.n, data, recipe, default_cache_dir()))
               for name in args.models}
    write_text(args.out / "tstr-50k.md", "# Train-on-synthetic, test-on-real with 50,000 class-balanced images\n\n"
               f"Made by `python benchmarks/tstr_50k.py --models {' '.join(args.models)} --n {args.n}`; the reference "
               f"recipe (ResNet-18 width {recipe.width}, {recipe.epochs} epochs) trained on the synthetic images, scored on the real test split.\n\n"
               + table(results, info["test"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
