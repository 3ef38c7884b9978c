"""Seconds per training step of each family's preset, on this machine, without a whole run.

    python benchmarks/step_time.py --preset full --steps 3
    python benchmarks/step_time.py --preset quick --models vae gan --steps 20
    python benchmarks/step_time.py --preset cpu --cpu --steps 10 --variants baseline bf16 channels_last compile

--variants times each model several ways: `bf16` (accelerate's bf16 autocast), `channels_last` (networks
and batches in NHWC memory format), `compile` (torch.compile of each network, 3 warm-up steps so that
compilation is not timed); one JSON row per model and variant, with the speed-up over baseline.

--first-step numbers the timed steps from N instead of 0, for families whose step changes with the step
index: ldm trains its autoencoder for steps < ae_steps and its latent U-Net after, so

    python benchmarks/step_time.py --preset record --cpu --models ldm --first-step 1000 --steps 10

times the U-Net phase (on an untrained autoencoder's latents, which cost the same as a trained one's);
its row's estimated hours then cover the steps from N to the end, and the file name ends in -from<N>.

Uses the training loop's own step machinery (Accelerator, Stepper, the family's train_step) on random
batches of the preset's batch size, after one warm-up step; prints a Markdown table and writes
OUT/step-time-<preset>-<device>.json. This is how the full presets' cost is known on a machine
where training them is out of reach (e.g. the 16M-parameter U-Net on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from bloodgen.models.base import count_parameters  # noqa: E402
from bloodgen.models.config import PRESETS, resolve_config  # noqa: E402
from bloodgen.models.registry import get_family, model_names  # noqa: E402
from bloodgen.provenance import environment, write_json  # noqa: E402
from bloodgen.training.loop import Stepper, make_accelerator  # noqa: E402


VARIANTS = ("baseline", "bf16", "channels_last", "compile")


def time_steps(model: str, preset: str, steps: int, cpu: bool, variant: str = "baseline",
               first_step: int = 0) -> dict:
    config = resolve_config(model, preset)
    accelerator = make_accelerator(cpu, "bf16" if variant == "bf16" else config["mixed_precision"])
    family = get_family(model)(model, config, 8)
    torch.manual_seed(0)
    memory_format = torch.channels_last if variant == "channels_last" else torch.contiguous_format
    raw = {name: net.to(accelerator.device, memory_format=memory_format) for name, net in family.build().items()}
    optimizers = family.optimizers(raw)
    schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0) for n, o in optimizers.items()}
    prepared = accelerator.prepare(*raw.values(), *optimizers.values())
    networks, optimizers = dict(zip(raw, prepared[:len(raw)])), dict(zip(optimizers, prepared[len(raw):]))
    if variant == "compile":
        networks = {name: torch.compile(net) for name, net in networks.items()}
    ctx = Stepper(accelerator, networks, optimizers, schedulers, config["grad_clip"])
    b = config["batch_size"]
    x = (torch.rand(b, 3, 28, 28, device=accelerator.device) * 2 - 1).contiguous(memory_format=memory_format)
    y = torch.randint(0, 8, (b,), device=accelerator.device)
    warmup = 3 if variant == "compile" else 1
    times = []
    for step in range(steps + warmup):
        ctx.step = first_step + step
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses = family.train_step(networks, x, y, ctx)
        float(next(iter(losses.values())))  # wait for the step to finish
        times.append(time.perf_counter() - t0)
    per_step = sum(times[warmup:]) / steps
    return {"model": model, "preset": preset, "variant": variant, "batch_size": b, "s_per_step": round(per_step, 4),
            "warmup_s": round(sum(times[:warmup]), 2),
            "steps_timed": steps, "first_step": first_step, "parameters": {n: count_parameters(m) for n, m in raw.items()},
            "configured_steps": config["steps"], "estimated_run_hours": round(per_step * (config["steps"] - first_step) / 3600, 2),
            "device": str(accelerator.device), "mixed_precision": accelerator.mixed_precision}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="full", choices=PRESETS)
    p.add_argument("--models", nargs="+", default=list(model_names()))
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    p.add_argument("--first-step", type=int, default=0,
                   help="index of the first timed step (ldm's U-Net phase starts at its ae_steps)")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--variants", nargs="+", default=["baseline"], choices=VARIANTS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    for m in args.models:  # before any timing, so a bad value fails at once rather than after some models ran
        configured = resolve_config(m, args.preset)["steps"]
        if not 0 <= args.first_step < configured:
            print(f"step_time.py: error: --first-step {args.first_step} is outside {m}'s {configured} configured "
                  f"steps; pass 0 to {configured - 1}", file=sys.stderr)
            return 2
    rows = []
    for m in args.models:
        for variant in args.variants:
            rows.append(time_steps(m, args.preset, args.steps, args.cpu, variant, args.first_step))
            base = next(r for r in rows if r["model"] == m and r["variant"] == args.variants[0])
            rows[-1]["speedup"] = round(base["s_per_step"] / rows[-1]["s_per_step"], 3)
            print(m, variant, rows[-1]["s_per_step"], "s/step", flush=True)
    device = rows[0]["device"].split(":")[0]
    suffix = ("" if args.variants == ["baseline"] else "-variants") + (f"-from{args.first_step}" if args.first_step else "")
    write_json(Path(args.out) / f"step-time-{args.preset}-{device}{suffix}.json",
               {"rows": rows, "command": "python benchmarks/step_time.py " + " ".join(sys.argv[1:]),
                "environment": environment()})
    print("| model | variant | batch | parameters | s/step | speed-up | configured steps | est. hours | device |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        params = sum(r["parameters"].values())
        print(f"| {r['model']} | {r['variant']} | {r['batch_size']} | {params / 1e6:.2f}M | {r['s_per_step']} | "
              f"{r['speedup']:.2f}x | {r['configured_steps']} | {r['estimated_run_hours']} | {r['device']} "
              f"({r['mixed_precision']}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
