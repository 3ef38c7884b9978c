"""The study report: what a reader needs to compare the families, built from results.json alone
(plus the run folders' logs and the sample grids it points to)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bloodgen.classify.utility_report import plot_fidelity_confusions, plot_nearest_pairs, utility_blocks
from bloodgen.data.bloodmnist import ALL, CLASS_NAMES, N_CLASSES
from bloodgen.metrics.records import Figure, Floor, figure
from bloodgen.metrics.registry import (COVERAGE, DENSITY, FID, FID_PER_CLASS, KID, PRECISION, PRECISION_PRDC, RECALL,
                                       RECALL_PRDC, study_columns)
from bloodgen.report.document import Document, Heading, Image, Paragraph, Table, write_report
from bloodgen.report.plots import class_rows, plot_curves, plot_heatmap, plot_side_by_side
from bloodgen.study.experiments import EXPERIMENTS
from bloodgen.study.layout import StudyInfo, StudyResults, closest_samples_file
from bloodgen.training.records import read_log

FIGURES_DIR = "figures"

HOW_TO_READ = [
    "**FID** (Fréchet Inception Distance, lower is better) compares the mean and covariance of InceptionV3 "
    "pool3 features of real and generated images. It is biased upwards at small sample sizes, so it is only "
    "comparable between rows computed with the same number of images, which is why the real-vs-real floor "
    "is computed here at exactly the study's N and seeds.",
    "**KID** (Kernel Inception Distance, lower is better, shown x 10^3) is an unbiased estimate of a squared "
    "kernel distance between the same features; at small N it is the more trustworthy of the two.",
    "**Precision** (higher is better) is the share of generated images that fall inside the real images' "
    "feature manifold: realism. **Recall** (higher is better) is the share of real images covered by the "
    "generated manifold: diversity. **Density** and **coverage** are their outlier-robust variants. Each "
    "image's manifold is the ball reaching its k-th nearest neighbour. Published papers use two definitions, "
    "k=3 with closed balls (Kynkäänniemi et al. 2019's code, the comparison table's precision and recall) and "
    "k=5 with open balls (the `prdc` library of Naeem et al. 2020, which also gives density and coverage). "
    "Compare a published figure only with a figure of its own definition.",
    "**Class-averaged FID** compares, class by class, generated cells of class c with real cells of class c: "
    "low only when a conditional model draws each cell type faithfully.",
    "The **same-pool floor** compares two random draws from all {pool:,} images, which share many images: only "
    "a model that reproduces the dataset could reach it. The **disjoint floor** compares two halves with no "
    "image in common: what a perfect model that never copies should approach.",
]


def fmt(value: Figure | None, scale: float = 1.0, decimals: int = 2) -> str:
    if value is None or value.mean is None:
        return "n/a"
    mean, std = value.mean * scale, value.std
    return f"{mean:.{decimals}f}" if std is None else f"{mean:.{decimals}f} ± {std * scale:.{decimals}f}"


def _seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _metric_cells(block: dict) -> list[str]:
    """The comparison table's cells after FID, one per study column of the metric registry."""
    return [fmt(figure(block, c.key), c.scale, c.study_decimals) if c.key in block else c.missing
            for c in study_columns()]


def _floor_rows(results: StudyResults) -> list[tuple[str, dict]]:
    floor = Floor.of(results.floor)
    return [("real vs real, same-pool floor", floor.same_pool),
            (f"real vs real, disjoint floor (N={floor.disjoint_n:,})", floor.disjoint)]


def comparison_table(results: StudyResults) -> Table:
    header = ["row", "FID (sampling seeds)", "FID (training seeds)", *[c.study for c in study_columns()],
              "parameters", "training time", "sampling 10k", "device"]
    # The floor's class-averaged FID (real class c vs real class c) is what a perfect conditional model reaches.
    rows = [[name, fmt(figure(block, FID.key)), "", *_metric_cells(block), "", "", "", ""]
            for name, block in _floor_rows(results)]
    for model, family in results.families.items():
        first = family.runs[0]
        evaluation, train = first.eval, first.summary
        over_training = fmt(figure(family.aggregate, FID.key)) if len(family.runs) > 1 else "1 run"
        rows.append([f"**{model}**", fmt(figure(evaluation, FID.key)), over_training, *_metric_cells(evaluation),
                     f"{train.sampling_parameters / 1e6:.2f} M", _seconds(train.train_time_s),
                     _seconds(first.sampling_seconds_10k), train.device])
    return Table(header, rows, caption="Sampling-seed columns: mean ± std over the protocol's seeds for the first "
                                       "training seed; training-seed column: mean ± std of the per-run means. "
                                       "Precision/recall: k=3, closed balls (Kynkäänniemi et al.).")


