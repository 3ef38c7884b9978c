"""`train`: one loop for every family, on CPU, one GPU or several (DDP), through `accelerate`.

Run folder, `runs/<time>-<model>-s<seed>/`:
  config.json                 the run spec: model, preset, seed and the full resolved config
  environment.json            versions, platform, devices, processes, precision, data file and hash
  log.jsonl, log.csv          losses, learning rate and speed every `log_every` steps
  snapshots.jsonl             per-class sample diversity at every sample grid
  samples/step-NNNNNNN.png    fixed-noise sample grids of the EMA network (one row per class)
  checkpoints/checkpoint.pt   the latest checkpoint, written atomically; what --resume reads
  model.safetensors, .json    the final EMA weights and their config (when the run completes)
  extras/                     family outputs (VAE: reconstructions, interpolations, latent probe)
  summary.json                status, steps, training time, parameters, last losses, extras' figures

Bit-for-bit resume: the data order is a pure function of (seed, epoch), so there is no sampler state
to lose, and the checkpoint holds every process's RNG states; a resumed run therefore draws exactly
what the uninterrupted run would have drawn. Ctrl-C (SIGINT) and `max_minutes` stop after the current
step with a checkpoint; a non-finite loss stops before anything is saved, keeping the last good one.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import math
import os
import shutil
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, gather_object, set_seed
from tqdm.auto import tqdm

from bloodgen import checks
from bloodgen.data import N_CLASSES, load_bloodmnist, random_dihedral, to_model_range
from bloodgen.errors import UserError
from bloodgen.models.base import count_parameters
from bloodgen.models.config import TrainerConfig, resolve_config, validate
from bloodgen.models.registry import get_family
from bloodgen.provenance import atomic_path, environment, state_digest, write_json, write_text
from bloodgen.report.grid import save_grid
from bloodgen.sampling.api import generate
from bloodgen.training import checkpoint as ck
from bloodgen.training import monitor
from bloodgen.training.ema import EMA
from bloodgen.training.records import (COMPLETED, DIVERGED, INTERRUPTED, LOG_JSONL, RUNNING, TIME_LIMIT, LogRow,
                                       RunSummary)

# Run folder files.
CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
LOG_CSV = "log.csv"
SNAPSHOTS_FILE = "snapshots.jsonl"
SUMMARY_FILE = "summary.json"
SAMPLES_DIR = "samples"
EXTRAS_DIR = "extras"


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    status: str
    step: int
    checkpoint: Path | None
    export: Path | None
    summary: RunSummary


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out, apart from what it trains: the data file (None: the default location), a
    wall-time limit, the device, progress bars, and every how many steps a checkpoint is also kept apart."""

    data: str | Path | None = None
    max_minutes: float | None = None
    cpu: bool = False
    progress: bool = True
    # > 0: the checkpoint of every keep_every-th step is also kept as checkpoints/step-<step>.pt, for picking
    # a checkpoint after training (the last one is always kept as checkpoints/checkpoint.pt).
    keep_every: int = 0


def train(model: str, *, preset: str = "quick", config_file: str | Path | None = None,
          overrides: dict[str, Any] | None = None, seed: int = 0, out: str | Path = "runs",
          run_dir: str | Path | None = None, options: RunOptions = RunOptions()) -> TrainResult:
    """Train `model` (a registry name) in a new run folder (`out/<time>-...`, or exactly `run_dir`) and
    return where it is and how it ended."""
    checks.seed(seed)
    if run_dir is None:
        checks.output_folder(out, "--out")
    spec = ck.RunSpec(model, preset, int(seed), resolve_config(model, preset, config_file, overrides))
    return _start(spec, None, Path(run_dir) if run_dir is not None else None, out, options)


def resume(run: str | Path, *, steps: int | None = None, options: RunOptions = RunOptions()) -> TrainResult:
    """Continue a run (its folder or a checkpoint) with its saved spec, bit for bit; `steps`, a new total,
    extends it."""
    ckpt_path = ck.find_checkpoint(run)
    ckpt = ck.load_checkpoint(ckpt_path)
    spec = ckpt.spec
    run_path = ckpt_path.parent.parent if ckpt_path.parent.name == ck.CHECKPOINT_DIR else ckpt_path.parent
    total = spec.config["steps"]
    if steps is not None:
        if steps < 1:
            raise UserError(f"--steps must be >= 1, got {steps}")
        if ckpt.step < total != steps:
            warnings.warn(f"--steps {steps} changes the run's length from {total}: the learning-rate schedule is "
                          f"recomputed for {steps} steps, so from here on the run is no longer bit-for-bit the run "
                          f"of its original length")
        spec.config["steps"] = total = int(steps)
    if ckpt.step >= total:
        raise UserError(f"the run in {run_path} already reached step {ckpt.step} of {total}; pass --steps N > "
                        f"{ckpt.step} to train it further")
    return _start(spec, ckpt, run_path, None, options)


