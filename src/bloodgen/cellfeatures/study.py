"""`bloodgen features study`: AE-CFE's cross-domain table (Tables 3.2-3.3) as resumable units.

The domains are those of `bloodgen domains make` (A and its shifts, disjoint train parts, the same test
cells). For each method a random forest per seed, trained on one domain's train part, is scored on the
test cells of every domain: `raw` (the input h + forest, no autoencoder), `ae` (the autoencoder trained on
every domain's train part, no domain loss), `normal`, `adversarial` and `mmd` (the same with the study's
domain losses; `mmd` is AE-CFE). Each (input, method) is a unit whose parts are kept in
OUT/<input>-<method>.json as they finish, its autoencoder in OUT/runs/<input>-<method>/ (resumable), and
OUT/README.md holds the tables (with OUT/umap-<input>.png when asked for). The oracle, `resnet18`, is the
reference ResNet-18 trained on each domain's labelled images (OUT/resnet18.json, whatever the input): what a
network trained in the target lab would reach.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bloodgen.cellfeatures.experiment import InputSpec, domain_inputs, load_domain
from bloodgen.cellfeatures.options import METHODS, ORACLE, AEOptions
from bloodgen.cellfeatures.probe import ProbeScores, forest_probe, scores_over_seeds
from bloodgen.cellfeatures.train import embed, train_autoencoder
from bloodgen.classify.recipe import ClassifierRecipe
from bloodgen.classify.reference import default_recipe, predict_proba, reference_classifier
from bloodgen.data.bloodmnist import CLASS_NAMES
from bloodgen.data.domains import DOMAINS, SOURCE_DOMAIN
from bloodgen.errors import UserError
from bloodgen.metrics.records import Figure
from bloodgen.provenance import environment, saved_parts, write_text
from bloodgen.report.document import Document, Heading, Image, Paragraph, Table, to_markdown
from bloodgen.report.plots import pyplot

SPLITS = ("train", "test")
UMAP_PER_DOMAIN = 500  # test cells per domain in the UMAP figure


@dataclass(frozen=True)
class FeatureStudy:
    """What the study runs: the domain files (by name, A first), the input, the methods, the autoencoder's
    options (its alignment is set per method), the forest seeds, and the oracle's recipe (None: the device's
    default) and classifier seeds."""

    domains: dict[str, Path]
    out: Path
    spec: InputSpec = InputSpec()
    methods: tuple[str, ...] = METHODS
    options: AEOptions = AEOptions()
    seeds: int = 5
    recipe: ClassifierRecipe | None = None
    classifier_seeds: int = 3

    def unit(self, method: str) -> str:
        return method if method == ORACLE else f"{self.spec.source}-{method}"

    def oracle_recipe(self) -> ClassifierRecipe:
        return self.recipe or default_recipe()


def domain_files(folder: str | Path) -> dict[str, Path]:
    """A.npz and every shifted domain's file found in a `bloodgen domains make` folder."""
    folder = Path(folder)
    files = {name: folder / f"{name}.npz" for name in (SOURCE_DOMAIN, *DOMAINS) if (folder / f"{name}.npz").is_file()}
    if SOURCE_DOMAIN not in files or len(files) < 2:
        raise UserError(f"{folder} holds no domain files: run `bloodgen domains make --out {folder}` first")
    return files


def method_features(study: FeatureStudy, method: str, progress: bool = True) -> dict:
    """Each domain's (features, labels) per split in the method's space."""
    data = {name: load_domain(str(path)) for name, path in study.domains.items()}
    inputs = {name: {s: domain_inputs(d, study.spec, s) for s in SPLITS} for name, d in data.items()}
    if method == "raw":
        return {name: {s: (x.features, x.labels) for s, x in splits.items()} for name, splits in inputs.items()}
    options = replace(study.options, alignment="none" if method == "ae" else method)
    targets = [splits["train"] for name, splits in inputs.items() if name != SOURCE_DOMAIN]
    provenance = {"input": study.spec.source, "view": study.spec.view,
                  "domains": {n: d.provenance() for n, d in data.items()}}
    model = train_autoencoder(inputs[SOURCE_DOMAIN]["train"], targets, options,
                              study.out / "runs" / study.unit(method), provenance=provenance, progress=progress)
    return {name: {s: (embed(model, x), x.labels) for s, x in splits.items()} for name, splits in inputs.items()}


