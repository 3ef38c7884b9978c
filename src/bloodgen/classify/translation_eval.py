"""What a translation does to the images themselves, beside what the classifier sees (`domain_shift`).

The test cells are the same in every domain, so each shifted, normalised or translated test image has its
original: SSIM and PSNR between the two measure how much of the cell survives (a translation that invents
another cell scores low even when its colours are right). FID and KID of a variant's test images against
domain A's real images (all of A's file, Inception features cached per file) say whether it looks like A,
beside the real-vs-real floor at the same N; for the translators also the other direction, A's test cells
translated to B against B's images (the AGGAN study's Tables 1-2).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bloodgen.classify.domain_shift import domain_shift_study, test_variants
from bloodgen.classify.recipe import ClassifierRecipe
from bloodgen.data.domains import SOURCE_DOMAIN, read_domain
from bloodgen.errors import UserError
from bloodgen.metrics.protocol import calculate_metrics
from bloodgen.metrics.registry import FID, KID
from bloodgen.models.translation import TO_A, TO_B, translate_array
from bloodgen.provenance import file_sha256, portable_path
from bloodgen.report.document import Heading, Paragraph, Table
from bloodgen.sampling.api import LoadedModel
from bloodgen.sampling.translate import check_translator


def paired_fidelity(images: np.ndarray, originals: np.ndarray) -> dict[str, float]:
    """Mean SSIM (skimage's 7x7 window, colour) and PSNR (dB) of each image against its original."""
    ssim = [structural_similarity(x, y, channel_axis=-1, data_range=255) for x, y in zip(images, originals)]
    with np.errstate(divide="ignore"):  # an unchanged image has infinite PSNR: capped at 100 dB
        psnr = [min(peak_signal_noise_ratio(y, x, data_range=255), 100.0) for x, y in zip(images, originals)]
    return {"ssim": float(np.mean(ssim)), "psnr_db": float(np.mean(psnr))}


def distribution_figures(images: np.ndarray, reference: Path, n: int, cache_dir: str | Path | None) -> dict:
    """FID and KID of N of `images` against the reference file's images, with the disjoint floor at that N."""
    result = calculate_metrics(images, n=min(n, len(images)), seeds=(0,), floor=True, data=reference,
                               metrics=("fid", "kid"), cache_dir=cache_dir, progress=False)
    floor = result["floor"]["disjoint"]
    return {"n": result["protocol"]["n"], "fid": result[FID.key]["mean"], "kid": result[KID.key]["mean"],
            "floor_fid": floor[FID.key]["mean"], "floor_kid": floor[KID.key]["mean"]}


def image_figures(folder: str | Path, variants: Mapping[str, Mapping[str, np.ndarray]], fid_n: int = 0,
                  reverse: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                  cache_dir: str | Path | None = None) -> dict:
    """{"paired": {domain: {method: figures}}, "reverse": {domain: {method: figures}}}: each variant's paired
    fidelity to A's test cells and, with `fid_n` > 0, its FID/KID against A; `reverse[domain][method]`, A's
    test cells translated into the domain, against the domain's images (FID only with `fid_n`)."""
    folder = Path(folder)
    reference = folder / f"{SOURCE_DOMAIN}.npz"
    originals = read_domain(reference).images("test")
    paired: dict = {}
    for name, methods in variants.items():
        paired[name] = {}
        for method, images in methods.items():
            paired[name][method] = paired_fidelity(images, originals)
            if fid_n:
                paired[name][method].update(distribution_figures(images, reference, fid_n, cache_dir))
    back: dict = {}
    for name, methods in (reverse or {}).items():
        shifted = read_domain(folder / f"{name}.npz").images("test")
        back[name] = {method: {**paired_fidelity(images, shifted),
                               **(distribution_figures(images, folder / f"{name}.npz", fid_n, cache_dir)
                                  if fid_n else {})} for method, images in methods.items()}
    return {"fid_n": fid_n, "paired": paired, "reverse": back}


def _fid(block: dict) -> str:
    return f"{block['fid']:.1f} (floor {block['floor_fid']:.1f})" if "fid" in block else "-"


def tables(figures: dict) -> list:
    """The paired-fidelity table of every variant and, where translators ran, both directions' FID."""
    header = ["domain", "images", "SSIM to the original", "PSNR dB", "FID vs A", "KID x 1000 vs A"]
    rows = [[name, method, f"{f['ssim']:.3f}", f"{f['psnr_db']:.1f}", _fid(f),
             f"{1000 * f['kid']:.2f}" if "kid" in f else "-"]
            for name, methods in figures["paired"].items() for method, f in methods.items()]
    n = f" at N = {figures['fid_n']:,} (disjoint real-vs-real floor beside it)" if figures["fid_n"] else ""
    out = [Table(header, rows, caption=f"Each variant of the shifted test cells against the same cells in A{n}")]
    if figures["reverse"]:
        methods = sorted({m for r in figures["reverse"].values() for m in r})
        header = ["domain"] + [f"{m} {d}" for d in ("B -> A", "A -> B") for m in methods]
        rows = [[name] + [_fid(figures["paired"][name].get(m, {})) for m in methods]
                + [_fid(figures["reverse"][name].get(m, {})) for m in methods] for name in figures["reverse"]]
        out.append(Table(header, rows, caption="FID of translations in both directions against the real images "
                                               "of the target domain (the AGGAN study's Tables 1-2)"))
    return out


def report_blocks(figures: dict, spread: dict | None = None) -> list:
    return [Heading("What the translation does to the cells"),
            Paragraph("SSIM and PSNR compare each test cell's variant with the same cell in domain A; FID and KID "
                      "compare the variants' distribution with A's images."), *tables(figures),
            *seed_table(spread or {})]


def translation_study(folder: str | Path, domains: tuple[str, ...], seeds: tuple[int, ...],
                      recipe: ClassifierRecipe | None, translators: Mapping[str, list[LoadedModel]],
                      fid_n: int = 0, cache_dir: str | Path | None = None) -> dict:
    """The classifier's table (`domain_shift_study`) with each translation model's B -> A as one more column,
    and the image figures of every variant; `translators[domain]` holds runs trained from that domain into A,
    one column per run: named by its family, or by family and training seed where a family has several runs
    (their spread over training seeds is then summarised in "translator_seeds")."""
    methods: dict[str, dict[str, LoadedModel]] = {}
    for name, models in translators.items():
        if name not in domains:
            raise UserError(f"a translator is given for domain {name!r}, which is not among --domains "
                            f"({', '.join(domains)})")
        runs = Counter(model.spec.model for model in models)
        for model in models:
            check_translator(model)
            _check_source(model, Path(folder) / f"{name}.npz")
            key = model.spec.model if runs[model.spec.model] == 1 else f"{model.spec.model}-s{model.spec.seed}"
            if key in methods.setdefault(name, {}):
                raise UserError(f"two {model.spec.model} runs of training seed {model.spec.seed} are given for "
                                f"domain {name!r}: give each seed once")
            methods[name][key] = model
    variants = test_variants(folder, domains, translators={
        name: {method: _translator(model, TO_A) for method, model in models.items()}
        for name, models in methods.items()})
    study = domain_shift_study(folder, domains, seeds, recipe, cache_dir, variants)
    originals = read_domain(Path(folder) / f"{SOURCE_DOMAIN}.npz").images("test")
    reverse = {name: {method: translate_array(model.network, originals, TO_B)[0] for method, model in models.items()}
               for name, models in methods.items()}
    study["images"] = image_figures(folder, variants, fid_n, reverse, cache_dir)
    study["translator_seeds"] = seed_spread(study, methods)
    study["translator_runs"] = {name: {method: {"source": portable_path(str(model.source)), "step": model.step,
                                                "config": _portable_spec(model)}
                                       for method, model in models.items()} for name, models in methods.items()}
    return study


def seed_spread(study: dict, methods: Mapping[str, Mapping[str, LoadedModel]]) -> dict:
    """{domain: {family: figures}} for every family with several training seeds in a domain: S_A's macro F1 and
    balanced accuracy (each run's mean over classifier seeds) and its image figures, mean ± std over the runs."""
    spread: dict = {}
    for name, models in methods.items():
        families: dict[str, list[str]] = {}
        for key, model in models.items():
            families.setdefault(model.spec.model, []).append(key)
        for family, keys in families.items():
            if len(keys) < 2:
                continue
            scores = study["results"][name]
            images = study["images"]["paired"][name]
            figures = {f: [scores[k][f]["mean"] for k in keys] for f in ("macro_f1", "balanced_accuracy")}
            figures.update({f: [images[k][f] for k in keys] for f in ("ssim", "fid") if f in images[keys[0]]})
            spread.setdefault(name, {})[family] = {
                "runs": keys, **{f: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "values": v}
                                 for f, v in figures.items()}}
    return spread


