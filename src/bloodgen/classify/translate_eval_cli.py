"""`bloodgen translate-eval`: a classifier of domain A fed each shifted domain raw, colour-normalised and
translated back to A (the AGGAN study's Table 3, with a cell-type classifier as the application)."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  bloodgen domains make --out domains
  bloodgen translate-eval --folder domains --seeds 0 1 2 --out domain-shift            # no translators yet
  bloodgen train --model cyclegan --preset cpu --data domains/A.npz --set source_domain=domains/stain.npz
  bloodgen train --model aggan --preset cpu --data domains/A.npz --set source_domain=domains/stain.npz
  bloodgen translate-eval --folder domains --domains stain --translators stain=runs/...-cyclegan-s0 \\
      stain=runs/...-aggan-s0 --fid-n 2000 --out translation
"""


def add_parser(subparsers) -> None:
    from bloodgen.classify.recipe import add_recipe_argument
    from bloodgen.cli import HelpFormatter
    from bloodgen.data.domains import DOMAINS

    p = subparsers.add_parser(
        "translate-eval", help="a classifier of domain A under each shift: raw, colour-normalised, translated",
        description="S_A (the reference ResNet-18 recipe trained on A.npz's train part alone) scored on the "
                    "same test cells in A (its ceiling), in each shifted domain (before), after each colour "
                    "normalisation to A, after each translation model's B -> A (--translators), and beside an "
                    "oracle trained on that domain's own train part: macro F1, balanced accuracy and the class "
                    "flips (cells whose prediction changes from A), mean ± std over --seeds. Beside them, what "
                    "each variant does to the cells: SSIM and PSNR to the same cell in A and, with --fid-n, FID "
                    "and KID against A's images with the real-vs-real floor, and the translators' A -> B against "
                    "the domain's images. Classifiers and A's Inception features are cached. Writes "
                    "OUT/translate_eval.json and OUT/translate_eval.md.", epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--folder", metavar="DIR", required=True, help="the output folder of `bloodgen domains make`")
    p.add_argument("--domains", nargs="+", metavar="NAME", default=list(DOMAINS),
                   help=f"shifted domains to score, from: {', '.join(DOMAINS)} (default: all)")
    p.add_argument("--translators", nargs="+", metavar="DOMAIN=RUN", default=[],
                   help="translation runs (cyclegan, aggan) trained from DOMAIN into A; several training seeds of a "
                        "family are columns <family>-s<seed> and summarised as mean ± std over the seeds")
    p.add_argument("--fid-n", type=int, default=0, metavar="N",
                   help="images per side for FID and KID of every variant (0: none; each set costs minutes on CPU)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="S", help="classifier seeds")
    add_recipe_argument(p, "ResNet-18 recipe of S_A and the oracles")
    p.add_argument("--cache-dir", default=None,
                   help="classifier and feature cache (default: $BLOODGEN_CACHE or ~/.cache/bloodgen)")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for translate_eval.json and .md")
    p.set_defaults(func=run)


def _translators(pairs: list[str]) -> dict[str, list[str]]:
    from bloodgen.errors import UserError

    out: dict[str, list[str]] = {}
    for pair in pairs:
        domain, sep, run = pair.partition("=")
        if not sep or not domain or not run:
            raise UserError(f"--translators expects DOMAIN=RUN (e.g. stain=runs/...-cyclegan-s0), got {pair!r}")
        out.setdefault(domain, []).append(run)
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bloodgen import checks
    from bloodgen.classify.domain_shift import table
    from bloodgen.classify.reference import chosen_recipe
    from bloodgen.classify.translation_eval import seed_table, tables, translation_study
    from bloodgen.data.domains import get_domains
    from bloodgen.provenance import environment, write_json, write_text
    from bloodgen.report.document import Document, Paragraph, to_markdown
    from bloodgen.sampling.api import load_model

    out = checks.output_folder(args.out, "--out")
    for seed in args.seeds:
        checks.seed(seed, "--seeds")
    checks.positive(args.fid_n, "--fid-n", minimum=0)
    get_domains(args.domains)
    runs = _translators(args.translators)
    translators = {domain: [load_model(run) for run in paths] for domain, paths in runs.items()}
    recipe = chosen_recipe(args.classifier_recipe)
    study = translation_study(Path(args.folder), tuple(args.domains), tuple(args.seeds), recipe, translators,
                              args.fid_n, args.cache_dir)
    study["environment"] = environment()
    seeds = ", ".join(map(str, args.seeds))
    document = Document("A classifier of domain A under each shift", [
        Paragraph(f"Macro F1 % and class flips % on the same test cells, mean ± std over classifier seeds {seeds}."),
        table(study), *tables(study["images"]), *seed_table(study["translator_seeds"])])
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "translate_eval.json", study)
    write_text(out / "translate_eval.md", to_markdown(document))
    print(to_markdown(Document("", document.blocks[1:])).strip())
    print(f"wrote {out / 'translate_eval.json'} and {out / 'translate_eval.md'}")
    return 0