def _start(spec: ck.RunSpec, ckpt: ck.Checkpoint | None, run_path: Path | None, out, options: RunOptions) -> TrainResult:
    if options.max_minutes is not None and options.max_minutes <= 0:
        raise UserError(f"--max-minutes must be > 0, got {options.max_minutes}")
    # An existing run folder is locked before anything in it changes (resuming truncates logs and
    # removes a finished run's export); DDP's other processes leave the lock to the main one.
    existing = run_path is not None and run_path.is_dir() and int(os.environ.get("RANK", "0")) == 0
    with RunLock(run_path) if existing else contextlib.nullcontext():
        return _Run(spec, ckpt, run_path, out, options).run()


def make_accelerator(cpu: bool, mixed_precision: str, find_unused_parameters: bool = False):
    """The process's Accelerator; CPU when asked or when there is no GPU (torchrun then gives gloo DDP)."""
    cpu = cpu or not torch.cuda.is_available()
    if cpu:
        # Subnormal floats make CPU kernels several times slower (a DDPM step became ~5x slower after ~50
        # steps); flushing them to zero changes nothing visible at float32 precision.
        torch.set_flush_denormal(True)
    if mixed_precision == "auto":
        mixed_precision = "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
    # A process may train several models (the study); each gets its own precision settings.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)])


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warm-up over `warmup` steps, then constant, cosine decay to 0 at `total`, or constant up to
    half of `total` and linear decay to 0 at `total` ("linear-tail")."""
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if schedule == "linear-tail":
        half = total / 2
        return warm * min(1.0, max(0.0, (total - step) / half))
    return warm


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint32)[0])


class EpochBatches:
    """This process's share of global batch `step`: a pure function of (seed, step), nothing to save."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int):
        if batch_size % world:
            raise UserError(f"config key 'batch_size' ({batch_size}) must be divisible by the number of "
                            f"processes ({world})")
        if batch_size > n:
            raise UserError(f"config key 'batch_size' ({batch_size}) exceeds the {n} training images")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_process = batch_size // world
        self.rank = rank
        self.per_epoch = n // batch_size  # the incomplete last batch is dropped
        self._epoch, self._perm = -1, None

    def epoch(self, step: int) -> int:
        return step // self.per_epoch

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, 2, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        start = i * self.batch_size + self.rank * self.per_process
        return self._perm[start:start + self.per_process]


class Stepper:
    """The loop's side of `StepContext`: backward, clip, optimiser and LR-schedule step for one network."""

    def __init__(self, accelerator, networks: dict, optimizers: dict, lr_schedulers: dict, grad_clip: float):
        self.accelerator, self.networks = accelerator, networks
        self.optimizers, self.lr_schedulers, self.grad_clip = optimizers, lr_schedulers, grad_clip
        self.step = 0
        self.grad_norms: dict[str, torch.Tensor] = {}
        self.last_lr: dict[str, float] = {}

    def update(self, loss: torch.Tensor, optimizer: str) -> None:
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.grad_clip:
            self.accelerator.unscale_gradients(optimizer=opt)
            self.grad_norms[f"grad_norm_{optimizer}"] = torch.nn.utils.clip_grad_norm_(
                self.networks[optimizer].parameters(), self.grad_clip)
        self.last_lr[optimizer] = opt.param_groups[0]["lr"]
        opt.step()
        self.lr_schedulers[optimizer].step()

    def no_sync(self, network: str):
        return self.accelerator.no_sync(self.networks[network])


