"""The Markdown summary of an evaluation result (the JSON holds every figure; this is what people read)."""

from __future__ import annotations

from bloodgen.metrics.fid import KEY_FID, KEY_FID_PER_CLASS
from bloodgen.metrics.prdc import KEY_PRECISION
from bloodgen.metrics.protocol import KEY_DISJOINT, KEY_FLOOR, KEY_MEAN, KEY_PER_SEED, KEY_SAME_POOL, KEY_STD
from bloodgen.metrics.registry import report_columns
from bloodgen.report.document import Document, Paragraph, Table, to_markdown


def _value(x, scale: float, decimals: int) -> str:
    return "n/a" if x is None else f"{x * scale:.{decimals}f}"


def _cell(summary: dict | None, scale: float = 1, decimals: int = 3) -> str:
    if summary is None or summary[KEY_MEAN] is None:
        return "n/a"
    mean = _value(summary[KEY_MEAN], scale, decimals)
    return mean if summary[KEY_STD] is None else f"{mean} ± {_value(summary[KEY_STD], scale, decimals)}"


def _columns(result: dict) -> list[tuple[str, dict]]:
    columns = [("samples", result)] if any(column.key in result for column in report_columns()) else []
    if KEY_FLOOR in result:
        floor = result[KEY_FLOOR]
        disjoint = floor[KEY_DISJOINT]
        columns += [("floor: same-pool", floor[KEY_SAME_POOL]),
                    (f"floor: disjoint (N={disjoint['n_per_side']:,})", disjoint)]
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
            rows.append([f"{column.label} {'↓' if column.lower_is_better else '↑'}"] + [_cell(block.get(column.key), column.scale, column.decimals)
                                          for _, block in columns])
    doc.add(Table(["metric (↓ lower / ↑ higher is better)"] + [name for name, _ in columns], rows))
    if any(KEY_PRECISION in block for _, block in columns):
        doc.add(Paragraph(
            "Precision/recall come in the two definitions papers publish: k=3 nearest-neighbour balls, closed "
            "(Kynkäänniemi et al. 2019's code), and k=5, open (the prdc library of Naeem et al. 2020, with its "
            "density and coverage). Compare a published figure with the row of its own definition."))
    if "spread" in result:
        doc.add(Paragraph(f"Note: {result['spread']['note']}."))
    if KEY_FLOOR in result:
        note = result[KEY_FLOOR]["note"]
        cap = result[KEY_FLOOR][KEY_DISJOINT].get("cap_note")
        doc.add(Paragraph(note + (f" {cap}." if cap else "")))
    if any(KEY_FID in block for _, block in columns) and len(seeds) > 1:
        doc.add(Table(["seed"] + [f"FID, {name}" for name, _ in columns],
                      [[str(s)] + [_value(block[KEY_FID][KEY_PER_SEED][i], 1, 3) for _, block in columns]
                       for i, s in enumerate(seeds)],
                      caption="FID per seed"))
    per_class = [(name, block[KEY_FID_PER_CLASS]) for name, block in columns if KEY_FID_PER_CLASS in block]
    if per_class:
        classes = per_class[0][1]["classes"]
        doc.add(Table(["class"] + [name for name, _ in per_class],
                      [[f"{c} {classes[c]}"] + [_cell({KEY_MEAN: pc[KEY_MEAN][c], KEY_STD: pc[KEY_STD][c]})
                                                for _, pc in per_class] for c in range(len(classes))],
                      caption="FID per class (generated class c against real class c of the same draw)"))
    timing = result["timing"]
    doc.add(Paragraph(f"{timing['seconds']:.0f} s on {result['network']['device']}; reference images embedded now: "
                      f"{timing['reference_images_computed']:,}, from the feature cache: "
                      f"{timing['reference_images_from_cache']:,}."))
    return to_markdown(doc)


def plausibility_markdown(result: dict) -> str:
    """The plausibility check as a per-class table (the layout of IMPROVE's Tables 3-4)."""
    from bloodgen.data import CLASS_NAMES

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
