"""Do the metrics agree? FID, KID, precision/recall, a BloodMNIST-classifier Inception-Score analogue and a
downstream macro F1, over many models of differing quality (the AGGAN study's Fig. 6):

    python benchmarks/metric_agreement.py --domains DIR [--checkpoints DIR ...] [--generators RUN ...]
        [--temperatures 0.6 1.0 1.4] [--n 1000] [--out results/translation/agreement] [--max-minutes M]

Models ("candidates"):
- every checkpoint file (*.pt) in each --checkpoints folder: a translation run's EMA generators at some step
  along training, scored on N test cells of its source domain translated into A;
- every --generators run folder (e.g. the record runs of gan, cgan and vae), sampled with N images, class
  balanced, seed 0; a vae once per --temperatures value.
Every candidate's N images are compared with domain A's images (DIR/A.npz: the same reference for all, its
Inception features cached once): FID, KID, precision and recall (k = 3). The classifier is S_A, the cpu
reference recipe trained on A's train part (cached): its Inception-Score analogue exp(E KL(p(y|x) || p(y)))
on the images, and its macro F1 against the labels the images should have (the cells' own for translations,
the requested class for conditional generators; none for an unconditional one). One JSON per candidate in
OUT/units/ (the script resumes candidate by candidate), then Pearson and Spearman correlations of every pair
with bootstrap 95 % intervals (2,000 resamples of the candidates) in OUT/agreement.json and README.md, and
the joint plots in OUT/agreement.png. Run it from the folder the translation runs were trained in (their
configs name the source domain's file relative to it). On 2 CPU cores a candidate costs about 2-3 minutes at N = 1,000
(Inception features), plus about 25 minutes once for A's images.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.recipe import RECIPES  # noqa: E402
from bloodgen.classify.reference import classification_report, predict_logits, reference_classifier  # noqa: E402
from bloodgen.data.domains import read_domain  # noqa: E402
from bloodgen.metrics.isc import classifier_score, log_softmax  # noqa: E402
from bloodgen.metrics.protocol import calculate_metrics  # noqa: E402
from bloodgen.metrics.registry import FID, KID, PRECISION, RECALL  # noqa: E402
from bloodgen.models.translation import TO_A, translate_array  # noqa: E402
from bloodgen.provenance import portable_path, write_json, write_text  # noqa: E402
from bloodgen.report.plots import pyplot  # noqa: E402
from bloodgen.sampling.api import BALANCED, load_model, sample  # noqa: E402

FIGURES = (("fid", "FID"), ("kid", "KID"), ("precision", "precision"), ("recall", "recall"),
           ("classifier_is", "classifier IS"), ("macro_f1", "downstream macro F1"))
BOOTSTRAP = 2000


def translation_candidates(folders: list[Path], n: int):
    """(name, make) per checkpoint: make() -> (images, labels, record) of N of its source's test cells in A."""
    for folder in folders:
        for path in sorted(folder.glob("*.pt")):
            def make(path=path):
                model = load_model(path)
                source = model.family.source
                images, labels = source.split("test")
                pick = np.random.default_rng(0).permutation(len(labels))[:n]
                translated = translate_array(model.network, images[pick], TO_A)[0]
                return translated, labels[pick], {"kind": "translation", "model": model.spec.model,
                                                  "step": model.step, "source": portable_path(str(path))}
            # Named by the folders above it too: runs keep their one checkpoint as checkpoints/checkpoint.pt.
            yield "-".join([*path.resolve().parent.parts[-2:], path.stem]), make


def generator_candidates(runs: list[Path], temperatures: list[float], n: int):
    for run in runs:
        spec = json.loads((run / "config.json").read_text())
        settings = [{"temperature": t} for t in temperatures] if spec["model"] == "vae" else [{}]
        for options in settings:
            def make(run=run, options=options):
                model = load_model(run)
                images, labels = sample(model, n, 0, classes=BALANCED, **options)
                return images, labels, {"kind": "generator", "model": model.spec.model, "step": model.step,
                                        "source": portable_path(str(run)), "sampler_options": options}
            suffix = "".join(f"-{k}{v}" for k, v in options.items())
            yield f"{run.name}{suffix}", make


def score(images, labels, record: dict, reference: Path, s_a, n: int) -> dict:
    result = calculate_metrics(images, n=min(n, len(images)), seeds=(0,), floor=False, data=reference,
                               metrics=("fid", "kid", "prdc"), progress=False)
    logits = predict_logits(s_a, images)
    figures = {key.key: result[key.key]["mean"] for key in (FID, KID, PRECISION, RECALL)}
    figures["classifier_is"] = classifier_score(logits)[0]
    figures["macro_f1"] = (classification_report(labels, np.exp(log_softmax(logits))).macro_f1
                           if labels is not None else None)
    return {**record, "n": int(len(images)), "figures": figures}


