"""`bloodgen data`: figures that describe BloodMNIST, computed apart from the plots and the report.

The statistics functions take arrays and return plain dicts (what goes into summary.json); the plot
functions take arrays or those dicts and write PNGs; `analyse` ties them together with the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from bloodgen.data.bloodmnist import ALL, CLASS_NAMES, N_CLASSES, OFFICIAL_SPLIT_SIZES, SPLITS, BloodMNIST
from bloodgen.provenance import environment, write_json
from bloodgen.report.document import Document, Heading, Image, Paragraph, Table, write_report
from bloodgen.report.plots import pyplot

SPLITS_AND_ALL = SPLITS + (ALL,)
SAMPLES_PER_CLASS = 12
MAX_DUPLICATE_EXAMPLES = 8


def class_counts(data: BloodMNIST) -> dict:
    counts = {s: np.bincount(data.labels(s), minlength=N_CLASSES).tolist() for s in SPLITS_AND_ALL}
    # max/min class count: how much more often the commonest class appears than the rarest
    imbalance = {s: (max(c) / min(c) if min(c) else float("inf")) for s, c in counts.items()}
    fractions = {s: (np.array(c) / sum(c)).round(4).tolist() for s, c in counts.items()}
    return {"counts": counts, "fractions": fractions, "imbalance_ratio": imbalance}


def channel_stats(data: BloodMNIST) -> dict:
    """Per-channel mean and std of pixel values scaled to [0, 1], per split."""
    stats = {}
    for s in SPLITS_AND_ALL:
        x = data.images(s).reshape(-1, 3).astype(np.float64) / 255.0
        stats[s] = {"mean": x.mean(0).round(5).tolist(), "std": x.std(0).round(5).tolist()}
    return stats


def class_mean_images(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(8, 28, 28, 3) float images in [0, 255]: the average image of each class."""
    return np.stack([images[labels == c].mean(0) if (labels == c).any() else np.zeros(images.shape[1:])
                     for c in range(N_CLASSES)])


