"""Seconds per training step of each family's preset, on this machine, without a whole run.

    python benchmarks/step_time.py --preset full --steps 3
    python benchmarks/step_time.py --preset quick --models vae gan --steps 20

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


def time_steps(model: str, preset: str, steps: int, cpu: bool) -> dict:
    config = resolve_config(model, preset)
    accelerator = make_accelerator(cpu, config["mixed_precision"])
    family = get_family(model)(model, config, 8)
    torch.manual_seed(0)
    raw = {name: net.to(accelerator.device) for name, net in family.build().items()}
    optimizers = family.optimizers(raw)
    schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0) for n, o in optimizers.items()}
    prepared = accelerator.prepare(*raw.values(), *optimizers.values())
    networks, optimizers = dict(zip(raw, prepared[:len(raw)])), dict(zip(optimizers, prepared[len(raw):]))
    ctx = Stepper(accelerator, networks, optimizers, schedulers, config["grad_clip"])
    b = config["batch_size"]
    x = torch.rand(b, 3, 28, 28, device=accelerator.device) * 2 - 1
    y = torch.randint(0, 8, (b,), device=accelerator.device)
    times = []
    for step in range(steps + 1):
        ctx.step = step
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses = family.train_step(networks, x, y, ctx)
        float(next(iter(losses.values())))  # wait for the step to finish
        times.append(time.perf_counter() - t0)
    per_step = sum(times[1:]) / steps
    return {"model": model, "preset": preset, "batch_size": b, "s_per_step": round(per_step, 4),
            "steps_timed": steps, "parameters": {n: count_parameters(m) for n, m in raw.items()},
            "configured_steps": config["steps"], "estimated_run_hours": round(per_step * config["steps"] / 3600, 2),
            "device": str(accelerator.device), "mixed_precision": accelerator.mixed_precision}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="full", choices=PRESETS)
    p.add_argument("--models", nargs="+", default=list(model_names()))
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    rows = [time_steps(m, args.preset, args.steps, args.cpu) for m in args.models]
    device = rows[0]["device"].split(":")[0]
    write_json(Path(args.out) / f"step-time-{args.preset}-{device}.json", {"rows": rows, "environment": environment()})
    print("| model | preset | batch | parameters | s/step | configured steps | est. hours | device |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        params = sum(r["parameters"].values())
        print(f"| {r['model']} | {r['preset']} | {r['batch_size']} | {params / 1e6:.2f}M | {r['s_per_step']} | "
              f"{r['configured_steps']} | {r['estimated_run_hours']} | {r['device']} ({r['mixed_precision']}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
