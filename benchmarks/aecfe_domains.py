"""AE-CFE's cross-domain table on BloodMNIST's shifted domains: a random forest trained on one domain's
cells, tested on the same test cells in every domain, for each feature space:

    python benchmarks/aecfe_domains.py [--input inception|pixels] [--methods raw ae normal adversarial mmd]
        [--steps 1500] [--seeds 5] [--max-minutes 150] [--umap]

Domains are those of `bloodgen domains make` (seed 0): A and its stain, scope and artificial shifts, with
disjoint train parts and the same val/test cells. The input h is frozen Inception pool3 or the pixels.
Methods (the columns of the study's Tables 3.2-3.3): `raw` (h + forest, no autoencoder), `ae` (the
autoencoder trained on every
domain's train part, no domain loss), `normal`, `adversarial` and `mmd` (the same with the study's domain
losses; `mmd` is AE-CFE itself), all with bottleneck 100, MSE + SSIM, beta 1. Each method is a unit: the
autoencoder trains resumably in the cache folder, then for every training domain a forest per seed
(sklearn's 100 trees) is scored in every domain. Finished units are saved in
results/record/aecfe/<input>-<method>.json with the tables in README.md. On one CPU core an autoencoder of
1,500 steps (256 images a step, shared by the four domains) takes about 40 minutes; Inception features of
the four domain files take hours on a CPU (they are cached), pixels none.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from bloodgen.cellfeatures.experiment import InputSpec, domain_inputs, load_domain  # noqa: E402
from bloodgen.cellfeatures.probe import TREES, ProbeScores, forest_probe  # noqa: E402
from bloodgen.cellfeatures.train import AEOptions, embed, train_autoencoder  # noqa: E402
from bloodgen.data.bloodmnist import CLASS_NAMES  # noqa: E402
from bloodgen.data.domains import DOMAINS, SOURCE_DOMAIN, make_domains  # noqa: E402
from bloodgen.metrics.features import default_cache_dir  # noqa: E402
from bloodgen.metrics.records import Figure  # noqa: E402
from bloodgen.provenance import environment, write_text  # noqa: E402
from bloodgen.report.plots import pyplot  # noqa: E402
from bloodgen.study.stages import saved_parts  # noqa: E402

OUT = ROOT / "results" / "record" / "aecfe"
INPUTS = ("inception", "pixels")
UMAP_PER_DOMAIN = 500  # test cells per domain in the UMAP figure
METHODS = ("raw", "ae", "normal", "adversarial", "mmd")
SHIFTED = tuple(DOMAINS)


def domain_files(cache: Path) -> dict[str, Path]:
    folder = cache / "aecfe-domains"
    paths = {name: folder / f"{name}.npz" for name in (SOURCE_DOMAIN, *SHIFTED)}
    if not all(p.is_file() for p in paths.values()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make_domains(load_domain(None), folder, list(SHIFTED), seed=0)
    return paths


def features_by_domain(source: str, method: str, files: dict[str, Path], steps: int, cache: Path) -> dict:
    """Each domain's (train, test) features in the method's space, with labels."""
    spec = InputSpec(source, "whole")
    data = {name: load_domain(str(path)) for name, path in files.items()}
    inputs = {name: {split: domain_inputs(d, spec, split) for split in ("train", "test")} for name, d in data.items()}
    if method == "raw":
        return {name: {s: (x.features, x.labels) for s, x in splits.items()} for name, splits in inputs.items()}
    options = AEOptions(alignment="none" if method == "ae" else method, steps=steps)
    targets = [inputs[name]["train"] for name in SHIFTED]
    run = cache / "aecfe-runs" / f"{source}-{method}"
    provenance = {"input": source, "domains": {n: d.provenance() for n, d in data.items()}}
    model = train_autoencoder(inputs[SOURCE_DOMAIN]["train"], targets, options, run, provenance=provenance)
    return {name: {s: (embed(model, x), x.labels) for s, x in splits.items()} for name, splits in inputs.items()}


def run_method(source: str, method: str, files: dict[str, Path], steps: int, seeds: int, cache: Path) -> dict:
    step = saved_parts(OUT / f"{source}-{method}.json", f"{source}, {method}")
    features = None
    for train_domain in files:
        def probe():
            nonlocal features
            features = features or features_by_domain(source, method, files, steps, cache)
            scores = forest_probe(features[train_domain]["train"],
                                  {name: f["test"] for name, f in features.items()}, seeds=seeds, trees=TREES)
            return {name: s.to_json() for name, s in scores.items()}

        step(f"trained on {train_domain}", probe)
    return step("protocol", lambda: {"input": source, "steps": steps if method != "raw" else None,
                                     "seeds": seeds, "trees": TREES, "environment": environment()})


def umap_figure(source: str, methods: list[str], files: dict[str, Path], steps: int, cache: Path) -> Path:
    """Test cells of every domain in two UMAP dimensions, per method: coloured by domain (aligned features
    mix the domains) and by class (useful features keep the classes apart)."""
    try:
        import umap
    except ImportError:
        sys.exit("the UMAP figure needs umap-learn: pip install umap-learn")
    plt = pyplot()
    fig, axes = plt.subplots(len(methods), 2, figsize=(8, 3.6 * len(methods)), squeeze=False)
    rng = np.random.default_rng(0)
    for row, method in zip(axes, methods):
        test = {name: f["test"] for name, f in features_by_domain(source, method, files, steps, cache).items()}
        picks = {name: rng.choice(len(y), UMAP_PER_DOMAIN, replace=False) for name, (_, y) in test.items()}
        points = umap.UMAP(random_state=0).fit_transform(np.concatenate([test[n][0][p] for n, p in picks.items()]))
        domains = np.repeat(np.arange(len(picks)), UMAP_PER_DOMAIN)
        classes = np.concatenate([test[n][1][p] for n, p in picks.items()])
        for ax, colour, names in ((row[0], domains, list(picks)), (row[1], classes, CLASS_NAMES)):
            for k, name in enumerate(names):
                ax.scatter(*points[colour == k].T, s=2, color=f"C{k}", label=name)
            ax.set_xticks([]), ax.set_yticks([])
        row[0].set_title(f"{source}, {method}: by domain", fontsize=9)
        row[1].set_title(f"{source}, {method}: by class", fontsize=9)
    for ax in axes[0]:
        ax.legend(fontsize=6, markerscale=3, loc="best")
    path = OUT / f"umap-{source}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _accuracy(block: dict) -> Figure:
    return ProbeScores.from_json(block).accuracy


def _cell(figure: Figure) -> str:
    return f"{figure.mean:.3f} ± {figure.std:.3f}" if figure.std is not None else f"{figure.mean:.3f}"


def summary(done: dict[str, dict], domains: list[str]) -> str:
    """Per unit: the in-domain accuracy (the diagonal) and what survives a move to another domain."""
    lines = ["| input, method | in-domain (mean of the diagonal) | other domains (mean off the diagonal) |",
             "|---|---:|---:|"]
    for unit, result in done.items():
        rows = {t: result[f"trained on {t}"] for t in domains}
        inside = np.mean([_accuracy(rows[t][t]).mean for t in domains])
        across = np.mean([_accuracy(rows[t][d]).mean for t in domains for d in domains if d != t])
        lines.append(f"| {unit} | {inside:.3f} | {across:.3f} |")
    return "\n".join(lines)


def table(done: dict[str, dict], domains: list[str]) -> str:
    lines = [summary(done, domains), ""]
    for unit, result in done.items():
        lines += [f"### {unit}", "", "| trained on | " + " | ".join(domains) + " |",
                  "|---|" + "---:|" * len(domains)]
        for train_domain in domains:
            row = result[f"trained on {train_domain}"]
            lines.append(f"| {train_domain} | " + " | ".join(_cell(_accuracy(row[d])) for d in domains) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", choices=INPUTS, default="inception", help="h: Inception pool3 or pixels")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=AEOptions().steps)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-minutes", type=float, default=None, help="start no method after this many minutes")
    parser.add_argument("--umap", action="store_true", help="then draw umap-<input>.png of the finished methods")
    args = parser.parse_args()
    started, cache = time.perf_counter(), default_cache_dir()
    files = domain_files(cache)
    for method in args.methods:
        if args.max_minutes is not None and time.perf_counter() - started > 60 * args.max_minutes:
            print(f"time limit: {method} and later methods wait for the same command")
            break
        run_method(args.input, method, files, args.steps, args.seeds, cache)
    units = [f"{source}-{m}" for source in INPUTS for m in METHODS]
    done = {u: json.loads((OUT / f"{u}.json").read_text()) for u in units if (OUT / f"{u}.json").is_file()}
    complete = {u: r for u, r in done.items() if "protocol" in r}
    if args.umap:
        finished = [m for m in METHODS if f"{args.input}-{m}" in complete]
        print(f"UMAP figure: {umap_figure(args.input, finished, files, args.steps, cache)}")
    waiting = [u for u in units if u not in complete]
    text = table(complete, list(files)) + (f"\nNot measured yet (the same command continues): {', '.join(waiting)}.\n"
                                           if waiting else "")
    figures = "".join(f"\n![UMAP of the test cells, {p.stem[5:]} input]({p.name})\n"
                      for p in sorted(OUT.glob("umap-*.png")))
    write_text(OUT / "README.md", README.format(command="python benchmarks/aecfe_domains.py", table=text + figures))
    return 0


README = """# AE-CFE across shifted domains

    {command} --input pixels|inception [--umap]

Random-forest accuracy (mean ± std over forest seeds), trained on the train part of one domain (rows),
tested on the same test cells in every domain (columns). Domains from `bloodgen domains make` (seed 0);
features per method as in benchmarks/aecfe_domains.py. The diagonal is the in-domain ceiling; the study's
question is how much of it survives off the diagonal, and whether the domain losses keep more of it.

{table}
"""


if __name__ == "__main__":
    sys.exit(main())