def oracle_probe(study: FeatureStudy, train_domain: str) -> dict[str, ProbeScores]:
    """The reference ResNet-18, one per classifier seed, trained on one domain's labelled images (cached per
    data file and recipe, so translate-eval's oracles are reused), scored on every domain's test cells."""
    data = {name: load_domain(str(path)) for name, path in study.domains.items()}
    recipe = study.oracle_recipe()
    per_seed: dict[str, list] = {name: [] for name in data}
    for seed in range(study.classifier_seeds):
        model, _ = reference_classifier(data[train_domain], replace(recipe, seed=seed), cache_dir=study.spec.cache_dir)
        for name, domain in data.items():
            per_seed[name].append((domain.labels("test"), predict_proba(model, domain.images("test")).argmax(1)))
    return scores_over_seeds(per_seed)


def _plan(study: FeatureStudy, method: str) -> dict:
    if method == ORACLE:
        recipe = {k: v for k, v in vars(study.oracle_recipe()).items() if k != "seed"}  # the seeds are below
        return {"oracle": ORACLE, "recipe": recipe, "seeds": study.classifier_seeds, "domains": list(study.domains)}
    alignment = "none" if method == "ae" else method
    autoencoder = None if method == "raw" else {**vars(study.options), "alignment": alignment}
    return {"input": study.spec.source, "view": study.spec.view, "autoencoder": autoencoder, "seeds": study.seeds,
            "domains": list(study.domains)}


def run_method(study: FeatureStudy, method: str, progress: bool = True) -> dict:
    """One unit: a forest per training domain, scored in every domain; resumes part by part, and refuses a
    unit begun with other options."""
    path = study.out / f"{study.unit(method)}.json"
    step, plan = saved_parts(path, study.unit(method)), _plan(study, method)
    if step("plan", lambda: plan) != json.loads(json.dumps(plan)):
        raise UserError(f"{path} was begun with other options: use another --out or the same options")
    features = None
    for train_domain in study.domains:
        def probe():
            nonlocal features
            if method == ORACLE:
                return {name: s.to_json() for name, s in oracle_probe(study, train_domain).items()}
            features = features or method_features(study, method, progress)
            scores = forest_probe(features[train_domain]["train"],
                                  {name: f["test"] for name, f in features.items()}, seeds=study.seeds)
            return {name: s.to_json() for name, s in scores.items()}

        step(f"trained on {train_domain}", probe)
    return step("protocol", lambda: {"environment": environment()})


def run_study(study: FeatureStudy, max_minutes: float | None = None, umap: bool = False,
              progress: bool = True) -> Path:
    """Every method's unit (none starts after `max_minutes`), then the report; returns README.md's path."""
    started = time.perf_counter()
    for method in study.methods:
        if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
            print(f"time limit: {method} and the methods after it wait for the same command")
            break
        run_method(study, method, progress)
    if umap:
        umap_figure(study, [m for m in study.methods if "protocol" in _saved(study.out, study.unit(m))])
    return write_report(study.out, list(study.domains))


def _saved(out: Path, unit: str) -> dict:
    path = out / f"{unit}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def umap_figure(study: FeatureStudy, methods: list[str]) -> Path | None:
    """Test cells of every domain in two UMAP dimensions, per method: coloured by domain (aligned features
    mix the domains) and by class (useful features keep the classes apart). The oracle has no features."""
    try:
        import umap  # optional: the 'analysis' extra
    except ImportError:
        raise UserError("the UMAP figure needs umap-learn: pip install 'bloodgen[analysis]'") from None
    methods = [m for m in methods if m != ORACLE]
    if not methods:
        return None
    plt, rng = pyplot(), np.random.default_rng(0)
    fig, axes = plt.subplots(len(methods), 2, figsize=(8, 3.6 * len(methods)), squeeze=False)
    for row, method in zip(axes, methods):
        test = {name: f["test"] for name, f in method_features(study, method, progress=False).items()}
        picks = {name: rng.choice(len(y), min(UMAP_PER_DOMAIN, len(y)), replace=False)
                 for name, (_, y) in test.items()}
        points = umap.UMAP(random_state=0).fit_transform(np.concatenate([test[n][0][p] for n, p in picks.items()]))
        domains = np.concatenate([np.full(len(p), k) for k, p in enumerate(picks.values())])
        classes = np.concatenate([test[n][1][p] for n, p in picks.items()])
        panels = ((row[0], domains, list(picks), "domain"), (row[1], classes, CLASS_NAMES, "class"))
        for ax, colour, names, what in panels:
            for k, name in enumerate(names):
                ax.scatter(*points[colour == k].T, s=2, color=f"C{k}", label=name)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{study.unit(method)}: by {what}", fontsize=9)
    for ax in axes[0]:
        ax.legend(fontsize=6, markerscale=3)
    path = study.out / f"umap-{study.spec.source}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(figure: Figure) -> str:
    return f"{figure.mean:.3f}" + ("" if figure.std is None else f" ± {figure.std:.3f}")


