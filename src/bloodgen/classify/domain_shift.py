"""How far a classifier of one lab falls in another, and what colour normalisation gives back (the layout of
the AGGAN study's Table 3, with a cell-type classifier as the application).

The classifier S_A, the reference ResNet-18 recipe trained on domain A's train part alone (`bloodgen domains make`), is
scored on A's test cells (its ceiling) and, for each shifted domain B, on the same test cells as B images
(before), after each colour normalisation to A (`bloodgen.data.domains.NORMALISERS`), after each translation
model's B -> A (`bloodgen.classify.translation_eval`), and beside an oracle trained on B's own train part. Because the test cells are the same in every domain, the class flips are
counted too: test cells whose S_A prediction in B (or normalised B) differs from its prediction in A. Every
classifier is cached by data file and recipe (seed included), so a rerun scores without training.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from bloodgen.classify.recipe import ClassifierRecipe
from bloodgen.classify.reference import classification_report, default_recipe, predict_proba, reference_classifier
from bloodgen.data.domains import DOMAINS, NORMALISERS, SOURCE_DOMAIN, get_domains, read_domain
from bloodgen.errors import UserError
from bloodgen.metrics.protocol import summarise
from bloodgen.report.document import Document, Heading, Paragraph, Table, to_markdown

BEFORE, ORACLE = "before", "oracle"

# A translator maps a shifted domain's uint8 (N, 28, 28, 3) images to domain A (a trained cyclegan's G).
Translator = Callable[[np.ndarray], np.ndarray]


def _load(path: Path):
    if not path.is_file():
        raise UserError(f"{path} not found: make the domains first with `bloodgen domains make --out {path.parent}`")
    return read_domain(path)


def _scores(labels: np.ndarray, proba: np.ndarray, reference_pred: np.ndarray | None) -> dict:
    report = classification_report(labels, proba)
    out = {"balanced_accuracy": report.balanced_accuracy, "macro_f1": report.macro_f1, "accuracy": report.accuracy}
    if reference_pred is not None:
        out["class_flips"] = float(np.mean(proba.argmax(1) != reference_pred))
    return out


def test_variants(folder: str | Path, domains: tuple[str, ...],
                  translators: Mapping[str, Mapping[str, Translator]] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """For each shifted domain, its test cells as S_A will see them: raw (before), after each colour
    normalisation to A and after each translator's B -> A (`translators[domain][method]`, a callable on uint8
    images)."""
    folder = Path(folder)
    source = _load(folder / f"{SOURCE_DOMAIN}.npz")
    test_labels, reference_images = source.labels("test"), source.images("train")
    variants = {}
    for name in domains:
        shifted = _load(folder / f"{name}.npz")
        if not np.array_equal(shifted.labels("test"), test_labels):
            raise UserError(f"{folder / name}.npz holds other test cells than {SOURCE_DOMAIN}.npz: make both with "
                            f"one `bloodgen domains make`")
        images = shifted.images("test")
        variants[name] = {BEFORE: images, **{method: normalise(images, reference_images)
                                             for method, normalise in NORMALISERS.items()},
                          **{method: translate(images) for method, translate in (translators or {}).get(name, {}).items()}}
    return variants


def evaluate_domain_shift(folder: str | Path, variants: Mapping[str, Mapping[str, np.ndarray]],
                          recipe: ClassifierRecipe, seed: int = 0, cache_dir: str | Path | None = None) -> dict:
    """Every row of the table for one classifier seed: {"A": scores, domain: {before, <method>..., oracle}}."""
    folder = Path(folder)
    recipe = replace(recipe, seed=seed)
    source = _load(folder / f"{SOURCE_DOMAIN}.npz")
    s_a, _ = reference_classifier(source, recipe, cache_dir=cache_dir)
    test_labels = source.labels("test")
    a_proba = predict_proba(s_a, source.images("test"))
    a_pred = a_proba.argmax(1)
    results: dict = {SOURCE_DOMAIN: _scores(test_labels, a_proba, None)}
    for name, methods in variants.items():
        rows = {method: _scores(test_labels, predict_proba(s_a, images), a_pred) for method, images in methods.items()}
        shifted = _load(folder / f"{name}.npz")
        oracle, _ = reference_classifier(shifted, recipe, cache_dir=cache_dir)
        rows[ORACLE] = _scores(test_labels, predict_proba(oracle, shifted.images("test")), None)
        results[name] = rows
    return results


def domain_shift_study(folder: str | Path, domains: tuple[str, ...] = tuple(DOMAINS), seeds: tuple[int, ...] = (0,),
                       recipe: ClassifierRecipe | None = None, cache_dir: str | Path | None = None,
                       variants: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> dict:
    """`evaluate_domain_shift` for every seed, with mean and std over seeds of every figure; `variants` (from
    `test_variants`, to add translators) default to the raw and colour-normalised test cells."""
    get_domains(domains)
    recipe = recipe or default_recipe()
    variants = variants if variants is not None else test_variants(folder, domains)
    per_seed = {s: evaluate_domain_shift(folder, variants, recipe, s, cache_dir) for s in seeds}
    first = per_seed[seeds[0]]

    def summary(path: tuple[str, ...]) -> dict:
        return summarise([_dig(per_seed[s], path) for s in seeds])

    table = {SOURCE_DOMAIN: {k: summary((SOURCE_DOMAIN, k)) for k in first[SOURCE_DOMAIN]}}
    for name in domains:
        table[name] = {row: {k: summary((name, row, k)) for k in first[name][row]} for row in first[name]}
    methods = sorted({m for rows in variants.values() for m in rows} - {BEFORE, *NORMALISERS})
    return {"domains": list(domains), "seeds": list(seeds), "recipe": asdict(recipe), "translators": methods,
            "results": table}


def _dig(record: dict, path: tuple[str, ...]):
    for key in path:
        record = record[key]
    return record


def table(study: dict):
    """Table 3's layout as a report Table: one row per domain, S_A before and after each normalisation, the
    oracle, the ceiling (macro F1 %), and the class flips (%)."""
    def cell(block: dict) -> str:
        return f"{100 * block['mean']:.1f}" + ("" if block["std"] is None else f" ± {100 * block['std']:.1f}")

    results = study["results"]
    after = [*NORMALISERS, *study.get("translators", ())]
    columns = [BEFORE, *after, ORACLE]
    header = (["domain", "S_A on A (ceiling)"] + [f"S_A {c}" if c != ORACLE else "oracle" for c in columns]
              + ["class flips before"] + [f"flips {m}" for m in after])
    rows = [[name, cell(results[SOURCE_DOMAIN]["macro_f1"])]
            + [cell(results[name][c]["macro_f1"]) if c in results[name] else "-" for c in columns]
            + [cell(results[name][c]["class_flips"]) if c in results[name] else "-" for c in [BEFORE, *after]]
            for name in study["domains"]]
    seeds = ", ".join(map(str, study["seeds"]))
    return Table(header, rows, caption=f"Macro F1 % and class flips % on the same test cells; S_A trained on domain "
                                       f"A's train part, each oracle on its domain's; classifier seeds {seeds}")


def markdown_table(study: dict) -> str:
    return to_markdown(Document("", [table(study)])).strip()


def report_blocks(study: dict) -> list:
    return [Heading("A classifier of one lab in another"),
            Paragraph("Shifted domains of the same cells (`bloodgen domains make`: artificial, stain, scope; "
                      "docs/domains.md): the reference ResNet-18 recipe trained on domain A's part of the train "
                      "split, scored before and after colour normalisation to A, beside an oracle trained in "
                      "the shifted domain."), table(study)]