def intensity_histograms(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(8, 3, 256) normalised histograms of R, G and B values per class."""
    hist = np.zeros((N_CLASSES, 3, 256))
    for c in range(N_CLASSES):
        pixels = images[labels == c].reshape(-1, 3)
        for ch in range(3):
            counts = np.bincount(pixels[:, ch], minlength=256)
            hist[c, ch] = counts / max(counts.sum(), 1)
    return hist


def image_keys(images: np.ndarray) -> np.ndarray:
    """One opaque key per image, equal exactly when the images are byte-identical (for np.unique / np.isin)."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    return flat.view(np.dtype((np.void, flat.shape[1] * flat.itemsize)))[:, 0]


def exact_duplicates(data: BloodMNIST) -> dict:
    """Groups of byte-identical images across the whole dataset, and which splits they straddle."""
    images, labels = data.images(ALL), data.labels(ALL)
    split_of = np.concatenate([np.full(n, i) for i, n in enumerate(data.split_sizes.values())])
    _, inverse, counts = np.unique(image_keys(images), return_inverse=True, return_counts=True)
    groups = [np.flatnonzero(inverse == g) for g in np.flatnonzero(counts > 1)]
    conflicting = [len(set(labels[g])) > 1 for g in groups]
    crossing = [len(set(split_of[g])) > 1 for g in groups]
    # The groups that matter most first: contradictory labels, then test/val images also seen in training.
    order = sorted(range(len(groups)), key=lambda i: (not conflicting[i], not crossing[i]))
    pairs: dict[str, int] = {}
    for g in groups:
        names = sorted({SPLITS[i] for i in split_of[g]}, key=SPLITS.index)
        if len(names) > 1:
            key = "-".join(names)
            pairs[key] = pairs.get(key, 0) + 1
    return {
        "n_groups": len(groups),
        "n_images_in_groups": int(sum(len(g) for g in groups)),
        "n_groups_across_splits": int(sum(crossing)),
        "groups_across_splits_by_pair": pairs,
        "n_groups_with_conflicting_labels": int(sum(conflicting)),
        "groups": [{"indices_in_all": groups[i].tolist(), "splits": [SPLITS[k] for k in split_of[groups[i]]],
                    "labels": labels[groups[i]].tolist()} for i in order],
    }


def plot_class_counts(counts: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.27
    x = np.arange(N_CLASSES)
    for i, s in enumerate(SPLITS):
        ax.bar(x + (i - 1) * width, counts["counts"][s], width, label=f"{s} (imbalance {counts['imbalance_ratio'][s]:.2f})")
    ax.set_xticks(x, CLASS_NAMES, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_title("BloodMNIST class counts per split")
    ax.set_ylim(0, max(max(counts["counts"][s]) for s in SPLITS) * 1.3)  # headroom for the legend
    ax.legend(loc="upper left", ncols=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_image_rows(rows: list[np.ndarray], row_labels: list[str], path: Path, title: str,
                    image_titles: list[list[str]] | None = None) -> None:
    """One row of images per entry of `rows` (each (k, 28, 28, 3) uint8/float in [0, 255])."""
    plt = pyplot()
    n_cols = max(len(r) for r in rows)
    cell = 1.6 if image_titles else 0.9
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(n_cols * cell + 1.6, len(rows) * cell + 0.5), squeeze=False)
    for r, (imgs, label) in enumerate(zip(rows, row_labels)):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(imgs):
                ax.imshow(np.clip(imgs[c], 0, 255).astype(np.uint8), interpolation="nearest")
                if image_titles:
                    ax.set_title(image_titles[r][c], fontsize=7)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_histograms(hist: np.ndarray, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(14, 6), sharex=True)
    for c, ax in enumerate(axes.flat):
        for ch, colour in enumerate(("red", "green", "blue")):
            ax.plot(np.arange(256), hist[c, ch], color=colour, lw=1)
        ax.set_title(CLASS_NAMES[c], fontsize=9)
    for ax in axes[1]:
        ax.set_xlabel("pixel value")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of pixels")
    fig.suptitle("RGB intensity histograms per class (all splits)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_document(summary: dict, figures: dict[str, str]):
    counts = summary["class_counts"]
    data = summary["data"]
    doc = Document("BloodMNIST: data summary")
    doc.add(Paragraph(f"File `{data['path']}` (sha256 `{data['sha256']}`), "
                      f"{'the official MedMNIST v2 file' if data['official'] else '**not** the official file'}."))
    rows = [[f"{c} {CLASS_NAMES[c]}"] + [str(counts["counts"][s][c]) for s in SPLITS_AND_ALL] for c in range(N_CLASSES)]
    rows.append(["**total**"] + [str(sum(counts["counts"][s])) for s in SPLITS_AND_ALL])
    rows.append(["imbalance (max/min)"] + [f"{counts['imbalance_ratio'][s]:.2f}" for s in SPLITS_AND_ALL])
    official = ", ".join(f"{s} {n}" for s, n in OFFICIAL_SPLIT_SIZES.items())
    doc.add(Heading("Class counts"), Table(["class", *SPLITS_AND_ALL], rows, caption=f"Official split sizes: {official}."),
            Image(figures["class_counts"], "Class counts per split"))
    doc.add(Heading("Per-channel statistics (pixel values in [0, 1])"),
            Table(["split", "mean R", "mean G", "mean B", "std R", "std G", "std B"],
                  [[s] + [f"{v:.4f}" for v in summary["channel_stats"][s]["mean"] + summary["channel_stats"][s]["std"]]
                   for s in SPLITS_AND_ALL]))
    doc.add(Heading("Images"), Image(figures["mean_images"], "Mean image per class"),
            Image(figures["samples_per_class"], f"Random images per class (seed {summary['seed']})"),
            Image(figures["rgb_histograms"], "RGB intensity histograms per class"))
    dup = summary["duplicates"]
    doc.add(Heading("Exact duplicates"),
            Paragraph(f"{dup['n_groups']} groups of byte-identical images ({dup['n_images_in_groups']} images); "
                      f"{dup['n_groups_across_splits']} groups straddle two or more splits "
                      f"({', '.join(f'{k}: {v}' for k, v in dup['groups_across_splits_by_pair'].items()) or 'none'}), "
                      f"so a model can be scored on an image it was trained on; "
                      f"{dup['n_groups_with_conflicting_labels']} groups carry contradictory labels. "
                      f"The official splits are kept as they are, for comparability with published results."))
    if "duplicates" in figures:
        doc.add(Image(figures["duplicates"], "Examples of exact duplicates, with the split and class of each copy"))
    return doc


def analyse(data: BloodMNIST, out_dir: str | Path, seed: int = 0) -> dict:
    """Write summary.md, summary.html (self-contained), summary.json and the PNG figures to `out_dir`; return the summary dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = data.split(ALL)
    figures = {"class_counts": "class_counts.png", "mean_images": "mean_images.png",
               "samples_per_class": "samples_per_class.png", "rgb_histograms": "rgb_histograms.png"}
    summary: dict = {"data": data.provenance(), "seed": seed, "class_names": list(CLASS_NAMES)}
    rng = np.random.default_rng(seed)

    steps = tqdm(total=7, desc="bloodgen data", unit="step")
    summary["class_counts"] = class_counts(data)
    plot_class_counts(summary["class_counts"], out / figures["class_counts"])
    steps.update()
    summary["channel_stats"] = channel_stats(data)
    steps.update()
    means = class_mean_images(images, labels)
    plot_image_rows([means], [""], out / figures["mean_images"], "Mean image per class",
                    image_titles=[[name.replace(" ", "\n") for name in CLASS_NAMES]])
    steps.update()
    picks = [rng.choice(np.flatnonzero(labels == c), size=min(SAMPLES_PER_CLASS, (labels == c).sum()), replace=False)
             for c in range(N_CLASSES)]
    summary["sample_indices_in_all"] = [p.tolist() for p in picks]
    plot_image_rows([images[p] for p in picks], list(CLASS_NAMES), out / figures["samples_per_class"],
                    f"Random images per class (seed {seed})")
    steps.update()
    plot_histograms(intensity_histograms(images, labels), out / figures["rgb_histograms"])
    steps.update()
    summary["duplicates"] = exact_duplicates(data)
    groups = summary["duplicates"]["groups"][:MAX_DUPLICATE_EXAMPLES]
    if groups:
        figures["duplicates"] = "duplicates.png"
        plot_image_rows([images[g["indices_in_all"]] for g in groups], [f"group {i + 1}" for i in range(len(groups))],
                        out / figures["duplicates"], "Exact duplicates (split, class of each copy)",
                        image_titles=[[f"{s}\n{CLASS_NAMES[l]}" for s, l in zip(g["splits"], g["labels"])]
                                      for g in groups])
    steps.update()
    summary["figures"] = figures
    summary["environment"] = environment()
    write_json(out / "summary.json", summary)
    write_report(summary_document(summary, figures), out, stem="summary")
    steps.update()
    steps.close()
    return summary
