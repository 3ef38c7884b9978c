"""Training the cell-feature autoencoder, with or without a domain loss, resumable step for step.

A run folder holds options.json (the options, the inputs and the data files' hashes), checkpoint.pt
(weights, optimiser, step and the batch generator's state, written atomically every `save_every` steps, so
a resumed run draws the same batches an uninterrupted one would), log.jsonl, and at the end
model.safetensors with summary.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from bloodgen.cellfeatures.alignment import DomainDiscriminator, alignment_loss
from bloodgen.cellfeatures.autoencoder import CellAutoencoder, reconstruction_loss
from bloodgen.cellfeatures.inputs import CellInputs
from bloodgen.cellfeatures.options import AEOptions
from bloodgen.errors import UserError
from bloodgen.provenance import atomic_path, environment, write_json, write_text

OPTIONS_FILE, CHECKPOINT_FILE, LOG_FILE = "options.json", "checkpoint.pt", "log.jsonl"
WEIGHTS_FILE, SUMMARY_FILE = "model.safetensors", "summary.json"
MAX_GRAD_NORM = 1.0  # clipped: a domain loss's first steps can be large


def _batch(inputs: CellInputs, generator: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randint(len(inputs), (min(size, len(inputs)),), generator=generator).numpy()
    images = torch.from_numpy(inputs.images[rows]).permute(0, 3, 1, 2).float() / 255.0
    return torch.from_numpy(inputs.features[rows]), images


class _State:
    """Everything a checkpoint holds, built fresh or read back from one."""

    def __init__(self, source: CellInputs, targets: list[CellInputs], options: AEOptions):
        torch.manual_seed(options.seed)
        self.model = CellAutoencoder(source.features.shape[1], options.bottleneck)
        # Scaled by every training domain's features: by the source's alone, an inverted domain's features lie
        # tens of standard deviations out and the training collapsed (a pixel autoencoder, about step 250).
        self.model.fit_scale(torch.from_numpy(np.concatenate([source.features, *[t.features for t in targets]])))
        self.discriminator = DomainDiscriminator(options.bottleneck) if options.alignment == "adversarial" else None
        self.parameters = list(self.model.parameters()) + \
            (list(self.discriminator.parameters()) if self.discriminator else [])
        self.optimiser = torch.optim.Adam(self.parameters, lr=options.lr)
        self.generator = torch.Generator().manual_seed(options.seed)
        self.step = 0

    def save(self, path: Path) -> None:
        payload = {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(), "step": self.step,
                   "generator": self.generator.get_state(),
                   "discriminator": self.discriminator.state_dict() if self.discriminator else None}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    def load(self, path: Path) -> None:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(payload["model"])
        self.optimiser.load_state_dict(payload["optimiser"])
        self.generator.set_state(payload["generator"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(payload["discriminator"])
        self.step = payload["step"]


def _step(state: _State, source: CellInputs, targets: list[CellInputs], options: AEOptions) -> dict[str, float]:
    """One batch of every domain: each rebuilt, each target's bottleneck aligned to the source's."""
    per_domain = max(1, options.batch_size // (1 + len(targets)))
    h, images = _batch(source, state.generator, per_domain)
    z, rebuilt, drawn = state.model(h)
    loss, parts = reconstruction_loss(state.model, h, images, rebuilt, drawn, options.image_loss)
    if targets:
        rebuilt_targets, domain = 0.0, 0.0
        for target in targets:
            h_t, images_t = _batch(target, state.generator, per_domain)
            z_t, rebuilt_t, drawn_t = state.model(h_t)
            rebuilt_targets = rebuilt_targets + reconstruction_loss(state.model, h_t, images_t, rebuilt_t, drawn_t,
                                                                    options.image_loss)[0]
            domain = domain + alignment_loss(options.alignment, z, z_t, state.discriminator) / len(targets)
        loss = loss + rebuilt_targets + options.beta * domain
        parts.update(target_reconstruction=rebuilt_targets.item(), domain=domain.item())
    state.optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.parameters, MAX_GRAD_NORM)
    state.optimiser.step()
    return {"loss": loss.item(), **parts}


def train_autoencoder(source: CellInputs, targets: list[CellInputs], options: AEOptions, out: str | Path,
                      provenance: dict | None = None, progress: bool = True) -> CellAutoencoder:
    """Train (or resume, or load when finished) the autoencoder in run folder `out` on the source domain and
    the (unlabelled) target domains. `provenance` (the inputs and data files) goes into options.json; a
    folder made with other options is refused."""
    options, out = options.check(bool(targets)), Path(out)
    record = {"options": asdict(options), "inputs": provenance or {}}
    if (out / OPTIONS_FILE).is_file():
        saved = json.loads((out / OPTIONS_FILE).read_text())
        if _identity({k: saved.get(k) for k in record}) != _identity(json.loads(json.dumps(record))):
            raise UserError(f"{out} holds a run with other options or inputs: pick another --out or the same ones")
    else:
        write_json(out / OPTIONS_FILE, {**record, "environment": environment()})
    state = _State(source, targets, options)
    if (out / WEIGHTS_FILE).is_file():
        state.model.load_state_dict(load_file(str(out / WEIGHTS_FILE)))
        return state.model.eval()
    if (out / CHECKPOINT_FILE).is_file():
        state.load(out / CHECKPOINT_FILE)
    _loop(state, source, targets, options, out, progress)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in state.model.state_dict().items()}, str(tmp))
    return state.model.eval()


def _loop(state: _State, source: CellInputs, targets: list[CellInputs], options: AEOptions, out: Path,
          progress: bool) -> None:
    started, sums, count = time.perf_counter(), {}, 0
    _keep_log_until(out / LOG_FILE, state.step)
    state.model.train()
    with tqdm(total=options.steps, initial=state.step, desc="autoencoder", disable=not progress) as bar:
        while state.step < options.steps:
            for key, value in _step(state, source, targets, options).items():
                sums[key] = sums.get(key, 0.0) + value
            state.step, count = state.step + 1, count + 1
            bar.update(1)
            if state.step % options.log_every == 0 or state.step == options.steps:
                row = {"step": state.step, **{k: v / count for k, v in sums.items()}}
                with open(out / LOG_FILE, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                sums, count = {}, 0
            if state.step % options.save_every == 0 or state.step == options.steps:
                state.save(out / CHECKPOINT_FILE)
    seconds = round(time.perf_counter() - started, 1)
    write_json(out / SUMMARY_FILE, {"steps": state.step, "seconds_this_session": seconds})


def _keep_log_until(path: Path, step: int) -> None:
    """Drop log rows past the checkpoint a run resumes from: they are logged again."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if _step_of(line) <= step]
        write_text(path, "".join(row + "\n" for row in rows))


def _identity(record):
    """A record without its file paths: a run whose data files moved is still the same run (their hashes
    say whether they are the same files)."""
    if isinstance(record, dict):
        return {k: _identity(v) for k, v in record.items() if k != "path"}
    return [_identity(v) for v in record] if isinstance(record, list) else record


def _step_of(line: str) -> float:
    """A log line's step; infinite (dropped) for a blank line or one cut while it was written."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


@torch.no_grad()
def embed(model: CellAutoencoder, inputs: CellInputs, batch_size: int = 1024) -> np.ndarray:
    """The bottleneck of every image, (N, b) float32."""
    model.eval()
    parts = [model.encode(torch.from_numpy(inputs.features[i:i + batch_size])).numpy()
             for i in range(0, len(inputs), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, model.encoder[-1].out_features), np.float32)
