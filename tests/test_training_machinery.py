"""The training loop: bit-for-bit resume after Ctrl-C, divergence, time limit, 2-process DDP, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from bloodgen.cli import main
from bloodgen.errors import UserError
from bloodgen.provenance import state_digest
from bloodgen.training import checkpoint as ck
from bloodgen.training.loop import TrainingDiverged
from model_helpers import resume_tiny, tiny_config, train_tiny

FAMILY_CLASSES = {"vae": ("bloodgen.models.vae", "VAE"), "cgan": ("bloodgen.models.gan", "GAN"),
                  "ddpm": ("bloodgen.models.ddpm", "DDPM"), "ldm": ("bloodgen.models.ldm", "LDM")}


def family_class(model):
    import importlib

    module, name = FAMILY_CLASSES[model]
    return getattr(importlib.import_module(module), name)


def learned_state(checkpoint_path):
    """Everything a resumed run must reproduce exactly (not wall-clock times)."""
    c = ck.load_checkpoint(checkpoint_path)
    return {k: getattr(c, k) for k in ("step", "networks", "ema", "optimizers", "lr_schedulers", "rng")}


@pytest.mark.parametrize("model", ["vae", "cgan", "ddpm", "ldm"])
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(model, tiny_npz, tmp_path, monkeypatch):
    # 8 steps of 16 from 80 images cross an epoch boundary after the interruption at step 3 (for the
    # ldm, in its U-Net phase, after the autoencoder's 2 steps).
    full = train_tiny(model, tiny_npz, tmp_path / "full", overrides={"steps": 8})

    cls = family_class(model)
    original = cls.train_step

    def ctrl_c_during_step_3(self, networks, x, y, ctx):
        if ctx.step == 2:
            signal.raise_signal(signal.SIGINT)  # delivered mid-step: the step must still complete
        return original(self, networks, x, y, ctx)

    monkeypatch.setattr(cls, "train_step", ctrl_c_during_step_3)
    stopped = train_tiny(model, tiny_npz, tmp_path / "parts", overrides={"steps": 8})
    monkeypatch.setattr(cls, "train_step", original)
    assert stopped.status == "interrupted" and stopped.step == 3 and stopped.export is None
    assert ck.load_checkpoint(stopped.checkpoint).step == 3

    resumed = resume_tiny(stopped.run_dir, tiny_npz)
    assert resumed.status == "completed" and resumed.run_dir == stopped.run_dir
    a, b = learned_state(full.checkpoint), learned_state(resumed.checkpoint)
    assert state_digest(a) == state_digest(b)
    # The log of the resumed run is the log of the uninterrupted one.
    def losses(run):
        rows = [json.loads(line) for line in (run.run_dir / "log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("train_time_s", "steps_per_s")} for r in rows]

    assert losses(full) == losses(resumed)


def test_resume_rules(tiny_npz, tmp_path, capsys):
    from bloodgen.cli import main

    done = train_tiny("gan", tiny_npz, tmp_path)
    with pytest.raises(UserError, match="already reached step 4"):
        resume_tiny(done.run_dir, tiny_npz)
    assert main(["train", "--resume", str(done.run_dir), "--model", "gan", "--data", str(tiny_npz)]) == 2
    assert "drop --model" in capsys.readouterr().err
    extended = resume_tiny(done.run_dir, tiny_npz, steps=6)
    assert extended.status == "completed" and extended.step == 6
    with pytest.raises(UserError, match="no checkpoint in run folder"):
        resume_tiny(tmp_path, tiny_npz)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_npz, tmp_path, monkeypatch):
    cls = family_class("vae")
    original = cls.train_step

    def nan_at_step_6(self, networks, x, y, ctx):
        losses = original(self, networks, x, y, ctx)
        return {**losses, "loss": torch.tensor(float("nan"))} if ctx.step == 5 else losses

    monkeypatch.setattr(cls, "train_step", nan_at_step_6)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 6: loss=nan; the last good checkpoint is") as err:
        train_tiny("vae", tiny_npz, tmp_path, overrides={"steps": 8, "ckpt_every": 4})
    assert "\n" not in str(err.value)
    run_dir = next(tmp_path.iterdir())
    assert ck.load_checkpoint(run_dir).step == 4
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"


def test_time_limit_stops_with_a_checkpoint(tiny_npz, tmp_path):
    result = train_tiny("gan", tiny_npz, tmp_path, overrides={"steps": 50}, max_minutes=1e-9)
    assert result.status == "time_limit" and result.step == 1
    assert ck.load_checkpoint(result.checkpoint).step == 1


# ldm: each of its two phases leaves half the network's parameters unused, which DDP must be told.
@pytest.mark.parametrize("model", ["cgan", "ldm"])
def test_two_process_cpu_run_saves_one_state_on_every_rank(model, tiny_npz, tmp_path):
    overrides = tiny_config(model)
    sets = [arg for k, v in overrides.items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bloodgen", "train", "--model", model, "--data", str(tiny_npz), "--out", str(tmp_path),
           "--no-progress", "--cpu", *sets]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = list(tmp_path.iterdir())
    assert len(run_dirs) == 1  # both ranks agreed on one run folder
    c = ck.load_checkpoint(run_dirs[0])
    assert c.world_size == 2 and c.step == 4
    digests = c.rank_digests
    assert len(digests) == 2 and digests[0] == digests[1]
    assert c.rng[0]["torch"].ne(c.rng[1]["torch"]).any()  # ranks draw different noise
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["status"] == "completed"


def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in err if not line.startswith("bloodgen: warning:")]


@pytest.mark.parametrize("args, match", [
    (["--model", "flow"], "unknown model 'flow'"),
    (["--model", "vae", "--set", "nokey=1"], "unknown config key"),
    (["--model", "vae", "--set", "lr=-1"], "'lr' must be > 0"),
    (["--model", "vae", "--set", "lr"], "KEY=VALUE"),
    (["--model", "vae", "--preset", "huge"], "unknown preset"),
    (["--model", "vae", "--config", "/nonexistent/c.json"], "not found"),
    (["--resume", "/nonexistent/run"], "checkpoint not found"),
    ([], "give --model"),
])
def test_train_cli_user_errors_are_one_line(args, match, capsys, tiny_npz):
    code, err = run_cli(["train", "--data", str(tiny_npz), "--no-progress", *args], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("bloodgen: error:")
    assert __import__("re").search(match, err[0]), err[0]


def test_train_cli_runs_and_reports(capsys, tiny_npz, tmp_path):
    sets = [arg for k, v in tiny_config("vae").items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    code = main(["train", "--model", "vae", "--data", str(tiny_npz), "--out", str(tmp_path), "--no-progress",
                 "--seed", "2", *sets])
    out = capsys.readouterr().out
    assert code == 0 and "vae s2: completed at step 4/4" in out
    run_dir = next(tmp_path.iterdir())
    assert run_dir.name.endswith("-vae-s2")
    spec = json.loads((run_dir / "config.json").read_text())
    assert spec["seed"] == 2 and spec["config"]["latent_dim"] == 8


def test_given_run_folder_restarts_only_when_it_holds_no_checkpoint(tiny_npz, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "log.jsonl").write_text('{"step": 99}\n')  # left by a start killed before its first checkpoint
    result = train_tiny("gan", tiny_npz, tmp_path, run_dir=run_dir)
    assert result.run_dir == run_dir and result.status == "completed"
    assert [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == [2, 4]
    with pytest.raises(UserError, match="already holds a run"):
        train_tiny("gan", tiny_npz, tmp_path, run_dir=run_dir)
