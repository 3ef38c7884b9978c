"""Augmentation with few real images: does a generator trained on k images per class help a classifier
trained on those same k images?

    python benchmarks/few_shot_augmentation.py --units cgan:10 cgan:50 cgan:100 ddpm:10 ddpm:50 ddpm:100
        [--seeds 3] [--steps 300] [--synthetic-per-class 500] [--generator-steps N] [--max-minutes 150]

For each regime k the train and val splits are cut to k random images per class (subset seed 0; the test
split stays whole), so the generator, the classifier and its checkpoint choice see only those images: a
generator that saw the whole train split would leak it. For each unit (family:k) the family's record recipe
is trained on the regime's file (one generator, training seed 0), it draws `--synthetic-per-class` images of
every class with the record sampler, and the reference ResNet-18 recipe is trained on the k real images alone
and on them plus the synthetic images, `--seeds` classifier seeds each, both arms with the same number of
optimiser steps. Scored on the full real test split; the gain is paired by classifier seed.

Every piece is resumable: the generator checkpoints (a cut run resumes), the synthetic images are cached, and
each classifier is saved as it finishes (results/record/few-shot/real-k<k>.json for the real-only arm, shared by
the families, and <family>-k<k>.json). README.md and few_shot.png there hold the table and plot. On 2 CPU cores
one classifier of 300 steps takes about 10-15 minutes, a cgan generator about 40 and a ddpm generator about 90.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.few_shot import (AUGMENTED, REAL, augmented_set, balanced_labels, run_arm,  # noqa: E402
                                        summarise)
from bloodgen.classify.recipe import RECIPES  # noqa: E402
from bloodgen.classify.reference import reference_classifier  # noqa: E402
from bloodgen.classify.utility import ClassFidelity, class_fidelity  # noqa: E402
from bloodgen.data import load_bloodmnist  # noqa: E402
from bloodgen.data.subset import describe_subset, write_subset  # noqa: E402
from bloodgen.metrics.features import default_cache_dir  # noqa: E402
from bloodgen.metrics.inputs import load_images  # noqa: E402
from bloodgen.provenance import saved_parts, write_json, write_text  # noqa: E402
from bloodgen.report.plots import pyplot  # noqa: E402
from bloodgen.samplefile import write_samples  # noqa: E402
from bloodgen.models.config import resolve_config  # noqa: E402
from bloodgen.models.registry import study_families  # noqa: E402
from bloodgen.sampling.api import generate, load_model  # noqa: E402
from bloodgen.study.stages import UTILITY_SAMPLE_SEED, DataFile, train_stage  # noqa: E402
from bloodgen.study.presets import PRESETS  # noqa: E402

RECORD = PRESETS["record"]

SUBSET_SEED = 0
GENERATOR_SEED = 0


class OutOfTime(Exception):
    """--max-minutes passed: the finished parts are saved and a re-run resumes after them."""


def regime_data(data, k: int, cache: Path):
    """The regime's BloodMNIST file (k images per class in train and val), written once into the cache."""
    path = cache / f"bloodmnist-k{k}-seed{SUBSET_SEED}.npz"
    info = describe_subset(path) if path.is_file() else None
    if info is None or info["source"]["sha256"] != data.sha256:
        write_subset(data, path, per_class=k, seed=SUBSET_SEED)
    return load_bloodmnist(path, download=False)


def timed(step, deadline: float | None):
    def guarded(name, compute):
        def run():
            if deadline is not None and time.monotonic() > deadline:
                raise OutOfTime(name)
            return compute()
        return step(name, run)
    return guarded


def generator_preset(family: str, n_train: int, steps: int | None):
    """The record preset, with the batch cut to the largest power of two that fits when the regime has fewer
    training images than the record batch, and `steps` in place of the recipe's when given."""
    overrides = {} if steps is None else {"steps": steps}
    if resolve_config(family, RECORD.train_preset)["batch_size"] > n_train:
        overrides["batch_size"] = 2 ** int(np.log2(n_train))
    return replace(RECORD, config_overrides={family: overrides}) if overrides else RECORD


