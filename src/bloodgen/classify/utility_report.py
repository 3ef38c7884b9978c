"""The utility section of a report: tables and figures from `classify.utility` results.

Used by `bloodgen evaluate --utility` (one model) and by the study report (one row per family).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloodgen.classify.scores import ClassificationScores
from bloodgen.classify.utility import AUGMENTATION_GAIN, ClassFidelity, Memorisation
from bloodgen.data.bloodmnist import CLASS_NAMES
from bloodgen.report.document import Image, Paragraph, Table
from bloodgen.report.plots import pyplot

UTILITY_NOTE = (
    "Class fidelity: share of the samples generated for class c that the reference classifier assigns to c "
    "(macro mean over classes; higher is better). TSTR: the same classifier recipe trained on synthetic images "
    "only (as many as the real train split, same class mix), tested on the real test split; the first row is "
    "the classifier trained on the real train split. Augmented: real train split plus synthetic images that top "
    "up every class to the largest; gain is its balanced accuracy minus the real-only one. Memorised: share of "
    "generated images that copy a training image or lie closer to one than any real test image does (pixels / "
    "Inception features; in brackets that threshold, the nearest distinct test image's distance: test images "
    "that copy a training image are left out of it). Distances are exact and copies are found by pixel "
    "equality. A family is flagged when that share exceeds 1% or a sample is an exact copy."
)


def _f(value, decimals: int = 3, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _memorised(report: dict, space: str) -> str:
    block = report.get("memorisation", {}).get(space)
    if block is None:
        return "n/a"
    found = Memorisation.from_json(block)
    return f"{100 * found.memorised_fraction:.2f}% (< {found.threshold:.2f})"


def _flag(report: dict) -> str:
    found = [Memorisation.from_json(b) for b in report.get("memorisation", {}).values()]
    flagged = any(m.memorisation_flag for m in found)
    copies = max((m.exact_copies for m in found), default=0)
    return ("**copies training images**" if copies else "**flagged**") if flagged else "no"


def _score_cells(s: ClassificationScores) -> list[str]:
    return [_f(v) for v in (s.accuracy, s.balanced_accuracy, s.macro_precision, s.macro_recall, s.macro_f1, s.auc_ovr)]


def utility_table(reports: dict[str, dict]) -> Table:
    """One row per model (name -> utility report) below the train-on-real baseline row."""
    header = ["model", "class fidelity", "TSTR acc.", "TSTR bal. acc.", "TSTR macro P", "TSTR macro R",
              "TSTR macro F1", "TSTR AUC", "augmented bal. acc. (gain)", "memorised (pixels)",
              "memorised (Inception)", "memorisation flag"]
    first = next(iter(reports.values()), None)
    rows = []
    if first is not None:
        rows.append(["real images (train on real)", "n/a",
                     *_score_cells(ClassificationScores.from_json(first["train_on_real"])), "", "", "", ""])
    for name, report in reports.items():
        tstr, aug = report.get("tstr"), report.get("augmented")
        fidelity = ClassFidelity.from_json(report["fidelity"]).macro if "fidelity" in report else None
        cells = _score_cells(ClassificationScores.from_json(tstr)) if tstr else ["n/a"] * 6
        augmented = (f"{ClassificationScores.from_json(aug).balanced_accuracy:.3f} "
                     f"({report[AUGMENTATION_GAIN]:+.3f})" if aug else "n/a")
        rows.append([name, _f(fidelity), *cells, augmented, _memorised(report, "pixels"),
                     _memorised(report, "inception"), _flag(report)])
    return Table(header, rows, caption="Utility of the synthetic images, judged on the real test split")


def classifier_paragraph(report: dict) -> Paragraph:
    info = report.get("classifier", {})
    recipe = info.get("recipe", {})
    return Paragraph(
        f"Reference classifier: ResNet-18 (28x28 stem, width {recipe.get('width', 64)}), {recipe.get('epochs')} "
        f"epochs, batch {recipe.get('batch_size')}, lr {recipe.get('lr')}, seed {recipe.get('seed')}; best val "
        f"accuracy {_f(info.get('best_val_accuracy'))}, test accuracy {_f(ClassificationScores.from_json(report['train_on_real']).accuracy)}; "
        f"trained on {info.get('device', 'n/a')}. TSTR and augmentation classifiers use the same recipe.")


def plot_fidelity_confusions(reports: dict[str, dict], path: Path) -> bool:
    """Row-normalised confusion matrices (generated-for class x classifier's class), one panel per model."""
    panels = {name: np.asarray(ClassFidelity.from_json(r["fidelity"]).confusion, float) for name, r in reports.items()
              if "fidelity" in r}
    if not panels:
        return False
    plt = pyplot()
    # at least 6.4 inches wide, so the title fits above a single panel
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.6 * len(panels), 6.4), 4.4), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], panels.items()):
        rows = matrix.sum(1, keepdims=True)
        share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for (r, c), v in np.ndenumerate(share):
            if v >= 0.005:
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v > 0.5 else "black")
        ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES, fontsize=7)
        ax.set_xlabel("reference classifier's class")
        ax.set_ylabel("class generated for")
        ax.set_title(name)
    fig.suptitle("Class fidelity: what the reference classifier sees in each class's samples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_nearest_pairs(panels: dict[str, tuple[np.ndarray, dict]], train_images: np.ndarray, path: Path,
                       space: str = "pixels", n_pairs: int = 8) -> bool:
    """For each model: its generated images closest to a training image (top) above that training image (bottom).

    `panels` maps a model name to (its generated images, its utility report).
    """
    rows = [(name, images, Memorisation.from_json(report["memorisation"][space]).closest[:n_pairs])
            for name, (images, report) in panels.items() if space in report.get("memorisation", {})]
    if not rows:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(2 * len(rows), n_pairs, figsize=(1.1 * n_pairs, 2.4 * len(rows)), squeeze=False)
    for r, (name, images, closest) in enumerate(rows):
        for c in range(n_pairs):
            top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
            for ax in (top, bottom):
                ax.axis("off")
            if c >= len(closest):
                continue
            g, t, d = closest[c]
            top.imshow(images[g])
            top.set_title(f"d={d:.2g}", fontsize=7)
            bottom.imshow(train_images[t])
        axes[2 * r, 0].text(-4, 14, f"{name}\ngenerated", ha="right", va="center", fontsize=8)
        axes[2 * r + 1, 0].text(-4, 14, "nearest\ntraining", ha="right", va="center", fontsize=8)
    fig.suptitle(f"Generated images nearest to a training image ({space} distance)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def utility_blocks(reports: dict[str, dict], figures: dict[str, str]) -> list:
    """Table, explanation and figures (`figures`: caption -> path relative to the report) as report blocks."""
    if not reports:
        return []
    blocks: list = [utility_table(reports), classifier_paragraph(next(iter(reports.values()))),
                    Paragraph(UTILITY_NOTE)]
    flagged = [name for name, r in reports.items() if _flag(r) != "no"]
    if flagged:
        blocks.append(Paragraph(f"**Memorisation warning:** {', '.join(flagged)} produced images closer to training "
                                f"images than real test images are; see the nearest-neighbour figure."))
    blocks += [Image(path, caption) for caption, path in figures.items()]
    return blocks
