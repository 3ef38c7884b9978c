"""`bloodgen turing make|score|c2st`: can a person, or a network, tell generated cells from real ones?"""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  bloodgen turing make pretrained:ddpm --n 50 --out quiz                 # quiz/index.html + quiz/answer_key.json
  bloodgen turing make ddpm-samples.npz --n 50 --seed 1 --out quiz-2
  bloodgen turing score quiz/answer_key.json answers-alice.json answers-bob.json --json scores.json
  bloodgen turing c2st pretrained:ddpm --n 5000 --out c2st-ddpm.json      # the classifier two-sample test
"""


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter

    p = subparsers.add_parser(
        "turing", help="real or generated? an HTML quiz for people and the classifier two-sample test",
        description="In place of an expert Turing test: `make` writes a self-contained HTML quiz of shuffled real "
                    "and generated cells (the answer key apart), `score` scores raters' answer files against the "
                    "key, and `c2st` trains a ResNet-18 to tell generated from real images and reports its held-out "
                    "accuracy (50 %: indistinguishable).", epilog=EXAMPLES, formatter_class=HelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add_make(actions, HelpFormatter)
    _add_score(actions, HelpFormatter)
    _add_c2st(actions, HelpFormatter)


def _add_source(p) -> None:
    from bloodgen.data.cli import add_data_argument

    p.add_argument("samples", metavar="SAMPLES",
                   help="an .npz of samples, or a model (run folder, checkpoint, export, pretrained:NAME) to sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (and of sampling a model)")
    add_data_argument(p)


def _add_make(actions, formatter) -> None:
    m = actions.add_parser(
        "make", help="write OUT/index.html (the quiz) and OUT/answer_key.json",
        description="N generated and N real cells (the real ones from the test split), class-balanced where "
                    "labelled, shuffled into one self-contained page: a rater calls each cell real or generated, "
                    "may name its type, and saves the answers as JSON. The key stays in OUT/answer_key.json.",
        epilog=EXAMPLES, formatter_class=formatter)
    _add_source(m)
    m.add_argument("--n", type=int, default=50, help="cells per side")
    m.add_argument("--out", metavar="DIR", required=True, help="the quiz folder")
    m.set_defaults(func=run_make)


def _add_score(actions, formatter) -> None:
    s = actions.add_parser(
        "score", help="score raters' answer files against the key",
        description="Per rater: accuracy with its exact 95 % interval and the binomial p-value against chance, "
                    "sensitivity (generated called generated), specificity (real called real) and how often a "
                    "named cell type matches the label; then all raters pooled.", epilog=EXAMPLES,
        formatter_class=formatter)
    s.add_argument("key", metavar="KEY.json", help="the quiz's answer_key.json")
    s.add_argument("answers", nargs="+", metavar="ANSWERS.json", help="answer files saved from the quiz")
    s.add_argument("--json", metavar="FILE", default=None, help="also write the scores as JSON")
    s.set_defaults(func=run_score)


def _add_c2st(actions, formatter) -> None:
    from bloodgen.classify.recipe import add_recipe_argument

    c = actions.add_parser(
        "c2st", help="the classifier two-sample test: can a ResNet-18 tell generated from real images?",
        description="N generated and N real images (the real ones from all splits; both class-balanced where "
                    "labelled): a ResNet-18 trained on 60 %, its epoch picked on 20 %, scored on the held-out "
                    "20 %: accuracy with its exact 95 % interval, p-value against chance, sensitivity, specificity.",
        epilog=EXAMPLES, formatter_class=formatter)
    _add_source(c)
    c.add_argument("--n", type=int, default=5000, help="images per side")
    add_recipe_argument(c, "ResNet-18 recipe")
    c.add_argument("--out", metavar="FILE.json", required=True, help="the result")
    c.set_defaults(func=run_c2st)


def _generated(args: argparse.Namespace, n: int):
    """(images, labels or None): the .npz's, or n class-balanced samples of the model."""
    from pathlib import Path

    from bloodgen.metrics.inputs import load_images
    from bloodgen.sampling.api import BALANCED, load_model, sample

    if Path(args.samples).suffix.lower() == ".npz":
        loaded = load_images(args.samples)
        return loaded.images, loaded.labels
    return sample(load_model(args.samples), n, args.seed, classes=BALANCED, progress=True)