def correlations(units: list[dict]) -> dict:
    """Pearson and Spearman of every pair of figures over the candidates that have both, with bootstrap 95 %
    intervals over resampled candidates."""
    rng = np.random.default_rng(0)
    out = {}
    for (a, _), (b, _) in itertools.combinations(FIGURES, 2):
        pairs = np.array([(u["figures"][a], u["figures"][b]) for u in units
                          if u["figures"].get(a) is not None and u["figures"].get(b) is not None])
        if len(pairs) < 5:
            continue
        entry = {"n": len(pairs)}
        for name, fn in (("pearson", pearsonr), ("spearman", spearmanr)):
            draws = []
            for _ in range(BOOTSTRAP):
                sample_ = pairs[rng.integers(len(pairs), size=len(pairs))]
                if np.ptp(sample_[:, 0]) > 0 and np.ptp(sample_[:, 1]) > 0:
                    draws.append(fn(sample_[:, 0], sample_[:, 1])[0])
            entry[name] = {"r": float(fn(pairs[:, 0], pairs[:, 1])[0]),
                           "ci95": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]}
        out[f"{a}|{b}"] = entry
    return out


def joint_plots(units: list[dict], path: Path) -> None:
    plt = pyplot()
    k = len(FIGURES)
    fig, axes = plt.subplots(k, k, figsize=(2.2 * k, 2.2 * k))
    colours = {"translation": "tab:blue", "generator": "tab:orange"}
    for (i, (a, la)), (j, (b, lb)) in itertools.product(enumerate(FIGURES), repeat=2):
        ax = axes[i, j]
        for kind, colour in colours.items():
            xy = [(u["figures"][b], u["figures"][a]) for u in units if u["kind"] == kind
                  and u["figures"].get(a) is not None and u["figures"].get(b) is not None]
            if xy and i != j:
                ax.scatter(*zip(*xy), s=8, color=colour, label=kind)
        if i == j:
            ax.text(0.5, 0.5, la, ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.tick_params(labelsize=6)
    axes[0, 1].legend(fontsize=6)
    fig.suptitle("Metrics over every candidate model (rows: y, columns: x)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def readme(units: list[dict], table: dict, args) -> str:
    rows = [f"| {a} | {b} | {e['n']} | {e['pearson']['r']:.2f} [{e['pearson']['ci95'][0]:.2f}, "
            f"{e['pearson']['ci95'][1]:.2f}] | {e['spearman']['r']:.2f} [{e['spearman']['ci95'][0]:.2f}, "
            f"{e['spearman']['ci95'][1]:.2f}] |" for key, e in table.items() for a, b in [key.split("|")]]
    kinds = {k: sum(u["kind"] == k for u in units) for k in ("translation", "generator")}
    return "\n".join([
        "# Do the metrics agree?", "",
        f"{len(units)} candidate models ({kinds['translation']} translation checkpoints, {kinds['generator']} "
        f"generator settings), N = {args.n} images each against domain A's images; classifier: S_A (cpu recipe).",
        "", f"Made with `{' '.join(['python benchmarks/metric_agreement.py', *map(portable_path, sys.argv[1:])])}`.",
        "",
        "| figure | figure | candidates | Pearson r [95 % CI] | Spearman rho [95 % CI] |", "|---|---|---|---|---|",
        *rows, "", "![joint plots](agreement.png)", ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domains", type=Path, required=True, help="folder of `bloodgen domains make` (A.npz)")
    p.add_argument("--checkpoints", type=Path, nargs="*", default=[], help="folders of translation checkpoints")
    p.add_argument("--generators", type=Path, nargs="*", default=[], help="generator run folders")
    p.add_argument("--temperatures", type=float, nargs="*", default=[0.6, 1.0, 1.4], help="vae temperatures")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "translation" / "agreement")
    p.add_argument("--max-minutes", type=float, default=None, help="stop starting candidates after this long")
    args = p.parse_args()
    start = time.time()
    reference = args.domains / "A.npz"
    s_a, _ = reference_classifier(read_domain(reference), RECIPES["cpu"])
    (args.out / "units").mkdir(parents=True, exist_ok=True)
    candidates = [*translation_candidates(args.checkpoints, args.n),
                  *generator_candidates(args.generators, args.temperatures, args.n)]
    for name, make in candidates:
        path = args.out / "units" / f"{name}.json"
        if path.is_file():
            continue
        if args.max_minutes is not None and time.time() - start > 60 * args.max_minutes:
            print("time limit reached: rerun the same command to continue", flush=True)
            break
        t0 = time.time()
        write_json(path, score(*make(), reference, s_a, args.n))
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    units = [json.loads(f.read_text()) for f in sorted((args.out / "units").glob("*.json"))]
    table = correlations(units)
    write_json(args.out / "agreement.json", {"n": args.n, "candidates": len(units), "correlations": table})
    joint_plots(units, args.out / "agreement.png")
    write_text(args.out / "README.md", readme(units, table, args))


if __name__ == "__main__":
    main()