def seed_table(spread: dict) -> list:
    """The families' spread over translator training seeds, where there is one."""
    if not spread:
        return []

    def cell(block: dict | None, scale: float = 1.0, digits: int = 1) -> str:
        return "-" if block is None else f"{scale * block['mean']:.{digits}f} ± {scale * block['std']:.{digits}f}"

    rows = [[name, family, str(len(f["runs"])), cell(f["macro_f1"], 100), cell(f["balanced_accuracy"], 100),
             cell(f.get("fid")), cell(f["ssim"], digits=3)]
            for name, families in spread.items() for family, f in families.items()]
    return [Table(["domain", "translator", "training seeds", "S_A macro F1 %", "S_A balanced acc. %", "FID vs A",
                   "SSIM"], rows, caption="Translators over their training seeds: mean ± std over the runs, each "
                                          "run's classifier figures being its mean over the classifier seeds")]


def _portable_spec(model: LoadedModel) -> dict:
    spec = model.spec.to_dict()
    spec["config"] = {**spec["config"], "source_domain": portable_path(spec["config"]["source_domain"])}
    return spec


def _check_source(model: LoadedModel, domain: Path) -> None:
    """A translator must have been trained from this domain's file: the same content where its recorded file
    is at hand, else the same file name."""
    recorded = Path(model.spec.config["source_domain"])
    same = (file_sha256(recorded) == file_sha256(domain)) if recorded.is_file() and domain.is_file() \
        else recorded.name == domain.name
    if not same:
        raise UserError(f"{model.source} was trained from {recorded}, not from {domain}: give each domain the "
                        f"translator trained from it (DOMAIN=RUN)")


def _translator(model: LoadedModel, direction: str):
    return lambda images: translate_array(model.network, images, direction)[0]