def run_make(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.classify.quiz import QUIZ_FILE, make_quiz
    from bloodgen.data import load_bloodmnist
    from bloodgen.provenance import portable_path

    out = checks.output_folder(args.out, "--out")
    checks.positive(args.n, "--n")
    checks.seed(args.seed)
    data = load_bloodmnist(args.data)
    generated = _generated(args, 2 * args.n)
    test = data.split("test")
    make_quiz(generated, test if generated[1] is not None else (test[0], None), args.n, out, args.seed,
              source={"samples": portable_path(args.samples), "real": "test split", "data": data.provenance()})
    print(f"quiz: {out / QUIZ_FILE} ({2 * args.n} cells); keep {out / 'answer_key.json'} apart")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from bloodgen.classify.quiz import pooled_scores, read_json, score_answers
    from bloodgen.errors import UserError
    from bloodgen.provenance import write_json

    key = read_json(args.key, "KEY.json")
    if not isinstance(key, dict) or "items" not in key:
        raise UserError(f"{args.key} is not a quiz answer key (no 'items'): give the quiz's answer_key.json")
    files = [read_json(path, "ANSWERS.json") for path in args.answers]
    raters = [score_answers(key, answers) for answers in files]
    pooled = pooled_scores(key, files)
    for r in [*raters, pooled]:
        a = r["accuracy"]
        rate = "n/a" if a["rate"] is None else f"{a['rate']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"
        print(f"{r['rater']}: {r['answered']} answered, accuracy {rate}, sensitivity {_fmt(r['sensitivity'])}, "
              f"specificity {_fmt(r['specificity'])}, class agreement {_fmt(r['class_agreement'])}")
    if args.json:
        write_json(args.json, {"raters": raters, "pooled": pooled})
    return 0


def _fmt(block: dict) -> str:
    return "n/a" if block["rate"] is None else f"{block['rate']:.3f} (n={block['n']})"


def run_c2st(args: argparse.Namespace) -> int:
    import numpy as np

    from bloodgen import checks
    from bloodgen.classify.reference import chosen_recipe
    from bloodgen.classify.two_sample import balanced_draw, classifier_two_sample_test
    from bloodgen.data import N_CLASSES, load_bloodmnist
    from bloodgen.provenance import environment, portable_path, write_json

    out = checks.output_file(args.out, "--out", ".json")
    checks.positive(args.n, "--n", minimum=10)
    checks.seed(args.seed)
    data = load_bloodmnist(args.data)
    rng = np.random.default_rng(args.seed)
    images, labels = _generated(args, args.n)
    generated = balanced_draw(images, labels, args.n, rng, N_CLASSES)[0]
    # Class-balanced against labelled samples; at random (the data's class mix) against an unconditional model's.
    real = balanced_draw(data.images("all"), data.labels("all") if labels is not None else None, args.n, rng,
                         N_CLASSES)[0]
    recipe = chosen_recipe(args.classifier_recipe)
    result = classifier_two_sample_test(generated, real, recipe, args.seed)
    write_json(out, {**result.to_json(), "samples": portable_path(args.samples), "seed": args.seed, "recipe": vars(recipe),
                     "data": data.provenance(), "environment": environment()})
    print(f"held-out accuracy {result.accuracy:.3f} [{result.ci95[0]:.3f}, {result.ci95[1]:.3f}] on {result.n_test} "
          f"images (p = {result.p_value:.2g}); sensitivity {result.sensitivity:.3f}, specificity "
          f"{result.specificity:.3f}: {out}")
    return 0