def definitions_table(results: StudyResults) -> Table | None:
    """Precision and recall under both published definitions, side by side (None for results without k=5)."""
    blocks = _floor_rows(results) + [(f"**{m}**", f.runs[0].eval) for m, f in results.families.items()]
    if not any(PRECISION_PRDC.key in block for _, block in blocks):
        return None  # results computed before both definitions were recorded
    keys = [c.key for c in (PRECISION, RECALL, PRECISION_PRDC, RECALL_PRDC, DENSITY, COVERAGE)]
    return Table(["row", "precision (k=3, closed)", "recall (k=3, closed)", "precision (k=5, prdc)",
                  "recall (k=5, prdc)", "density (k=5, prdc)", "coverage (k=5, prdc)"],
                 [[name, *[fmt(figure(block, k), 1, 3) for k in keys]] for name, block in blocks],
                 caption="k=3, closed balls: Kynkäänniemi et al. 2019's code; k=5, open balls: the prdc library "
                         "(Naeem et al. 2020). Mean ± std over the protocol's seeds, first training seed.")


def _grids_figure(results: StudyResults, dataset, out: Path, per_class: int) -> str:
    rng = np.random.default_rng(0)
    panels = {"real": class_rows(dataset.images(ALL), dataset.labels(ALL), N_CLASSES, per_class, rng)}
    for model, family in results.families.items():
        with np.load(out / family.runs[0].grid) as grid:
            conditional = grid["labels"][0] >= 0
            panels[model if conditional else f"{model} (unconditional)"] = grid["images"]
    path = out / FIGURES_DIR / "grids.png"
    plot_side_by_side(panels, per_class, list(CLASS_NAMES), path,
                      title="Real and generated cells, one row per class")
    return str(path.relative_to(out))


def _curves_figure(results: StudyResults, out: Path) -> str | None:
    series = {}
    for model, family in results.families.items():
        rows = read_log(out / family.runs[0].run_dir)
        if rows:
            series[model] = {k: ([r.step for r in rows], [r.means[k] for r in rows]) for k in rows[0].losses()}
    if not series:
        return None
    path = out / FIGURES_DIR / "training_curves.png"
    plot_curves(series, path, "Training losses (logged means)", smooth=3)
    return str(path.relative_to(out))


def _per_class_figure(results: StudyResults, out: Path) -> str | None:
    rows = {m: figure(f.aggregate, FID_PER_CLASS.key).mean for m, f in results.families.items()
            if FID_PER_CLASS.key in f.aggregate}
    if not rows:
        return None
    disjoint = Floor.of(results.floor).disjoint
    if FID_PER_CLASS.key in disjoint:  # what a model that never copies could reach, class by class
        rows["real (disjoint floor)"] = figure(disjoint, FID_PER_CLASS.key).mean
    path = out / FIGURES_DIR / "per_class_fid.png"
    plot_heatmap(np.array(list(rows.values()), dtype=float), list(rows), list(CLASS_NAMES), path,
                 "Per-class FID (generated class c vs real class c)", "FID (lower is better)", cmap="viridis_r")
    return str(path.relative_to(out))


def hyperparameter_table(results: StudyResults) -> Table:
    configs = {m: f.config for m, f in results.families.items()}
    keys = sorted({k for c in configs.values() for k in c})
    rows = [[k] + [json.dumps(c[k]) if k in c else "" for c in configs.values()] for k in keys]
    return Table(["key", *configs], rows, caption="Every config key of every family (bloodgen/configs/<model>.json, "
                                                  "preset as run); sampler options used for evaluation are listed below.",
                 align_right_from=len(configs) + 1)


def _utility_section(results: StudyResults, dataset, out: Path) -> list:
    """The utility table and figures for the families that have utility results (the best run of each)."""
    reports = {m: f.utility for m, f in results.families.items() if f.utility}
    if not reports:
        return [Paragraph("Not run in this preset: each family's check trains two classifiers (minutes on a GPU, "
                          "much longer on a CPU). Add `--utility` to the study command to include it.")]
    figures = {}
    if plot_fidelity_confusions(reports, out / FIGURES_DIR / "fidelity_confusion.png"):
        figures["Class-fidelity confusion per family (rows: class generated for)"] = f"{FIGURES_DIR}/fidelity_confusion.png"
    panels = {}
    for model, report in reports.items():
        closest = out / closest_samples_file(model, report["seed"])
        if closest.is_file():
            with np.load(closest) as npz:
                panels[model] = (dict(zip(npz["indices"].tolist(), npz["images"])), report)
    train_images = dataset.images("train")
    for space in ("pixels", "inception"):
        name = f"{FIGURES_DIR}/nearest_{space}.png"
        if plot_nearest_pairs(panels, train_images, out / name, space=space):
            figures[f"Generated images closest to a training image, and that image ({space} distance)"] = name
    seeds = ", ".join(f"{m} seed {r['seed']}" for m, r in reports.items())
    return [Paragraph(f"Each family's best run by FID ({seeds})."), *utility_blocks(reports, figures)]


def _experiment_sections(results: StudyResults, out: Path) -> list:
    """Each experiment's own report blocks (they bring their headings), with figures relative to `out`."""
    blocks: list = []
    for name, experiment in EXPERIMENTS.items():
        if name in results.experiments:
            blocks += experiment.report(results.experiments[name], out, out / experiment.folder)
    return blocks