def synthetic_images(run, per_class: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` images of every class from the run's export with the record sampler, cached by run."""
    path = cache / f"{run.run_dir.name}-synthetic-{per_class}.npz"
    labels = balanced_labels(per_class)
    if path.is_file():
        return load_images(path).images, labels
    loaded = load_model(run.export)
    images = generate(loaded.family, loaded.network, labels, len(labels), UTILITY_SAMPLE_SEED, progress=True,
                      **RECORD.sampler_options.get(run.model, {}))
    write_samples(path, images, labels)
    return images, labels


def run_unit(family: str, k: int, args, data, out: Path, cache: Path, deadline: float | None) -> bool:
    """One family at one regime; False when the time limit stopped it (its finished parts are saved)."""
    subset = regime_data(data, k, cache)
    train, val, test = subset.split("train"), subset.split("val"), subset.split("test")
    recipe = RECIPES["cpu"]
    minutes = None if deadline is None else (deadline - time.monotonic()) / 60
    preset = generator_preset(family, len(train[1]), args.generator_steps)
    run = train_stage(family, GENERATOR_SEED, preset, out, DataFile(str(subset.path), subset.sha256),
                      progress=True, tag=f"k{k}", max_minutes=minutes)
    if run is None:
        return False
    real_step = timed(saved_parts(out / f"real-k{k}.json", f"real only, k={k}"), deadline)
    step = timed(saved_parts(out / f"{family}-k{k}.json", f"{family}, k={k}"), deadline)
    step("generator", lambda: {"run": str(run.run_dir.relative_to(out)), "family": family,
                               "training_seed": GENERATOR_SEED, "train_images": int(len(train[1])),
                               "subset": describe_subset(subset.path),
                               "steps": resolve_config(family, RECORD.train_preset, None,
                                                       preset.config_overrides.get(family))["steps"],
                               "config_overrides": preset.config_overrides,
                               "sampler_options": RECORD.sampler_options.get(family, {})})
    synthetic = synthetic_images(run, args.synthetic_per_class, cache)
    judge = reference_classifier(data)[0]
    step("fidelity", lambda: class_fidelity(judge, *synthetic).to_json())
    run_arm(REAL, train, val, test, recipe, args.seeds, args.steps, real_step)
    run_arm(AUGMENTED, augmented_set(train, synthetic), val, test, recipe, args.seeds, args.steps, step)
    step("protocol", lambda: {"recipe": recipe.__dict__ | {"epochs": "step-matched"}, "steps": args.steps,
                              "classifier_seeds": args.seeds, "synthetic_per_class": args.synthetic_per_class,
                              "command": f"python benchmarks/few_shot_augmentation.py --units {family}:{k} "
                                         f"--seeds {args.seeds} --steps {args.steps} "
                                         f"--synthetic-per-class {args.synthetic_per_class}"
                                         + ("" if args.generator_steps is None
                                            else f" --generator-steps {args.generator_steps}")})
    return True


def finished(out: Path, seeds: int) -> dict[tuple[str, int], dict]:
    """Every unit whose two arms have all their seeds, as {(family, k): summary}."""
    units = {}
    for path in sorted(out.glob("*-k*.json")):
        family, _, k = path.stem.rpartition("-k")
        if family == REAL:
            continue
        real_path = out / f"real-k{k}.json"
        parts = json.loads(path.read_text())
        real = json.loads(real_path.read_text()) if real_path.is_file() else {}
        arms = ([real.get(f"{REAL}-seed{s}") for s in range(seeds)],
                [parts.get(f"{AUGMENTED}-seed{s}") for s in range(seeds)])
        if all(r is not None for arm in arms for r in arm):
            units[(family, int(k))] = {"summary": summarise(*arms), "fidelity": parts["fidelity"],
                                       "generator_steps": parts["generator"]["steps"]}
    return units


def table(units: dict) -> str:
    rows = ["| family | real images per class | generator steps | real only | real + synthetic | gain (paired) | "
            "synthetic class fidelity |", "|---|---:|---:|---:|---:|---:|---:|"]
    for (family, k), unit in sorted(units.items()):
        s = unit["summary"]["balanced_accuracy"]
        rows.append(f"| {family} | {k} | {unit['generator_steps']:,} | {s[REAL]['mean']:.3f} ± {s[REAL]['std']:.3f} | "
                    f"{s[AUGMENTED]['mean']:.3f} ± {s[AUGMENTED]['std']:.3f} | "
                    f"{s['gain']['mean']:+.3f} ± {s['gain']['std']:.3f} | "
                    f"{ClassFidelity.from_json(unit['fidelity']).macro:.3f} |")
    return "\n".join(rows)


def plot(units: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    families = sorted({family for family, _ in units})
    for i, family in enumerate(families):
        ks = sorted(k for f, k in units if f == family)
        for arm, style in ((REAL, ":"), (AUGMENTED, "-")):
            stats = [units[(family, k)]["summary"]["balanced_accuracy"][arm] for k in ks]
            label = "real only" if arm == REAL else f"real + {family} synthetic"
            if arm == REAL and i:
                label = None  # the real-only arm is the same for every family
            ax.errorbar(ks, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], fmt="o" + style,
                        color="k" if arm == REAL else f"C{i}", capsize=3, label=label)
    ax.set_xscale("log")
    regimes = sorted({k for _, k in units})
    ax.set_xticks(regimes, [str(k) for k in regimes])  # the regimes themselves, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("real images per class")
    ax.set_ylabel("balanced accuracy on the real test split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, seeds: int) -> None:
    units = finished(out, seeds)
    if not units:
        return
    write_json(out / "summary.json", {f"{family}-k{k}": unit for (family, k), unit in sorted(units.items())})
    plot(units, out / "few_shot.png")
    write_text(out / "README.md", "# Few-shot augmentation with the record recipes\n\n"
               + __doc__.split("\n\n", 1)[1] + f"\nBalanced accuracy, mean ± std over {seeds} classifier seeds "
               "(the gain: mean ± std of the per-seed differences).\n\n" + table(units)
               + "\n\n![few-shot augmentation](few_shot.png)\n")


def parse_unit(text: str) -> tuple[str, int]:
    family, sep, k = text.partition(":")
    if not sep or not k.isdigit() or int(k) < 1 or family not in study_families():
        sys.exit(f"--units takes FAMILY:K with a study family ({', '.join(study_families())}) and "
                 f"K >= 1 real images per class, got {text!r}")
    return family, int(k)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", nargs="+", required=True, metavar="FAMILY:K")
    parser.add_argument("--seeds", type=int, default=3, help="classifier seeds per arm (default 3)")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps of every classifier (default 300)")
    parser.add_argument("--synthetic-per-class", type=int, default=500, help="default 500")
    parser.add_argument("--generator-steps", type=int, default=None,
                        help="training steps of every generator (default: its record recipe's)")
    parser.add_argument("--out", default=str(ROOT / "results" / "record" / "few-shot"))
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after this many minutes, keeping every finished part (a re-run resumes)")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    units = [parse_unit(u) for u in args.units]
    out, cache = Path(args.out), default_cache_dir() / "few-shot"
    deadline = None if args.max_minutes is None else time.monotonic() + 60 * args.max_minutes
    data = load_bloodmnist(args.data)
    try:
        for family, k in units:
            if not run_unit(family, k, args, data, out, cache, deadline):
                break
    except OutOfTime as stop:
        print(f"stopped by --max-minutes before {stop}; run the same command again to resume")
    write_report(out, args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