def _accuracy(block: dict) -> Figure:
    return ProbeScores.from_json(block).accuracy


def summary_rows(units: dict[str, dict], domains: list[str]) -> list[list[str]]:
    """Per unit: the in-domain accuracy (the mean of the diagonal) and what survives a move to another domain."""
    rows = []
    for unit, result in units.items():
        trained = {t: result[f"trained on {t}"] for t in domains}
        inside = np.mean([_accuracy(trained[t][t]).mean for t in domains])
        across = np.mean([_accuracy(trained[t][d]).mean for t in domains for d in domains if d != t])
        rows.append([unit, f"{inside:.3f}", f"{across:.3f}"])
    return rows


def saved_units(out: Path) -> dict[str, dict]:
    """Every unit begun in OUT (a JSON file with a plan; other files are not units), by name."""
    units = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    return {u: r for u, r in units.items() if isinstance(r, dict) and "plan" in r}


def finished_units(out: Path) -> dict[str, dict]:
    """Every unit saved in OUT with all its parts, by name."""
    return {u: r for u, r in saved_units(out).items() if "protocol" in r}


def report_blocks(units: dict[str, dict], domains: list[str]) -> list:
    """The summary table and each unit's table (rows: trained on; columns: tested on)."""
    blocks = [Paragraph(REPORT_TEXT),
              Table(["input, method", "in-domain (mean of the diagonal)", "other domains (mean off the diagonal)"],
                    summary_rows(units, domains), caption="Accuracy (random forest, or the ResNet-18 oracle), in "
                                                          "and across domains")]
    for unit, result in units.items():
        rows = [[t] + [_cell(_accuracy(result[f"trained on {t}"][d])) for d in domains] for t in domains]
        blocks += [Heading(unit, level=3),
                   Table(["trained on"] + domains, rows, caption="accuracy (mean ± std over seeds)")]
    return blocks


def write_report(out: Path, domains: list[str]) -> Path:
    """OUT/README.md from every finished unit in OUT (whatever the input), with the UMAP figures there."""
    finished = finished_units(out)
    waiting = sorted(set(saved_units(out)) - set(finished))
    doc = Document("AE-CFE across shifted domains", report_blocks(finished, domains))
    if waiting:
        doc.add(Paragraph(f"Unfinished (the same command continues): {', '.join(waiting)}."))
    doc.add(*(Image(p.name, f"UMAP of the test cells, {p.stem[5:]} input") for p in sorted(out.glob("umap-*.png"))))
    return write_text(out / "README.md", to_markdown(doc))


REPORT_TEXT = """Random-forest accuracy (mean ± std over forest seeds), trained on the train part of one domain (rows),
tested on the same test cells in every domain (columns). Units `<input>-<method>`: the input h (Inception
pool3 or pixels) and the feature space (`raw`: h itself; `ae`: the autoencoder, no domain loss; `normal`,
`adversarial`, `mmd`: with that domain loss, `mmd` being AE-CFE); `resnet18` is the oracle, a ResNet-18
trained on the images of the row's domain (mean ± std over classifier seeds). The diagonal is the in-domain
ceiling; the question is how much of it survives off the diagonal. Made by `bloodgen features study` (see
its --help)."""
