"""Which frozen encoder gives class prototypes that separate the classes? Prototype-classifier accuracy
per encoder, with all training images and with 100 per class (IMPROVE's regime):

    python benchmarks/prototype_encoders.py [--seeds 0 1 2] [--data PATH]

Encoders: `reference` (the shipped reference ResNet-18, trained on all 11,959 labelled train images: in
the 100-per-class regime it has seen far more labels than the regime allows), `reference-subset` (the
same recipe retrained on the regime's own images only, for as many optimiser steps as the full-data one:
its epochs scaled by 11,959 / 800, since 6 epochs of 800 images are 42 steps and leave it at chance) and `inception` (the FID InceptionV3's pool3,
ImageNet-trained: no BloodMNIST label at all; features from the evaluation cache). In the 100-per-class
regime the train split is cut with `subset_indices(per_class=100, seed)`; val (checkpoint selection) and
test (the reported accuracy) stay whole. Prototype options are the defaults of `bloodgen prototypes learn`
(K = 1, dim 64, 60 epochs) with the seed varied. Each (encoder, regime, seed) unit is saved as it finishes
in benchmarks/results/prototypes/encoders.json, with the table in encoders.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.prototype_options import PrototypeOptions, PrototypeRecord  # noqa: E402
from bloodgen.classify.prototypes import learn_prototypes  # noqa: E402
from bloodgen.classify.reference import default_recipe  # noqa: E402
from bloodgen.data import load_bloodmnist  # noqa: E402
from bloodgen.data.subset import write_subset  # noqa: E402
from bloodgen.metrics.features import default_cache_dir  # noqa: E402
from bloodgen.provenance import environment, write_json, write_text  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "prototypes"
REGIMES = {"all": None, "100 per class": 100}
ENCODERS = ("reference", "inception", "reference-subset")


def run_unit(data, encoder: str, per_class: int | None, seed: int, work: Path) -> PrototypeRecord:
    options = PrototypeOptions(seed=seed)
    if encoder == "reference-subset":
        if per_class is None:
            raise ValueError("reference-subset is the 100-per-class regime's own encoder")
        subset = write_subset(data, work / f"bloodmnist-{per_class}-s{seed}.npz", per_class=per_class,
                              splits=("train",), seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoder_data = load_bloodmnist(subset)
        base = default_recipe()
        recipe = replace(base, epochs=math.ceil(base.epochs * data.split_sizes["train"] / encoder_data.split_sizes["train"]))
        return learn_prototypes(data, work / f"{encoder}-{seed}", options, encoder="reference",
                                encoder_data=encoder_data, classifier_recipe=recipe, max_per_class=per_class)[1]
    return learn_prototypes(data, work / f"{encoder}-{per_class}-{seed}", options, encoder=encoder,
                            max_per_class=per_class)[1]


def table(results: dict) -> str:
    rows = ["| encoder | regime | labels the encoder saw | val accuracy | test accuracy | seeds |",
            "|---|---|---|---:|---:|---:|"]
    for key, units in results["units"].items():
        encoder, regime = key.split(" / ")
        test = [u["test_accuracy"] for u in units.values()]
        val = [u["val_accuracy"] for u in units.values()]
        saw = {"reference": "all 11,959 train images", "reference-subset": "the regime's own",
               "inception": "none (ImageNet)"}[encoder]
        rows.append(f"| {encoder} | {regime} | {saw} | {np.mean(val):.3f} ± {np.std(val, ddof=1) if len(val) > 1 else 0:.3f} "
                    f"| {np.mean(test):.3f} ± {np.std(test, ddof=1) if len(test) > 1 else 0:.3f} | {len(test)} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    data = load_bloodmnist(args.data)
    work = default_cache_dir() / "prototype-encoders"
    path = OUT / "encoders.json"
    results = json.loads(path.read_text()) if path.is_file() else {"units": {}}
    for regime, per_class in REGIMES.items():
        for encoder in ENCODERS:
            if encoder == "reference-subset" and per_class is None:
                continue
            units = results["units"].setdefault(f"{encoder} / {regime}", {})
            for seed in args.seeds:
                if str(seed) in units:
                    continue
                record = run_unit(data, encoder, per_class, seed, work)
                units[str(seed)] = {"val_accuracy": record.val_accuracy, "test_accuracy": record.test_accuracy,
                                    "seconds": record.seconds, "feature_dim": record.encoder.feature_dim}
                print(f"{encoder}, {regime}, seed {seed}: test accuracy {record.test_accuracy:.3f}", flush=True)
                results["environment"] = environment()
                write_json(path, results)
                write_text(OUT / "encoders.md", "# Prototype-classifier accuracy per encoder\n\n"
                           + __doc__.split("\n\n", 1)[1] + "\n" + table(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