def study_document(results: StudyResults, dataset, out: Path) -> Document:
    settings = results.study.settings
    doc = Document("bloodgen study: generative models of BloodMNIST compared")
    doc.add(*_preamble(results))
    doc.add(Heading("How to read this"),
            *[Paragraph(p.format(pool=results.protocol["reference_pool_size"])) for p in HOW_TO_READ])
    doc.add(Heading("Comparison"), comparison_table(results), Paragraph(Floor.of(results.floor).note))
    definitions = definitions_table(results)
    doc.add(definitions if definitions is not None else Paragraph(
        "These results predate the k=5 (prdc library) precision and recall: their density and coverage were "
        "computed with closed balls, which the prdc library leaves open (a difference only for features that "
        "coincide, as in the same-pool floor)."))
    doc.add(Heading("Samples"), Image(_grids_figure(results, dataset, out, settings["grid_per_class"]),
                                      "Real images (left) and each family's samples (seed 0), one row per class"))
    curves = _curves_figure(results, out)
    if curves:
        doc.add(Heading("Training curves"), Image(curves, "Losses against optimiser step (running mean of 3 logs)"))
    per_class = _per_class_figure(results, out)
    if per_class:
        doc.add(Heading("Per-class FID"), Image(per_class, "Per-class FID per conditional family"))
    doc.add(Heading("Utility: fidelity, train-on-synthetic, augmentation, memorisation"),
            *_utility_section(results, dataset, out))
    doc.add(*_experiment_sections(results, out))
    doc.add(Heading("Runs"), _runs_table(results))
    doc.add(Heading("Hyper-parameters"), hyperparameter_table(results))
    doc.add(Heading("Provenance"), _provenance(results.study))
    return doc


def _preamble(results: StudyResults) -> list:
    """What was run, and the warnings a reader needs first (unfinished, one draw per run, reduced protocol)."""
    study, protocol = results.study, results.protocol
    settings = study.settings
    blocks = [Paragraph(
        f"Preset **{study.preset}**: each family trained with its `{settings['train_preset']}` preset, "
        f"{settings['train_seeds']} training seed(s); evaluation with N = {protocol['n']:,} generated vs "
        f"{protocol['n']:,} real images drawn from all {protocol['reference_pool_size']:,} BloodMNIST images, "
        f"for seeds {', '.join(map(str, protocol['seeds']))}; mean ± std over seeds. "
        f"Command: `{study.command}`.")]
    if settings.get("note"):
        blocks.append(Paragraph(settings["note"]))
    pending = results.pending_units or []
    if pending:
        done = sum(len(f.runs) for f in results.families.values())
        blocks.append(Paragraph(
            f"**Unfinished.** {done} of {done + len(pending)} units (one family's training seed each) are done; "
            f"still to do: {', '.join(pending)}. Every figure below covers the finished runs only; running the "
            f"same command again continues the study."))
    if settings.get("draw_per_run"):
        blocks.append(Paragraph(
            "Each training run is evaluated on its own draw (protocol seed = training seed), so the FID column "
            "of the sampling seeds holds the first run's single draw, and the training-seed column's mean ± std "
            "covers independent trainings and real draws together."))
    if protocol["n"] < 10_000 or len(protocol["seeds"]) < 5:
        blocks.append(Paragraph(
            "**Reduced protocol.** This is not the protocol of record (10,000 vs 10,000 images, 5 seeds): "
            "FID at this N is biased upwards and not comparable with published figures, nor with full-protocol "
            "runs. Read KID first (unbiased at small N), and FID only against the floor rows computed at the same N."))
    return blocks


def _runs_table(results: StudyResults) -> Table:
    rows = []
    for model, family in results.families.items():
        for run in family.runs:
            t, e = run.summary, run.eval
            rows.append([model, str(run.seed), f"{t.step:,}", _seconds(t.train_time_s), fmt(figure(e, FID.key)),
                         fmt(figure(e, KID.key), 1e3, 3), json.dumps(e.get("sampler_options") or {}), f"`{run.run_dir}`"])
    return Table(["model", "training seed", "steps", "training time", "FID", "KID x 10^3", "sampler options",
                  "run folder"], rows, align_right_from=1)


def _provenance(study: StudyInfo) -> Paragraph:
    env = study.environment
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    return Paragraph(
        f"Data `{study.data['path']}` (sha256 `{study.data['sha256']}`). Feature network "
        f"{study.network['name']} (weights sha256 `{study.network['sha256']}`). Platform {env['platform']}, "
        f"{env['cpu_count']} CPUs, CUDA devices: {', '.join(env.get('cuda_devices') or []) or 'none'}. {versions}. "
        f"Every figure above is in `results.json`; each run folder holds its config, environment, logs and weights.")


def write_study_report(results: StudyResults, dataset, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    return write_report(study_document(results, dataset, out), out)
