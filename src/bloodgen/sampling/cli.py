"""`bloodgen sample`: draw N images (and their class labels) from a trained model into an .npz file."""

from __future__ import annotations

import argparse
import time

EXAMPLES = """\
examples:
  bloodgen sample pretrained:ddpm -n 64 --balanced --out ddpm.npz --grid ddpm.png   # shipped weights
  bloodgen sample runs/20250101-120000-ddpm-s0 -n 10000 --seed 1 --out ddpm-s1.npz --grid ddpm-s1.png
  bloodgen sample runs/20250101-120000-cgan-s0/model.safetensors -n 800 --balanced --out cgan.npz
  bloodgen sample runs/.../checkpoints/checkpoint.pt -n 64 --class neutrophil --out neutrophils.npz
  bloodgen sample RUN -n 10000 --sampler ddim --steps 50 --guidance 2.0 --out ddim50.npz
  bloodgen sample RUN -n 10000 --sampler ddpm --out ancestral.npz      # all 1000 steps
  bloodgen sample pretrained:ddpm -n 1000 --eta 1 --out eta1.npz      # stochastic DDIM: no colour cast

The .npz holds `images` uint8 (N, 28, 28, 3) and `labels` int64 (N,) (-1 for unconditional models, which
`bloodgen evaluate` reads as no labels);
FILE.json beside it records the model, seed, sampler settings and timing. The same model, seed, device
and --batch-size give identical images; another --batch-size gives the same noise and labels, so the
images agree up to float rounding (a rare pixel off by one level in a diffusion sampler).
"""


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter
    from bloodgen.models.registry import families_with, sampler_flags
    from bloodgen.sampling.pretrained import PRETRAINED_PREFIX, pretrained_names

    shipped = ", ".join(PRETRAINED_PREFIX + name for name in pretrained_names()) or "none in this install"
    p = subparsers.add_parser(
        "sample", help="draw images from a trained model (checkpoint, export or run folder) into an .npz",
        description="Sample a trained model with its EMA weights. Class-conditional models draw labels in "
                    "the training class proportions (--prior, the default), equally (--balanced) or one class.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help=f"run folder, checkpoint .pt, exported model.safetensors (with its model.json), or "
                        f"a model shipped with bloodgen: {shipped}")
    p.add_argument("-n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (noise and labels)")
    classes = p.add_mutually_exclusive_group()
    classes.add_argument("--class", dest="klass", metavar="C", default=None,
                         help="only this class: index 0-7 or name (e.g. neutrophil)")
    classes.add_argument("--balanced", action="store_true", help="equal numbers of every class")
    classes.add_argument("--prior", action="store_true", help="training class proportions (the default)")
    sampler = p.add_argument_group("sampler options", "each family's own (from the family registry); a model "
                                                      "refuses the options of other families")
    for option in sampler_flags().values():
        sampler.add_argument(option.flag, dest=option.name, type=option.type, default=None,
                             help=f"{option.help} [{', '.join(families_with(option.name))}]")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per forward pass, changes speed only (default: 64 on CPU, 256 on a GPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--out", metavar="FILE.npz", required=True, help="output file (FILE.json is written beside it)")
    p.add_argument("--grid", metavar="FILE.png", default=None,
                   help="also write a grid: one row of 8 per class with its name for a class-conditional model, "
                        "the first 64 images otherwise")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace):
    """Every option that can be checked without the model, before it is loaded: (out, record, grid, device)."""
    from bloodgen import checks

    checks.positive(args.n, "-n")
    checks.seed(args.seed)
    checks.positive(args.batch_size, "--batch-size")
    checks.positive(args.steps, "--steps")
    out = checks.output_file(args.out, "--out", ".npz")
    record = checks.output_file(out.with_suffix(".json"), "--out (its .json record)")
    grid = checks.output_file(args.grid, "--grid", ".png") if args.grid else None
    return out, record, grid, checks.device(args.device)


def run(args: argparse.Namespace) -> int:
    import warnings

    from bloodgen.data import CLASS_NAMES
    from bloodgen.models.registry import sampler_flags
    from bloodgen.provenance import environment, file_sha256, write_json
    from bloodgen.report.grid import save_class_grid, save_grid
    from bloodgen.samplefile import UNLABELLED, write_samples
    from bloodgen.sampling.api import BALANCED, PRIOR, default_batch_size, load_model, sample

    out, record, grid, device = _check_args(args)
    model = load_model(args.checkpoint, device)
    classes = args.klass if args.klass is not None else (BALANCED if args.balanced else PRIOR)
    if args.balanced and not model.conditional:
        warnings.warn(f"{model.spec.model} is unconditional: --balanced has no effect (labels are {UNLABELLED})")
    batch_size = default_batch_size(model.device) if args.batch_size is None else args.batch_size
    options = model.family.check_sampler_options({name: getattr(args, name) for name in sampler_flags()})
    t0 = time.perf_counter()
    images, labels = sample(model, args.n, args.seed, classes=classes, batch_size=batch_size,
                            progress=not args.quiet, **options)
    seconds = time.perf_counter() - t0
    write_samples(out, images, labels)
    source = model.source
    write_json(record, {
        "model": model.spec.to_dict(), "source": str(source), "source_sha256": file_sha256(source),
        "step": model.step, "n": args.n, "seed": args.seed, "classes": classes, "batch_size": batch_size,
        "sampler_options": options, "device": str(model.device),
        "sampling_time_s": round(seconds, 3), "environment": environment()})
    written = [out, record]
    if grid is not None:
        if labels is not None:
            save_class_grid(images, labels, grid, CLASS_NAMES)
        else:
            save_grid(images[:64], grid, ncol=8)
        written.append(grid)
    print(f"wrote {args.n} samples of {model.spec.model} (step {model.step}) in {seconds:.1f} s on "
          f"{model.device}: {', '.join(map(str, written))}")
    return 0
