"""Recompute the memorisation figures of a published study with the current code, and re-render its report.

    python benchmarks/refresh_memorisation.py results

For issue #14: memorisation distances were computed with torch.cdist's float32 expansion, which puts exact
copies at ~0.016 and set the threshold to that rounding error. The published study does not keep its utility
samples (32 MB), so each family's are regenerated from the weights kept in its utility run's folder
(`STUDY/runs/<run>/model.safetensors`, e.g. results/runs/cgan-s0-48d47630cb7e: the cpu study's best run, which
`pretrained:NAME` served until the protocol of record's runs replaced it) with the study's sampler options and
seed, and checked against the old record: every generated/training pair it listed must lie at the distance it
recorded (up to the old rounding), or the script stops. Then pixel and Inception memorisation are recomputed,
written into results.json and the cached utility JSON under a `memorisation_recomputed` note, and the report
is rendered again. The Inception features of the train and test splits (15,380 images) take ~40 min on 2 CPU
cores the first time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from bloodgen.classify.utility import (Memorisation, copy_masks, memorisation, pixel_vectors,  # noqa: E402
                                       required_class_counts)
from bloodgen.data import load_bloodmnist  # noqa: E402
from bloodgen.provenance import write_json  # noqa: E402
from bloodgen.study.layout import EVAL_DIR, RESULTS_FILE, FamilyResult, StudyResults  # noqa: E402
from bloodgen.samplefile import write_samples  # noqa: E402
from bloodgen.study.stages import UTILITY_SAMPLE_SEED  # noqa: E402

OLD_ROUNDING = 0.02  # the float32 expansion's error on 2,352-d pixel distances (~0.0156)


def regenerate(study: Path, model: str, family: FamilyResult, settings: dict,
               train_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from bloodgen.sampling.api import generate, load_model
    from bloodgen.training.checkpoint import EXPORT_WEIGHTS

    runs = [run.run_dir for run in family.runs if run.seed == family.utility["seed"]]
    if len(runs) != 1:
        sys.exit(f"{model}: expected one run of the utility seed {family.utility['seed']}, found {runs}")
    weights = study / runs[0] / EXPORT_WEIGHTS
    if not weights.is_file():
        sys.exit(f"{weights} not found: the utility run's exported weights must be kept in its run folder "
                 f"(benchmarks/publish_study.py copies each family's best run's)")
    loaded = load_model(weights)
    counts = required_class_counts(train_labels)
    labels = np.repeat(np.arange(len(counts)), counts) if loaded.conditional else None
    n = int(counts.sum()) if loaded.conditional else settings["memorisation_n"]
    options = settings["sampler_options"].get(model, {})
    images = generate(loaded.family, loaded.network, labels, n, UTILITY_SAMPLE_SEED, progress=True, **options)
    return images, labels if labels is not None else np.full(n, -1)


def check_same_samples(images: np.ndarray, train: np.ndarray, old: dict) -> None:
    """The old record's closest pairs must be at their recorded distances: the samples are the same images."""
    for gen, tr, dist in Memorisation.from_json(old).closest:
        now = float(np.sqrt(((pixel_vectors(images[gen:gen + 1]) - pixel_vectors(train[tr:tr + 1])) ** 2).sum()))
        if abs(now - dist) > OLD_ROUNDING:
            sys.exit(f"regenerated sample {gen} lies {now:.4f} from training image {tr}, the record says {dist}: "
                     f"these are not the study's samples")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="a study folder with results.json (e.g. results)")
    parser.add_argument("--data", default=None, help="BloodMNIST .npz (default: $BLOODGEN_DATA, then medmnist's)")
    parser.add_argument("--cache-dir", default=None, help="feature cache (default: ~/.cache/bloodgen)")
    args = parser.parse_args()

    from bloodgen.metrics.features import dataset_feature_store
    from bloodgen.metrics.inception import inception_extractor
    from bloodgen.study.report import write_study_report

    out = Path(args.study)
    results = StudyResults.load(out)
    data = load_bloodmnist(args.data)
    if data.sha256 != results.study.data["sha256"]:
        sys.exit(f"{data.path} is not the data file of {out} (sha256 differs)")
    settings = results.study.settings
    train, test = data.images("train"), data.images("test")
    sizes = data.split_sizes
    extractor = inception_extractor(progress=True)
    store = dataset_feature_store(data, extractor, args.cache_dir)
    train_features = store.features(np.arange(sizes["train"]))
    test_features = store.features(np.arange(sizes["train"] + sizes["val"], sum(sizes.values())))
    written = []
    for model, family in results.families.items():
        utility = family.utility
        if not utility:
            continue
        images, labels = regenerate(out, model, family, settings, data.labels("train"))
        check_same_samples(images, train, utility["memorisation"]["pixels"])
        m = min(settings["memorisation_n"], len(images))
        masks = copy_masks(images[:m], train, test)
        recomputed = {"pixels": memorisation(pixel_vectors(images[:m]), pixel_vectors(train), pixel_vectors(test),
                                             **masks).to_json(),
                      "inception": memorisation(extractor(images[:m], desc=f"{model}: generated features"),
                                                train_features, test_features, **masks).to_json()}
        note = {"date": datetime.date.today().isoformat(),
                "command": f"python benchmarks/refresh_memorisation.py {args.study}",
                "why": "exact nearest distances and copies by pixel equality (issue #14); the first record used "
                       "torch.cdist's float32 expansion (copies at ~0.016, threshold = rounding error)",
                "before": {space: {k: v for k, v in block.items() if k != "closest"}
                           for space, block in utility["memorisation"].items()}}
        utility["memorisation"], utility["memorisation_recomputed"] = recomputed, note
        for cached in sorted((out / EVAL_DIR).glob(f"utility-{model}-s{utility['seed']}-*.json")):
            record = json.loads(cached.read_text())
            record.update(memorisation=recomputed, memorisation_recomputed=note)
            write_json(cached, record)
        samples_path = out / utility["samples"]  # the report's nearest-pair figures read them; not kept
        samples_path.parent.mkdir(parents=True, exist_ok=True)
        write_samples(samples_path, images, labels)
        written.append(samples_path)
        for space, block in recomputed.items():
            print(f"{model} {space}: exact copies {block['exact_copies']}, memorised "
                  f"{block['memorised_fraction']:.4f}, threshold {block['threshold']:.4f}, median ratio "
                  f"{block['distance_ratio_median']:.3f}")
    write_json(out / RESULTS_FILE, results.to_json())
    write_study_report(results, data, out)
    for path in written:
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    print(f"rewrote {out / RESULTS_FILE} and the report in {out}")


if __name__ == "__main__":
    main()
