"""`bloodgen train`: train one model family with a preset, optionally overridden; resume a run."""

from __future__ import annotations

import argparse

from bloodgen.models.registry import REGISTRY

EXAMPLES = """\
models:
{models}

examples:
  bloodgen train --model ddpm                          # quick preset, seed 0, into runs/
  bloodgen train --model cgan --preset full --seed 3 --out runs
  bloodgen train --model vae --set beta=0.5 --set latent_dim=64
  bloodgen train --model ddpm --preset full --config my-ddpm.json
  bloodgen train --model ldm --preset record --set ae_steps=1500       # latent diffusion
  bloodgen train --resume runs/20250101-120000-ddpm-s0                 # continue after Ctrl-C
  bloodgen train --resume runs/20250101-120000-ddpm-s0 --steps 200000  # extend a finished run
  bloodgen train --model ddpm --preset full --max-minutes 9            # stop cleanly, resume later
  torchrun --nproc_per_node 4 -m bloodgen train --model ddpm --preset full   # DDP, one process per GPU
  accelerate launch -m bloodgen train --model ddpm --preset full

Exit status: 0 finished, 3 stopped by --max-minutes, 130 stopped by Ctrl-C (both resumable),
2 a user error (one line on stderr).
Presets and every config key: src/bloodgen/configs/<model>.json and docs/models.md.
"""


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter
    from bloodgen.data.cli import add_data_argument

    width = max(map(len, REGISTRY))
    models = "\n".join(f"  {name:{width}s} {spec.summary}" for name, spec in REGISTRY.items())
    p = subparsers.add_parser(
        "train", help=f"train a generative model ({', '.join(REGISTRY)}) into a run folder",
        description="Train a model family on the BloodMNIST train split. The same command runs on CPU, "
                    "one GPU, or several GPUs under torchrun/accelerate launch. Writes a run folder with "
                    "the resolved config, versions, data hash, loss log, sample grids, checkpoints and the "
                    "final EMA weights (model.safetensors). Ctrl-C saves a checkpoint before stopping.",
        epilog=EXAMPLES.format(models=models), formatter_class=HelpFormatter)
    # Names are checked by the registry (a one-line error), not by argparse choices.
    p.add_argument("--model", metavar="NAME", default=None,
                   help=f"model family: {', '.join(REGISTRY)} (required unless --resume)")
    p.add_argument("--preset", default="quick",
                   help="quick: <= 3 min on 2 CPU cores; cpu: 15-55 min on 2 CPU cores, the largest budget of a "
                        "CPU-only study; record: the protocol of record's CPU recipe (<= 2 h); gpu: minutes of one "
                        "large GPU; full: the long recipe (GPU)")
    p.add_argument("--config", metavar="FILE", default=None, help="JSON object of config keys overriding the preset")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="assignments",
                   help="override one config key (value parsed as JSON), repeatable; applied after --config")
    p.add_argument("--seed", type=int, default=0, help="seed of initial weights, data order and noise")
    p.add_argument("--out", metavar="DIR", default="runs", help="parent folder of the run folder")
    add_data_argument(p)
    p.add_argument("--resume", metavar="RUN_OR_CKPT", default=None,
                   help="continue a run folder (or checkpoint file) bit-for-bit where it stopped")
    p.add_argument("--steps", type=int, default=None, help="total optimiser steps (overrides the config's 'steps')")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop with a checkpoint after this much wall time (resume later)")
    p.add_argument("--keep-every", type=int, default=0, metavar="N",
                   help="also keep the checkpoint of every N-th step as checkpoints/step-<step>.pt (to pick one later)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs are still written)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bloodgen.training.records import COMPLETED, INTERRUPTED, TIME_LIMIT

    EXIT_CODES = {COMPLETED: 0, TIME_LIMIT: 3, INTERRUPTED: 130}

    result = _train_or_resume(args)
    if _is_main():
        s = result.summary
        print(f"{s.model} s{s.seed}: {result.status} at step {result.step}/{s.steps} "
              f"in {s.train_time_s:.1f} s of training on {s.device} x{s.processes}; run folder {result.run_dir}")
        if result.export:
            print(f"EMA weights: {result.export}; sample with: bloodgen sample {result.run_dir} -n 1000 --out samples.npz")
    _end_distributed()
    return EXIT_CODES[result.status]


def _train_or_resume(args: argparse.Namespace):
    from bloodgen import checks
    from bloodgen.errors import UserError
    from bloodgen.models.config import parse_assignments
    from bloodgen.training.loop import RunOptions, resume, train

    checks.positive(args.keep_every, "--keep-every", minimum=0)
    options = RunOptions(args.data, args.max_minutes, args.cpu, not args.no_progress, args.keep_every)
    if args.resume is not None:
        if args.model is not None or args.config is not None or args.assignments:
            raise UserError("--resume continues a run with its saved config; drop --model, --config and --set "
                            "(only --steps may change, to extend the run)")
        return resume(args.resume, steps=args.steps, options=options)
    if args.model is None:
        raise UserError("give --model NAME (or --resume RUN_DIR to continue a run)")
    overrides = parse_assignments(args.assignments)
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps must be >= 1, got {args.steps}")
        overrides["steps"] = args.steps
    return train(args.model, preset=args.preset, config_file=args.config, overrides=overrides or None,
                 seed=args.seed, out=args.out, options=options)


def _is_main() -> bool:
    from accelerate.state import PartialState

    return PartialState().is_main_process


def _end_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