class _Run:
    def __init__(self, spec, ckpt, run_path, out, options: RunOptions):
        self.spec, self.config = spec, spec.config
        validate(spec.model, self.config)
        self.trainer = TrainerConfig.of(self.config)
        self.ckpt, self.max_minutes, self.progress = ckpt, options.max_minutes, options.progress
        self.keep_every = options.keep_every
        self.accelerator = make_accelerator(options.cpu, self.trainer.mixed_precision,
                                            get_family(spec.model).ddp_find_unused_parameters)
        acc = self.accelerator
        self.main = acc.is_main_process
        self.data = load_bloodmnist(options.data)  # before the run folder: a bad --data leaves no empty folder behind
        self.run_dir = self._run_folder(run_path, out)
        images, labels = self.data.split("train")
        self.class_counts = np.bincount(labels, minlength=N_CLASSES)
        if ckpt is not None and ckpt.data["sha256"] != self.data.sha256:
            warnings.warn(f"resuming on a different data file ({self.data.path}, sha256 {self.data.sha256[:12]}) "
                          f"than the run started with (sha256 {ckpt.data['sha256'][:12]})")
        self.images = to_model_range(images).to(acc.device)
        self.labels = torch.as_tensor(labels, device=acc.device)
        self.batches = EpochBatches(len(labels), self.trainer.batch_size, spec.seed,
                                    acc.process_index, acc.num_processes)
        self.real_diversity = monitor.real_diversity(images, labels, N_CLASSES)

        # Same seed on every process: identical initial weights (DDP would broadcast rank 0's anyway).
        self._seed_everything(derived_seed(spec.seed, 0))
        self.family = get_family(spec.model)(spec.model, self.config, N_CLASSES)
        raw = {name: net.to(acc.device) for name, net in self.family.build().items()}
        self.raw = raw
        self.ema = EMA(raw[self.family.sampling_network], self.trainer.ema_decay)
        optimizers = self.family.optimizers(raw)
        t = self.trainer
        schedulers = {name: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, t.warmup_steps, t.steps, t.lr_schedule))
            for name, opt in optimizers.items()}
        self.step, self.train_time = 0, 0.0
        # Losses summed since the last log line; checkpointed so a resumed run logs what the whole run would.
        self.log_sums: dict[str, float] = {}
        self.log_steps = 0
        if ckpt is not None:
            self._restore(ckpt, raw, optimizers, schedulers)
        else:
            # Each process draws its own noise, augmentations and time steps from here on.
            self._seed_everything(derived_seed(spec.seed, 1, acc.process_index))
        prepared = acc.prepare(*raw.values(), *optimizers.values())
        self.networks = dict(zip(raw, prepared[:len(raw)]))
        self.optimizers = dict(zip(optimizers, prepared[len(raw):]))
        self.schedulers = schedulers
        self.stepper = Stepper(acc, self.networks, self.optimizers, schedulers, self.trainer.grad_clip)
        self.stop_requested = False
        self.warned_collapse = False
        self.extras: dict[str, Any] = {}  # the family's final figures, filled by _finish

    # ---- setup -------------------------------------------------------------------------------------

    def _run_folder(self, run_path: Path | None, out) -> Path:
        if run_path is None and self.main:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            base = Path(out) / f"{stamp}-{self.spec.model}-s{self.spec.seed}"
            base.parent.mkdir(parents=True, exist_ok=True)
            run_path, k = base, 1
            while True:  # mkdir claims the name, so two runs started in the same second get two folders
                try:
                    run_path.mkdir()
                    break
                except FileExistsError:
                    k += 1
                    run_path = base.with_name(f"{base.name}-{k}")
        elif run_path is not None and self.ckpt is None:
            if (run_path / ck.CHECKPOINT_DIR / ck.CHECKPOINT_NAME).exists():
                raise UserError(f"run folder {run_path} already holds a run; resume it with --resume {run_path} "
                                f"or choose another folder")
            if self.main:  # a start that died before its first checkpoint: its log lines are void
                for name in (LOG_JSONL, SNAPSHOTS_FILE):
                    (run_path / name).unlink(missing_ok=True)
        # The clock differs between processes: all use the main process's choice.
        chosen = [str(run_path)]
        broadcast_object_list(chosen)
        return Path(chosen[0])

    @staticmethod
    def _seed_everything(seed: int) -> None:
        set_seed(seed)

    def _restore(self, ckpt, raw, optimizers, schedulers) -> None:
        acc = self.accelerator
        for name, net in raw.items():
            net.load_state_dict(ckpt.networks[name])
        self.ema.load_state_dict(ckpt.ema)
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt.optimizers[name])
            schedulers[name].load_state_dict(ckpt.lr_schedulers[name])
        if ckpt.grad_scaler is not None and acc.scaler is not None:
            acc.scaler.load_state_dict(ckpt.grad_scaler)
        self.step, self.train_time = int(ckpt.step), float(ckpt.train_time_s)
        self.log_sums, self.log_steps = dict(ckpt.log_accumulator["sums"]), ckpt.log_accumulator["steps"]
        if ckpt.world_size == acc.num_processes:
            ck.set_rng_state(ckpt.rng[acc.process_index])
        else:
            warnings.warn(f"checkpoint was written by {ckpt.world_size} process(es), this run has "
                          f"{acc.num_processes}: training continues, but not bit-for-bit")
            self._seed_everything(derived_seed(self.spec.seed, 3, self.step, acc.process_index))
        if self.main:
            # Log lines written after the checkpoint belong to the lost part of the run.
            for name in (LOG_JSONL, SNAPSHOTS_FILE):
                _truncate_jsonl(self.run_dir / name, self.step)
            for stale in (ck.EXPORT_WEIGHTS, ck.EXPORT_META):
                (self.run_dir / stale).unlink(missing_ok=True)

    def _write_run_files(self) -> None:
        acc = self.accelerator
        write_json(self.run_dir / CONFIG_FILE, self.spec.to_dict())
        env = environment()
        env.update({"device": str(acc.device), "processes": acc.num_processes,
                    "mixed_precision": acc.mixed_precision, "data": self.data.provenance(),
                    "parameters": self.parameters()})
        name = ENVIRONMENT_FILE if self.step == 0 else f"environment-resume-{self.step}.json"
        write_json(self.run_dir / name, env)

    def parameters(self) -> dict[str, int]:
        return {name: count_parameters(net) for name, net in self.raw.items()}

    # ---- the loop ----------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        c, acc = self.trainer, self.accelerator
        if self.main:
            self._write_run_files()
        status, total = RUNNING, c.steps
        interval_start = time.perf_counter()
        session_start = time.perf_counter()
        bar = self._progress_bar(total)
        try:
            with self._sigint_stops():
                while self.step < total:
                    t0 = time.perf_counter()
                    losses = self._one_step()
                    values = {k: float(v) for k, v in zip(losses, torch.stack(list(losses.values())).float().cpu())}
                    bad = [k for k, v in values.items() if not math.isfinite(v)]
                    stop, bad_any = self._agree(self.stop_requested or self._out_of_time(session_start), bool(bad))
                    if bad_any:
                        self._diverged(bad, values)  # raises: the run ends here, its summary says "diverged"
                    self.step += 1
                    self.train_time += time.perf_counter() - t0
                    self.log_steps += 1
                    for k, v in values.items():
                        self.log_sums[k] = self.log_sums.get(k, 0.0) + v
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if not k.startswith("grad_norm")},
                                    refresh=False)
                    if self.step % c.log_every == 0 or self.step == total:
                        speed = self.log_steps / max(time.perf_counter() - interval_start, 1e-9)
                        self._log({k: v / self.log_steps for k, v in self.log_sums.items()}, speed)
                        self.log_sums, self.log_steps, interval_start = {}, 0, time.perf_counter()
                    if (c.sample_every and self.step % c.sample_every == 0) or self.step == total:
                        bar.set_description_str(f"{self.spec.model} s{self.spec.seed} (sample grid)")
                        self._snapshot(bar)
                        bar.set_description_str(f"{self.spec.model} s{self.spec.seed}")
                    if stop:
                        status = INTERRUPTED if self.stop_requested else TIME_LIMIT
                        break
                    if self._due(c.ckpt_every) and self.step != total:
                        self._checkpoint()
            if status == RUNNING:
                status = COMPLETED
            checkpoint = self._checkpoint()
        finally:
            bar.close()
        if status == COMPLETED and self.main and self.progress:
            print(f"{self.spec.model} s{self.spec.seed}: exporting the EMA weights and writing the "
                  f"family's final figures", flush=True)
        export = self._finish() if status == COMPLETED else None
        summary = self._summary(status, checkpoint, export)
        acc.wait_for_everyone()
        if self.main and status != COMPLETED:
            bar.write(f"stopped at step {self.step} ({status}); continue with: bloodgen train --resume {self.run_dir}")
        return TrainResult(self.run_dir, status, self.step, checkpoint, export, summary)

    def _one_step(self) -> dict[str, torch.Tensor]:
        idx = self.batches.indices(self.step).to(self.accelerator.device)
        x, y = self.images[idx], self.labels[idx]
        if self.trainer.augment:
            x = random_dihedral(x)
        self.stepper.step = self.step
        self.stepper.grad_norms = {}
        for net in self.networks.values():
            net.train()
        losses = self.family.train_step(self.networks, x, y, self.stepper)
        self.ema.update(self.accelerator.unwrap_model(self.networks[self.family.sampling_network]), self.step)
        return {**losses, **self.stepper.grad_norms}

    def _agree(self, stop: bool, bad: bool) -> tuple[bool, bool]:
        """Every process must take the same branch, or the next collective operation hangs."""
        if self.accelerator.num_processes == 1:
            return stop, bad
        flags = torch.tensor([float(stop), float(bad)], device=self.accelerator.device)
        flags = self.accelerator.reduce(flags, reduction="sum").cpu()
        return bool(flags[0] > 0), bool(flags[1] > 0)

    def _out_of_time(self, session_start: float) -> bool:
        return self.max_minutes is not None and time.perf_counter() - session_start > 60 * self.max_minutes

    def _diverged(self, bad: list[str], values: dict[str, float]) -> None:
        last = self.run_dir / ck.CHECKPOINT_DIR / ck.CHECKPOINT_NAME
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint had been written yet"
        if self.main:
            self._summary(DIVERGED, last if last.exists() else None, None)
        which = ", ".join(f"{k}={values[k]}" for k in bad) or "another process's loss"
        raise TrainingDiverged(f"training diverged at step {self.step + 1}: {which}; {kept}. Try a lower 'lr', "
                               f"'grad_clip' > 0 or mixed_precision 'no', then train again or --resume")

    @contextlib.contextmanager
    def _sigint_stops(self):
        """First Ctrl-C: finish the step, checkpoint, stop. A second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self.stop_requested = True
            signal.signal(signal.SIGINT, previous)

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _progress_bar(self, total: int):
        return tqdm(total=total, initial=self.step, unit="step", dynamic_ncols=True, smoothing=0.05,
                    desc=f"{self.spec.model} s{self.spec.seed}",
                    disable=not (self.main and self.progress))

    # ---- outputs -----------------------------------------------------------------------------------

    def _log(self, means: dict[str, float], speed: float) -> None:
        if not self.main:
            return
        # The learning rate of the last step taken, of the first optimiser (the generator's for GANs).
        lr = self.stepper.last_lr[next(iter(self.optimizers))]
        row = LogRow(self.step, self.batches.epoch(self.step - 1), round(self.train_time, 3), lr, round(speed, 3),
                     means)
        with open(self.run_dir / LOG_JSONL, "a") as fh:
            fh.write(json.dumps(row.to_json()) + "\n")

    def _snapshot(self, bar) -> None:
        if not self.main:
            return

        labels = monitor.grid_labels(self.family.conditional, self.family.n_classes)
        n = len(labels) if labels is not None else monitor.UNCONDITIONAL_GRID
        images = generate(self.family, self.ema.network, labels, n, monitor.GRID_SEED)
        save_grid(images, self.run_dir / SAMPLES_DIR / f"step-{self.step:07d}.png", ncol=monitor.GRID_PER_CLASS)
        ratios = monitor.diversity_ratios(images, labels, self.real_diversity)
        with open(self.run_dir / SNAPSHOTS_FILE, "a") as fh:
            fh.write(json.dumps({"step": self.step, "diversity_ratio": ratios}) + "\n")
        low = [k for k, r in enumerate(ratios) if r is not None and r < monitor.COLLAPSE_RATIO]
        if low and not self.warned_collapse:
            self.warned_collapse = True
            bar.write(f"warning: step {self.step}: samples of class(es) {low} are far less varied than real ones "
                      f"(diversity ratio < {monitor.COLLAPSE_RATIO}): possible mode collapse")

    def _due(self, ckpt_every: int) -> bool:
        return self.step % ckpt_every == 0 or bool(self.keep_every and self.step % self.keep_every == 0)

    def _checkpoint(self) -> Path:
        acc = self.accelerator
        networks = {name: acc.unwrap_model(net).state_dict() for name, net in self.networks.items()}
        optimizers = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        digest = state_digest({"networks": networks, "ema": self.ema.state_dict(), "optimizers": optimizers})
        digests = gather_object([digest])
        rngs = gather_object([ck.rng_state()])
        path = self.run_dir / ck.CHECKPOINT_DIR / ck.CHECKPOINT_NAME
        if self.main:
            if len(set(digests)) != 1:
                raise RuntimeError(f"processes disagree on the model state at step {self.step}: {digests}")
            ck.save_checkpoint(path, ck.Checkpoint(
                spec=self.spec, step=self.step, networks=networks, ema=self.ema.state_dict(), optimizers=optimizers,
                lr_schedulers={name: s.state_dict() for name, s in self.schedulers.items()},
                grad_scaler=acc.scaler.state_dict() if acc.scaler is not None else None,
                rng=rngs, world_size=acc.num_processes, class_counts=self.class_counts.tolist(),
                data=self.data.provenance(), train_time_s=self.train_time, rank_digests=digests,
                parameters=self.parameters(), log_accumulator={"sums": self.log_sums, "steps": self.log_steps}))
            _jsonl_to_csv(self.run_dir / LOG_JSONL, self.run_dir / LOG_CSV)
            if self.keep_every and self.step % self.keep_every == 0:
                with atomic_path(path.with_name(f"step-{self.step}.pt")) as tmp:
                    shutil.copyfile(path, tmp)
        acc.wait_for_everyone()
        return path

    def _finish(self) -> Path | None:
        """Export the EMA weights and run the family's extras (main process)."""
        if not self.main:
            return None
        meta = ck.ExportMeta(self.spec, self.step, self.class_counts.tolist(), self.data.provenance(),
                             self.parameters())
        export = ck.export_model(self.run_dir, self.ema.state_dict(), meta)
        self.extras = self.family.extras(self.ema.network, self.data, self.run_dir / EXTRAS_DIR,
                                         self.spec.seed)
        return export

    def _summary(self, status, checkpoint, export) -> RunSummary:
        summary = RunSummary.make(
            self.run_dir, checkpoint, export, status=status, model=self.spec.model,
            preset=self.spec.preset, seed=self.spec.seed, step=self.step, steps=self.trainer.steps,
            train_time_s=round(self.train_time, 3),
            steps_per_s=round(self.step / self.train_time, 3) if self.train_time else None,
            parameters=self.parameters(), sampling_parameters=count_parameters(self.ema.network),
            device=str(self.accelerator.device), processes=self.accelerator.num_processes,
            mixed_precision=self.accelerator.mixed_precision, last_log=_last_jsonl(self.run_dir / LOG_JSONL),
            extras=self.extras)
        if self.main:
            write_json(self.run_dir / SUMMARY_FILE, summary.to_dict())
        return summary


