"""The Markdown summary of an evaluation result (the JSON holds every figure; this is what people read)."""

from __future__ import annotations

from bloodgen.data import CLASS_NAMES
from bloodgen.metrics.records import ClassFigures, Figure, Floor, figure
from bloodgen.metrics.registry import FID, FID_PER_CLASS, PRECISION, report_columns
from bloodgen.report.document import Document, Paragraph, Table, to_markdown


def _value(x, scale: float, decimals: int) -> str:
    return "n/a" if x is None else f"{x * scale:.{decimals}f}"


def _cell(summary: Figure | None, scale: float = 1, decimals: int = 3) -> str:
    if summary is None or summary.mean is None:
        return "n/a"
    mean = _value(summary.mean, scale, decimals)
    return mean if summary.std is None else f"{mean} ± {_value(summary.std, scale, decimals)}"


def _columns(result: dict) -> list[tuple[str, dict]]:
    columns = [("samples", result)] if any(column.key in result for column in report_columns()) else []
    floor = Floor.of(result)
    if floor:
        columns += [("floor: same-pool", floor.same_pool), (f"floor: disjoint (N={floor.disjoint_n:,})", floor.disjoint)]
    return columns


def to_markdown_report(result: dict) -> str:
    protocol = result["protocol"]
    seeds = protocol["seeds"]
    columns = _columns(result)
    samples = result["samples"]
    reference = result["reference"]
    title = f"Evaluation of {samples['source']}" if samples else "Real-vs-real floor"
    doc = Document(title)
    doc.add(Paragraph(
        f"N = {protocol['n']:,} images per side, seeds {', '.join(map(str, seeds))}; mean ± std over seeds "
        f"(sample std). Reference: {reference['source']} ({reference['n_images']:,} images). "
        f"Features: {result['network']['name']} (weights sha256 {result['network']['sha256'][:16]}...)."))
    rows = []
    for column in report_columns():
        if any(column.key in block for _, block in columns):
            rows.append([f"{column.label} {'↓' if column.lower_is_better else '↑'}"] + [_cell(figure(block, column.key), column.scale, column.decimals)
                                          for _, block in columns])
    doc.add(Table(["metric (↓ lower / ↑ higher is better)"] + [name for name, _ in columns], rows))
    if any(PRECISION.key in block for _, block in columns):
        doc.add(Paragraph(
            "Precision/recall come in the two definitions papers publish: k=3 nearest-neighbour balls, closed "
            "(Kynkäänniemi et al. 2019's code), and k=5, open (the prdc library of Naeem et al. 2020, with its "
            "density and coverage). Compare a published figure with the row of its own definition."))
    if "spread" in result:
        doc.add(Paragraph(f"Note: {result['spread']['note']}."))
    floor = Floor.of(result)
    if floor:
        doc.add(Paragraph(floor.note + (f" {floor.cap_note}." if floor.cap_note else "")))
    if any(FID.key in block for _, block in columns) and len(seeds) > 1:
        doc.add(Table(["seed"] + [f"FID, {name}" for name, _ in columns],
                      [[str(s)] + [_value(figure(block, FID.key).per_seed[i], 1, 3) for _, block in columns]
                       for i, s in enumerate(seeds)],
                      caption="FID per seed"))
    per_class = [(name, ClassFigures.from_json(block[FID_PER_CLASS.key])) for name, block in columns
                 if FID_PER_CLASS.key in block]
    if per_class:
        classes = per_class[0][1].classes
        doc.add(Table(["class"] + [name for name, _ in per_class],
                      [[f"{c} {classes[c]}"] + [_cell(pc.figure(c)) for _, pc in per_class] for c in range(len(classes))],
                      caption="FID per class (generated class c against real class c of the same draw)"))
    timing = result["timing"]
    doc.add(Paragraph(f"{timing['seconds']:.0f} s on {result['network']['device']}; reference images embedded now: "
                      f"{timing['reference_images_computed']:,}, from the feature cache: "
                      f"{timing['reference_images_from_cache']:,}."))
    return to_markdown(doc)


def plausibility_markdown(result: dict) -> str:
    """The plausibility check as a per-class table (the layout of IMPROVE's Tables 3-4)."""
    def pct(value) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}"

    samples = result.get("per_class") or [None] * len(CLASS_NAMES)
    rows = [[name, pct(s), pct(r)] for name, s, r in zip(CLASS_NAMES, samples, result["real_test_per_class"])]
    rows.append(["all", pct(result["plausible"]), pct(result["real_test_plausible"])])
    how = ("each image against its own class" if result["labelled"]
           else "unlabelled: an image passes when it meets every criterion of some class")
    return to_markdown(Document("Plausibility", [Paragraph(f"Plausibility: every one of {len(result['criteria'])} cell and nucleus "
                                  f"measurements within the central {100 * result['coverage']:.0f} % of real train "
                                  f"cells of the class ({how}); the real test split is the ceiling."),
                        Table(["class", "samples plausible %", "real test plausible %"], rows,
                              align_right_from=1)]))
