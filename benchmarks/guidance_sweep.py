"""The ddpm's classifier-free guidance scale as a trade-off a user can pick from:

    python benchmarks/guidance_sweep.py [--run pretrained:ddpm] [--scales 1.0 1.5 2.0 3.0] [--max-minutes 90]

For every scale: N = 5,000 samples in the training class mix (seed 0), their FID with both real-vs-real
floors at the same N, class fidelity by the reference classifier, and train-on-synthetic/test-on-real (the
reference recipe trained on the 5,000 samples, scored on the real test split). Each scale is a unit and each
of its three parts is saved as it finishes (results/record/guidance/g<scale>.json; samples kept in the cache
folder), so the sweep resumes part by part. The table and plot go to results/record/guidance/README.md and
guidance.png. On 2 CPU cores a scale takes about an hour (sampling 25-45 min, features ~12, classifier ~20),
plus about 40 minutes once per cache folder for the real images' Inception features (one core alone: about
twice as long).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.reference import ClassifierRecipe, reference_classifier  # noqa: E402
from bloodgen.classify.scores import ClassificationScores  # noqa: E402
from bloodgen.classify.utility import ClassFidelity, class_fidelity, train_and_test  # noqa: E402
from bloodgen.data import load_bloodmnist  # noqa: E402
from bloodgen.metrics.features import default_cache_dir  # noqa: E402
from bloodgen.metrics.protocol import calculate_metrics  # noqa: E402
from bloodgen.provenance import file_sha256, saved_parts, write_text  # noqa: E402
from bloodgen.report.plots import pyplot  # noqa: E402
from bloodgen.sampling.api import PRIOR, draw_labels, load_model, sample_resumably  # noqa: E402


DEFAULT_SCALES = (1.0, 1.5, 2.0, 3.0)


# Images per saved piece of a scale's draw: a cut run loses at most this many (about 2 minutes on 2 cores).
CHUNK = 250


def scale_samples(model, scale: float, n: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """The scale's samples (seed 0, the training class mix), from the cache when an earlier run made them
    with the same weights and N, drawn CHUNK images at a time so a cut run resumes where it stopped."""
    path = cache / f"{file_sha256(model.source)[:16]}-g{scale}-n{n}.npz"
    labels = draw_labels(n, 0, PRIOR, model.class_counts)
    return sample_resumably(model, labels, n, 0, path, CHUNK, desc=f"guidance {scale}", guidance=scale), labels


def run_scale(model, scale: float, n: int, data, out: Path, cache: Path) -> dict:
    step = saved_parts(out / f"g{scale}.json", f"guidance {scale}")
    # Drawn or loaded only when a part is still to compute: a finished scale costs nothing.
    samples = functools.cache(lambda: scale_samples(model, scale, n, cache))
    reference = functools.cache(lambda: reference_classifier(data))
    evaluation = step("evaluation", lambda: calculate_metrics(samples()[0], n=n, seeds=(0,), floor=True,
                                                               data=data.path, metrics=("fid", "kid", "prdc")))
    fidelity = step("fidelity", lambda: class_fidelity(reference()[0], *samples()).to_json())
    tstr = step("tstr", lambda: train_and_test(samples(), data.split("val"), data.split("test"),
                                               ClassifierRecipe(**reference()[1]["recipe"]), desc="train-on-synthetic"))
    return {"evaluation": evaluation, "fidelity": fidelity, "tstr": tstr}


def table(results: dict[float, dict], real_trained: dict) -> str:
    rows = ["| guidance | FID | disjoint floor | precision | recall | class fidelity (macro) | TSTR accuracy | "
            "TSTR balanced accuracy |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    real = ClassificationScores.from_json(real_trained)
    for scale, r in sorted(results.items()):
        e, tstr = r["evaluation"], ClassificationScores.from_json(r["tstr"])
        rows.append(f"| {scale} | {e['fid']['mean']:.2f} | {e['floor']['disjoint']['fid']['mean']:.2f} | "
                    f"{e['precision']['mean']:.3f} | {e['recall']['mean']:.3f} | "
                    f"{ClassFidelity.from_json(r['fidelity']).macro:.3f} | {tstr.accuracy:.3f} | "
                    f"{tstr.balanced_accuracy:.3f} |")
    rows.append(f"| real-trained | | | | | | {real.accuracy:.3f} | {real.balanced_accuracy:.3f} |")
    return "\n".join(rows)


def plot(results: dict[float, dict], n: int, path: Path) -> None:
    plt = pyplot()
    scales = sorted(results)
    fig, left = plt.subplots(figsize=(6, 4))
    left.plot(scales, [results[s]["evaluation"]["fid"]["mean"] for s in scales], "o-", color="C0", label="FID")
    left.plot(scales, [results[s]["evaluation"]["floor"]["disjoint"]["fid"]["mean"] for s in scales], ":",
              color="C0", label="FID floor (disjoint)")
    left.set_xlabel("guidance scale")
    left.set_ylabel(f"FID (N = {n:,})", color="C0")
    right = left.twinx()
    right.plot(scales, [ClassFidelity.from_json(results[s]["fidelity"]).macro for s in scales], "s-", color="C1",
               label="class fidelity")
    right.plot(scales, [ClassificationScores.from_json(results[s]["tstr"]).accuracy for s in scales], "^-",
               color="C2", label="TSTR accuracy")
    right.set_ylabel("fraction")
    fig.legend(loc="upper center", ncol=4, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _missing(scales: list[float], results: dict[float, dict]) -> str:
    left = [str(s) for s in scales if s not in results]
    return f"\n\nNot measured yet (the same command continues): guidance {', '.join(left)}." if left else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="pretrained:ddpm", help="the ddpm: pretrained:ddpm or a run folder")
    parser.add_argument("--scales", type=float, nargs="+", default=list(DEFAULT_SCALES))
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--out", default=str(ROOT / "results" / "record" / "guidance"))
    parser.add_argument("--max-minutes", type=float, default=None, help="start no scale after this many minutes")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    out, started = Path(args.out), time.monotonic()
    data, model = load_bloodmnist(args.data), load_model(args.run)
    for scale in args.scales:
        if args.max_minutes is not None and (time.monotonic() - started) / 60 > args.max_minutes:
            print(f"guidance {scale}: not started (--max-minutes {args.max_minutes} reached)")
        else:
            run_scale(model, scale, args.n, data, out, default_cache_dir() / "guidance")
    # The table holds every finished scale in the folder, this run's and earlier runs'.
    results = {float(p.stem[1:]): json.loads(p.read_text()) for p in sorted(out.glob("g*.json"))}
    results = {scale: r for scale, r in sorted(results.items()) if len(r) == 3}
    if results:
        plot(results, args.n, out / "guidance.png")
        write_text(out / "README.md", "# Guidance sweep of the record ddpm\n\n" + __doc__.split("\n\n", 1)[1]
                   + f"\nModel: `{args.run}`. Command: `python benchmarks/guidance_sweep.py --run {args.run}`.\n\n"
                   + table(results, reference_classifier(data)[1]["test"])
                   + _missing(sorted({*args.scales, *DEFAULT_SCALES}), results)
                   + "\n\n![guidance](guidance.png)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
