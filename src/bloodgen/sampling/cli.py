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

    p = subparsers.add_parser(
        "sample", help="draw images from a trained model (checkpoint, export or run folder) into an .npz",
        description="Sample a trained model with its EMA weights. Class-conditional models draw labels in "
                    "the training class proportions (--prior, the default), equally (--balanced) or one class.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="run folder, checkpoint .pt, exported model.safetensors (with its model.json), or "
                        "pretrained:NAME for the weights shipped with bloodgen (see results/README.md)")
    p.add_argument("-n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (noise and labels)")
    classes = p.add_mutually_exclusive_group()
    classes.add_argument("--class", dest="klass", metavar="C", default=None,
                         help="only this class: index 0-7 or name (e.g. neutrophil)")
    classes.add_argument("--balanced", action="store_true", help="equal numbers of every class")
    classes.add_argument("--prior", action="store_true", help="training class proportions (the default)")
    p.add_argument("--sampler", default=None, help="diffusion sampler: ddpm, ddim or dpm (default: the model's config)")
    p.add_argument("--steps", type=int, default=None,
                   help="diffusion sampling steps (default: the config's sample_steps; all for ddpm)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale, 1 = none (default: the model's config)")
    p.add_argument("--eta", type=float, default=None,
                   help="ddim sampler's noise: 0 deterministic, 1 ancestral (default: the model's config)")
    p.add_argument("--temperature", type=float, default=None, help="VAE latent temperature (default: config)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per forward pass, changes speed only (default: 64 on CPU, 256 on a GPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--out", metavar="FILE.npz", required=True, help="output file")
    p.add_argument("--grid", metavar="FILE.png", default=None, help="also write the first 64 images as a grid")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from bloodgen.errors import UserError
    from bloodgen.metrics.inputs import UNLABELLED
    from bloodgen.provenance import atomic_path, environment, file_digests, write_json
    from bloodgen.sampling.api import BALANCED, NPZ_IMAGES, NPZ_LABELS, PRIOR, default_batch_size, load_model, sample
    from bloodgen.sampling.grid import save_grid

    if args.n < 1:
        raise UserError(f"-n must be >= 1, got {args.n}")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise UserError(f"--out must name a .npz file, got {out}")
    model = load_model(args.checkpoint, args.device)
    classes = args.klass if args.klass is not None else (BALANCED if args.balanced else PRIOR)
    batch_size = default_batch_size(model.device) if args.batch_size is None else args.batch_size
    options = {"sampler": args.sampler, "steps": args.steps, "guidance": args.guidance, "eta": args.eta,
               "temperature": args.temperature}
    t0 = time.perf_counter()
    images, labels = sample(model, args.n, args.seed, classes=classes, batch_size=batch_size,
                            progress=True, **options)
    seconds = time.perf_counter() - t0
    labels_out = labels if labels is not None else np.full(args.n, UNLABELLED, dtype=np.int64)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{NPZ_IMAGES: images, NPZ_LABELS: labels_out})
    source = model.source
    write_json(out.with_suffix(".json"), {
        "model": model.spec, "source": str(source), "source_sha256": file_digests(source, ("sha256",))["sha256"],
        "step": model.step, "n": args.n, "seed": args.seed, "classes": classes, "batch_size": batch_size,
        "sampler_options": {k: v for k, v in options.items() if v is not None}, "device": str(model.device),
        "sampling_time_s": round(seconds, 3), "environment": environment()})
    if args.grid:
        save_grid(images[:64], args.grid, ncol=8)
    print(f"wrote {args.n} samples of {model.spec['model']} (step {model.step}) to {out} in {seconds:.1f} s "
          f"on {model.device}")
    return 0
