"""Several `classify-eval` folders summarised: each figure's mean ± std over the folders (independent
trainings of the same recipe, as the protocol of record asks), beside the ResNet-18's, in one table.

    bloodgen classify-eval --summarise cyto/ddpm-s0 cyto/ddpm-s1 ... --out cyto/summary
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bloodgen.classify.diffusion_results import EvalResults
from bloodgen.data import CLASS_NAMES
from bloodgen.errors import UserError
from bloodgen.provenance import portable_path, write_json
from bloodgen.report.document import Document, Paragraph, Table, write_report

SUMMARY_FILE = "summary.json"
PERCENT = 100.0

# (label, part, how to read it from that part's record, scale): the rows of the summary, in table order.
ROWS: tuple[tuple[str, str, Callable[[Any], float], float], ...] = (
    ("diffusion, pruned: accuracy %", "accuracy", lambda p: p.diffusion.report.accuracy, PERCENT),
    ("diffusion, pruned: balanced accuracy %", "accuracy", lambda p: p.diffusion.report.balanced_accuracy,
     PERCENT),
    ("diffusion, no pruning: accuracy %", "accuracy", lambda p: p.diffusion_no_prune.report.accuracy, PERCENT),
    ("diffusion, no pruning: balanced accuracy %", "accuracy",
     lambda p: p.diffusion_no_prune.report.balanced_accuracy, PERCENT),
    ("ResNet-18: accuracy %", "accuracy", lambda p: p.resnet18.report.accuracy, PERCENT),
    ("ResNet-18: balanced accuracy %", "accuracy", lambda p: p.resnet18.report.balanced_accuracy, PERCENT),
    ("diffusion, pruned: network evaluations / image", "accuracy", lambda p: p.diffusion.evaluations_per_image, 1),
    ("diffusion, no pruning: network evaluations / image", "accuracy",
     lambda p: p.diffusion_no_prune.evaluations_per_image, 1),
    ("diffusion, pruned: seconds / image", "accuracy", lambda p: p.diffusion.seconds_per_image, 1),
    *((f"replay, {w} weighting: accuracy %", "ablations", lambda p, w=w: p.weightings[w]["mean"].accuracy, PERCENT)
      for w in ("uniform", "snr", "paper")),
    ("replay, fitted time weights: accuracy %", "ablations", lambda p: p.fitted.accuracy, PERCENT),
    ("diffusion: ECE", "calibration", lambda p: p.diffusion.ece, 1),
    ("ResNet-18: ECE", "calibration", lambda p: p.resnet18.ece, 1),
    ("diffusion: anomaly AUC", "anomaly", lambda p: p.diffusion.auc, 1),
    ("ResNet-18: anomaly AUC", "anomaly", lambda p: p.resnet18.auc, 1),
    ("diffusion: mean corruption drop (points)", "corruptions", lambda p: p.mean_drop.diffusion, PERCENT),
    ("ResNet-18: mean corruption drop (points)", "corruptions", lambda p: p.mean_drop.resnet18, PERCENT),
)


def _read(folder: Path) -> EvalResults:
    path = folder / "results.json"
    if not path.is_file():
        raise UserError(f"{folder} holds no classify-eval results ({path} not found): run classify-eval there first")
    return EvalResults.from_json(json.loads(path.read_text()))


def _spread(values: list) -> dict:
    """Mean and sample std over the folders (axis 0) of a figure, or of a per-class list of figures."""
    array = np.asarray(values, dtype=float)
    return {"mean": array.mean(axis=0).tolist(),
            "std": None if len(array) < 2 else array.std(axis=0, ddof=1).tolist(), "values": array.tolist()}


def summarise(folders: list[str | Path]) -> dict:
    """Mean ± std (sample std) over the folders of every figure that all of them hold."""
    if len(folders) < 2:
        raise UserError(f"--summarise needs at least two classify-eval folders, got {len(folders)}")
    results = {str(f): _read(Path(f)).parts() for f in folders}
    rows = {}
    for label, part, read, scale in ROWS:
        if all(part in parts for parts in results.values()):
            values = [read(parts[part]) for parts in results.values()]
            if None not in values:  # e.g. no mean corruption drop where only shifted domains were scored
                rows[label] = _spread([scale * v for v in values])
    rows.update(_domain_rows(list(results.values())))
    if not rows:
        raise UserError("the folders share no finished part: run the same --parts in each")
    summary = {"folders": list(results), "rows": rows}
    if all("accuracy" in parts for parts in results.values()):
        accuracy = [parts["accuracy"] for parts in results.values()]
        summary["n_test_images"] = [a.diffusion.n_images for a in accuracy]
        recalls = [{key: [PERCENT * r for r in scores.report.per_class_recall]
                    for key, scores in a.classifiers().items()} for a in accuracy]
        summary["per_class_recall"] = {key: _spread([r[key] for r in recalls]) for key in recalls[0]}
    return summary


def _domain_rows(parts: list[dict]) -> dict:
    """Balanced accuracy of both classifiers in each shifted domain every folder scored (Table 2's layout)."""
    if not all("corruptions" in p and p["corruptions"].domains for p in parts):
        return {}
    shared = [d for d in parts[0]["corruptions"].domains if all(d in p["corruptions"].domains for p in parts)]
    return {f"{who}, domain {name}: balanced accuracy %": _spread(
                [PERCENT * getattr(p["corruptions"].domains[name], key).balanced_accuracy for p in parts])
            for name in shared for who, key in (("diffusion", "diffusion"), ("ResNet-18", "resnet18"))}


def summary_document(summary: dict):
    def cell(mean: float, std: float | None, digits: int) -> str:
        return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")

    doc = Document("Diffusion classifier: mean ± std over evaluations")
    doc.add(Paragraph(f"{len(summary['folders'])} classify-eval folders: "
                      f"{', '.join(f'`{f}`' for f in summary['folders'])}; sample std (ddof = 1)."))
    doc.add(Table(["figure", "mean ± std", "per folder"],
                  [[label, cell(block["mean"], block["std"], 3), ", ".join(f"{v:.3f}" for v in block["values"])]
                   for label, block in summary["rows"].items()], align_right_from=1))
    if "per_class_recall" in summary:
        recall = summary["per_class_recall"]
        std = {k: block["std"] or [None] * len(CLASS_NAMES) for k, block in recall.items()}
        doc.add(Table(["class", "diffusion, pruned", "diffusion, no pruning", "ResNet-18"],
                      [[name] + [cell(block["mean"][c], std[k][c], 1) for k, block in recall.items()]
                       for c, name in enumerate(CLASS_NAMES)], caption="Per-class recall %, mean ± std",
                      align_right_from=1))
    return doc


def write_summary(folders: list[str | Path], out: str | Path) -> dict:
    """summary.json, report.md and report.html in `out`."""
    summary = summarise(folders)
    summary["folders"] = [portable_path(f) for f in summary["folders"]]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SUMMARY_FILE, summary)
    write_report(summary_document(summary), out)
    return summary
