"""The demo's report: the shipped models against both floors, their grids, the ddpm's class fidelity and a
clearly labelled demonstration of the training machinery."""

from __future__ import annotations

import shutil
from pathlib import Path

from bloodgen.classify.utility import ClassFidelity, Memorisation
from bloodgen.classify.utility_report import plot_fidelity_confusions
from bloodgen.data import CLASS_NAMES
from bloodgen.metrics.records import Floor, figure
from bloodgen.metrics.registry import FID, FID_CLASS_AVERAGED, KID, PRECISION, RECALL
from bloodgen.provenance import environment, write_json
from bloodgen.report.document import Document, Heading, Image, Paragraph, Table, write_report

# (key, column label, scale, decimals)
COLUMNS = ((FID.key, "FID", 1, 2), (KID.key, "KID x 10^3", 1e3, 2), (PRECISION.key, "precision", 1, 3),
           (RECALL.key, "recall", 1, 3), (FID_CLASS_AVERAGED.key, "class-avg FID", 1, 1))


def _cell(block: dict, key: str, scale: float, decimals: int) -> str:
    value = figure(block, key)
    return "" if value is None or value.mean is None else f"{scale * value.mean:.{decimals}f}"


def metrics_table(evaluations: dict[str, dict], samples: dict[str, dict], n: int) -> Table:
    floor = Floor.of(next(iter(evaluations.values())))
    rows = [[label, *(_cell(block, c[0], c[2], c[3]) for c in COLUMNS), "", ""]
            for label, block in (("real vs real, same-pool floor", floor.same_pool),
                                 ("real vs real, disjoint floor", floor.disjoint))]
    for name, result in evaluations.items():
        record = samples[name]["provenance"]
        rows.append([f"pretrained:{name}", *(_cell(result, c[0], c[2], c[3]) for c in COLUMNS),
                     f"{samples[name]['seconds']:.0f} s", f"{record['fid']:.2f}" if "fid" in record else ""])
    return Table(["row", *(c[1] for c in COLUMNS), f"sampling {n:,}", "FID at N = 10,000 (record)"], rows,
                 caption=f"N = {n:,} generated vs {n:,} real images, protocol seed 0")


def utility_blocks(utility: dict, out: Path) -> list:
    fidelity = ClassFidelity.from_json(utility["fidelity"])
    memo = Memorisation.from_json(utility["memorisation_pixels"])
    name = utility["model"]
    blocks = [Heading(f"Are the {name}'s cells the class they were drawn for?"),
              Paragraph(f"The shipped reference classifier (a ResNet-18 of the cpu recipe, test accuracy "
                        f"{utility['classifier']['test_accuracy']:.3f} on real cells) reads "
                        f"{fidelity.macro:.3f} of the {name}'s cells (macro over classes) as the class "
                        f"they were generated for. Nearest training image in pixel space: "
                        f"{memo.exact_copies} exact copies, {100 * memo.memorised_fraction:.2f}% closer "
                        f"to a training image than any real test image is (median distance ratio "
                        f"{memo.distance_ratio_median:.2f}; 1 means as far as unseen real cells)."),
              Table(["class", "class fidelity"], [[f"{k} {name}", "" if v is None else f"{v:.3f}"]
                                                  for k, (name, v) in enumerate(zip(CLASS_NAMES, fidelity.per_class))])]
    if plot_fidelity_confusions({f"pretrained:{name}": utility}, out / "figures" / "fidelity_confusion.png"):
        blocks.append(Image("figures/fidelity_confusion.png", "Rows: class generated for; columns: the "
                                                               "classifier's reading"))
    return blocks


def training_blocks(trainings: dict[str, dict], out: Path) -> list:
    rows, images = [], []
    for name, summary in trainings.items():
        run = out / "runs" / name
        rows.append([name, f"{summary['step']:,}", f"{summary['train_time_s']:.0f} s", summary["status"]])
        grids = sorted((run / "samples").glob("step-*.png"))
        if grids:
            target = out / "figures" / f"train-{name}.png"
            shutil.copyfile(grids[-1], target)
            images.append(Image(f"figures/train-{name}.png", f"{name} after {summary['step']} steps"))
    return [Heading("The training machinery at work (a demonstration, not a result)"),
            Paragraph("Every family trained for a few steps with its quick preset: the loop, EMA, checkpoints, "
                      "logs, sample grids and exports all ran (run folders in runs/). These models are far from "
                      "trained; their grids show noise becoming cells, nothing about a family's quality. The "
                      "shipped models above were trained with the record recipes for 30 to 100 minutes each "
                      "(results/record/report.md)."),
            Table(["family", "steps", "training", "status"], rows), *images]


def write_demo_report(out: Path, settings: dict, samples: dict, evaluations: dict, utility: dict | None,
                      trainings: dict) -> Path:
    (out / "figures").mkdir(parents=True, exist_ok=True)
    n = settings["n"]
    doc = Document("bloodgen demo: the shipped models at a glance")
    doc.add(Paragraph(f"The models that ship with bloodgen (`pretrained:NAME`, the best of five trainings of each "
                      f"family in the protocol of record) sampled and evaluated with the FID protocol at N = {n:,} "
                      f"per side, beside the real-vs-real floors at the same N. FID falls as N grows: compare a "
                      f"row with the floors here, and the record's N = 10,000 figures with its own floors "
                      f"(same-pool 0.73, disjoint 2.07)."),
            metrics_table(evaluations, samples, n),
            Heading("Samples, one row per class"),
            *(Image(f"grids/{name}.png", f"pretrained:{name}") for name in evaluations))
    if utility is not None:
        doc.add(*utility_blocks(utility, out))
    doc.add(*training_blocks(trainings, out))
    write_json(out / "results.json", {"settings": settings, "samples": samples, "evaluations": evaluations,
                                      "utility": utility, "trainings": trainings, "environment": environment()})
    md, _ = write_report(doc, out)
    return md