class RunLock:
    """A lock file in the run folder while a process trains it: a second `--resume` of the same run is
    refused instead of both training and writing every log line twice. A lock left by a process that no
    longer runs on this machine (killed, or the machine restarted) is taken over."""

    NAME = ".train.lock"

    def __init__(self, run_dir: Path):
        self.path = run_dir / self.NAME

    @staticmethod
    def _owner() -> list[str]:
        boot = Path("/proc/sys/kernel/random/boot_id")
        return [socket.gethostname(), boot.read_text().strip() if boot.is_file() else "-", str(os.getpid())]

    def __enter__(self) -> "RunLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                self._remove_if_stale()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(" ".join(self._owner()))
            return self
        raise UserError(f"could not lock run folder {self.path.parent}; remove {self.path} if no training runs")

    def _remove_if_stale(self) -> None:
        host, boot, _ = self._owner()
        try:
            owner_host, owner_boot, pid = self.path.read_text().split()
            if owner_host == host:
                if owner_boot != boot:
                    raise ProcessLookupError  # the machine restarted since: no process of then still runs
                os.kill(int(pid), 0)  # raises if that process is gone
        except (OSError, ValueError):  # gone, restarted since, or a half-written file: stale
            self.path.unlink(missing_ok=True)
            return
        where = "" if owner_host == host else f" on {owner_host}"
        raise UserError(f"run folder {self.path.parent} is being trained by process {pid}{where}; wait for it to "
                        f"end (or stop it) before resuming, or remove {self.path} if it is gone")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _truncate_jsonl(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    write_text(path, "".join(ln + "\n" for ln in kept))


def _last_jsonl(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else None


def _jsonl_to_csv(jsonl: Path, out: Path) -> None:
    if not jsonl.exists():
        return
    rows = [json.loads(ln) for ln in jsonl.read_text().splitlines() if ln.strip()]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
