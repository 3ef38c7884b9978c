"""Sampling trained models: the sample_fn contract, reproducibility, the CLI and bad checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bloodgen.cli import main
from bloodgen.errors import UserError
from bloodgen.sampling.api import (default_batch_size, draw_labels, generate, generate_indices, load_model,
                                  make_sample_fn, sample)
from model_helpers import FAMILIES, sample_then_evaluate, train_tiny


@pytest.fixture(scope="module")
def runs(tiny_npz, tmp_path_factory):
    """One tiny trained run per family, shared by this module's tests."""
    out = tmp_path_factory.mktemp("runs")
    return {m: train_tiny(m, tiny_npz, out / m).run_dir for m in FAMILIES}


@pytest.mark.parametrize("model", FAMILIES)
def test_sample_fn_contract(model, runs):
    sample_fn = make_sample_fn(runs[model])
    images, labels = sample_fn(10, 0)
    assert images.shape == (10, 28, 28, 3) and images.dtype == np.uint8
    assert images.std() > 0
    if model == "gan":
        assert labels is None
    else:
        assert labels.shape == (10,) and labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < 8


@pytest.mark.parametrize("model", ["cgan", "ddpm"])
def test_same_seed_same_images_whatever_the_batch_size(model, runs):
    loaded = load_model(runs[model])
    a, la = sample(loaded, 9, seed=4, batch_size=9)
    b, lb = sample(loaded, 9, seed=4, batch_size=4)
    d, _ = sample(loaded, 9, seed=5)
    np.testing.assert_array_equal(la, lb)
    # Each image's noise is its own, so only float rounding (sums blocked by batch size) may differ.
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    assert np.abs(a.astype(int) - d.astype(int)).mean() > 1
    np.testing.assert_array_equal(a, sample(loaded, 9, seed=4, batch_size=9)[0])


@pytest.mark.parametrize("model", ["cgan", "ddpm"])
def test_a_few_images_of_a_draw_come_back_by_index(model, runs):
    loaded = load_model(runs[model])
    labels = np.arange(12) % 8
    draw = generate(loaded.family, loaded.network, labels, 12, seed=3)
    picked = generate_indices(loaded.family, loaded.network, labels, [10, 2, 7], seed=3)
    diff = np.abs(picked.astype(int) - draw[[10, 2, 7]].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    other = generate_indices(loaded.family, loaded.network, labels, [10, 2, 7], seed=4)
    assert np.abs(other.astype(int) - picked.astype(int)).mean() > 1


def test_a_resumable_draw_cut_after_a_piece_continues_to_the_same_images(runs, tmp_path, monkeypatch):
    import bloodgen.sampling.api as api

    loaded = load_model(runs["cgan"])
    labels = np.arange(10) % 8
    path = tmp_path / "draw.npz"
    original, calls = api.generate_indices, []

    def cut_on_the_third_piece(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "generate_indices", cut_on_the_third_piece)
    with pytest.raises(KeyboardInterrupt):
        api.sample_resumably(loaded, labels, 10, 3, path, chunk=4)
    monkeypatch.setattr(api, "generate_indices", original)
    with np.load(path.with_name("draw.partial.npz")) as kept:
        assert len(kept["images"]) == 8 and not path.is_file()
    resumed = api.sample_resumably(loaded, labels, 10, 3, path, chunk=4)
    whole = generate_indices(loaded.family, loaded.network, labels, range(10), seed=3)
    assert np.abs(resumed.astype(int) - whole.astype(int)).max() <= 1
    assert path.is_file() and not path.with_name("draw.partial.npz").exists()
    np.testing.assert_array_equal(api.sample_resumably(loaded, labels, 10, 3, path, chunk=4), resumed)


def test_export_checkpoint_and_run_folder_load_the_same_weights(runs):
    run = runs["cgan"]
    from_export = sample(load_model(run / "model.safetensors"), 4, 1)[0]
    from_checkpoint = sample(load_model(run / "checkpoints" / "checkpoint.pt"), 4, 1)[0]
    np.testing.assert_array_equal(from_export, from_checkpoint)
    np.testing.assert_array_equal(from_export, sample(load_model(run), 4, 1)[0])


def test_label_modes():
    counts = np.array([100, 300, 50, 50, 200, 100, 150, 50])
    prior = draw_labels(1000, 0, "prior", counts)
    np.testing.assert_array_equal(np.bincount(prior, minlength=8), counts)
    assert not np.array_equal(prior, np.sort(prior))  # shuffled
    np.testing.assert_array_equal(np.bincount(draw_labels(16, 0, "balanced", counts), minlength=8), [2] * 8)
    assert set(draw_labels(5, 0, "neutrophil", counts)) == {6}
    assert set(draw_labels(5, 0, 3, counts)) == {3}
    for bad in ("9", "dog", -1):
        with pytest.raises(UserError, match="unknown class"):
            draw_labels(5, 0, bad, counts)


def test_sample_api_errors(runs):
    cgan, gan, ddpm = load_model(runs["cgan"]), load_model(runs["gan"]), load_model(runs["ddpm"])
    with pytest.raises(UserError, match=">= 1"):
        sample(cgan, 0, 0)
    with pytest.raises(UserError, match="unconditional"):
        sample(gan, 4, 0, classes=2)
    with pytest.raises(UserError, match="no sampler option"):
        make_sample_fn(gan, steps=10)
    with pytest.raises(UserError, match="unknown class"):
        make_sample_fn(cgan, classes="dog")
    with pytest.raises(UserError, match="--steps must be in"):
        sample(ddpm, 2, 0, steps=10**6)


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    err = [line for line in captured.err.strip().splitlines() if line.startswith("bloodgen:")]
    return code, captured.out, err


def test_sample_cli_writes_npz_json_and_grid(runs, tmp_path, capsys):
    out = tmp_path / "s.npz"
    code, stdout, _ = run_cli(["sample", str(runs["ddpm"]), "-n", "12", "--seed", "3", "--balanced", "--sampler",
                               "ddim", "--steps", "3", "--guidance", "2", "--out", str(out),
                               "--grid", str(tmp_path / "g.png")], capsys)
    assert code == 0 and "wrote 12 samples" in stdout
    with np.load(out) as npz:
        assert set(npz.files) == {"images", "labels"}
        assert npz["images"].shape == (12, 28, 28, 3) and npz["images"].dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(npz["labels"], minlength=8), [2, 2, 2, 2, 1, 1, 1, 1])
    meta = json.loads((tmp_path / "s.json").read_text())
    assert meta["seed"] == 3 and meta["sampler_options"] == {"sampler": "ddim", "steps": 3, "guidance": 2, "eta": 1.0}
    assert meta["batch_size"] == default_batch_size(meta["device"])  # no --batch-size: the device default, recorded
    assert (tmp_path / "g.png").is_file()

    code, _, _ = run_cli(["sample", str(runs["gan"]), "-n", "3", "--out", str(tmp_path / "u.npz")], capsys)
    with np.load(tmp_path / "u.npz") as npz:
        assert code == 0 and list(npz["labels"]) == [-1, -1, -1]


def test_sample_cli_reads_a_stopped_runs_latest_checkpoint(tiny_npz, tmp_path, capsys):
    # A run cut by --max-minutes has no export yet: its folder samples from the latest checkpoint.
    run = train_tiny("gan", tiny_npz, tmp_path / "runs", overrides={"steps": 50, "ckpt_every": 1},
                     max_minutes=1e-5)
    assert run.status == "time_limit" and not (run.run_dir / "model.safetensors").exists()
    code, stdout, _ = run_cli(["sample", str(run.run_dir), "-n", "4", "--out", str(tmp_path / "s.npz")], capsys)
    meta = json.loads((tmp_path / "s.json").read_text())
    assert code == 0 and meta["source"].endswith(".pt") and len(meta["source_sha256"]) == 64
    assert meta["step"] == run.step < 50


@pytest.mark.parametrize("make_args, match", [
    (lambda r, t: [str(t / "missing.pt")], "checkpoint not found"),
    (lambda r, t: [str(t / "corrupt.pt")], "not a readable bloodgen checkpoint"),
    (lambda r, t: [str(t / "foreign.pt")], "not a bloodgen checkpoint"),
    (lambda r, t: [str(t / "model.safetensors")], "export"),
    (lambda r, t: [str(r["cgan"]), "-n", "0"], "-n must be at least 1"),
    (lambda r, t: [str(r["cgan"]), "--class", "9"], "unknown class '9'"),
    (lambda r, t: [str(r["cgan"]), "--class", "dog"], "unknown class 'dog'"),
    (lambda r, t: [str(r["gan"]), "--class", "2"], "unconditional"),
    (lambda r, t: [str(r["gan"]), "--sampler", "ddim"], "no sampler option"),
    (lambda r, t: [str(r["ddpm"]), "--sampler", "euler"], "unknown sampler"),
    (lambda r, t: [str(r["cgan"]), "--out", str(t / "x.txt")], ".npz"),
    (lambda r, t: [str(r["cgan"]), "--batch-size", "0"], "--batch-size must be at least 1"),
    (lambda r, t: ["pretrained:stylegan"], "no pretrained model 'stylegan'"),
])
def test_sample_cli_user_errors_are_one_line(make_args, match, runs, tmp_path, capsys):
    import torch

    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a zip archive")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    args = make_args(runs, tmp_path)
    if "-n" not in args:
        args += ["-n", "2"]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "o.npz")]
    code, _, err = run_cli(["sample", *args], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("bloodgen: error:"), err
    assert match in err[0], err[0]


@pytest.mark.parametrize("name", ["vae", "gan", "cgan", "ddpm"])
def test_shipped_pretrained_models_sample_right_after_install(name):
    """The record study's best run of each family ships in the package (src/bloodgen/pretrained/README.md):
    `pretrained:NAME` loads it, and the same seed gives the same images."""
    from bloodgen.sampling.pretrained import pretrained_names

    assert name in pretrained_names()
    loaded = load_model(f"pretrained:{name}", device="cpu")
    assert loaded.spec.model == name
    images, labels = sample(loaded, 6, seed=2, steps=2) if name == "ddpm" else sample(loaded, 6, seed=2)
    assert images.shape == (6, 28, 28, 3) and images.dtype == np.uint8 and images.std() > 0
    assert (labels is None) == (name == "gan")
    again = sample(loaded, 6, seed=2, steps=2)[0] if name == "ddpm" else sample(loaded, 6, seed=2)[0]
    np.testing.assert_array_equal(images, again)


@pytest.mark.parametrize("name", ["vae", "gan", "cgan", "ddpm"])
def test_shipped_pretrained_models_are_the_record_studys_best_runs(name):
    """`pretrained:NAME` is the lowest-FID run of its family in the protocol of record (results/record/),
    byte for byte its run folder's weights; no shipped JSON names a path of the machine it was made on."""
    import hashlib
    from importlib import resources
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shipped = Path(str(resources.files("bloodgen").joinpath("pretrained", name)))  # what pretrained:NAME loads
    provenance = json.loads((shipped / "provenance.json").read_text())
    record = json.loads((root / "results" / "record" / "results.json").read_text())
    runs = {f"results/record/{run['run_dir']}": run for run in record["families"][name]["runs"]}
    fids = {run_dir: run["eval"]["fid"]["mean"] for run_dir, run in runs.items()}
    assert provenance["study_preset"] == "record" and provenance["run"] in runs, provenance["run"]
    assert provenance["fid"] == fids[provenance["run"]] == min(fids.values())
    assert provenance["training_seed"] == runs[provenance["run"]]["seed"]
    assert provenance["fid_protocol"]["n"] == 10_000 and provenance["report"] == "results/record/report.md"

    def sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert sha256(shipped / "model.safetensors") == sha256(root / provenance["run"] / "model.safetensors")
    spec = json.loads((shipped / "model.json").read_text())["spec"]
    assert spec == json.loads((root / provenance["run"] / "model.json").read_text())["spec"]
    for path in shipped.glob("*.json"):
        text = path.read_text()
        assert not any(prefix in text for prefix in ('"/work', '"/home', '"/tmp', '"/Users')), path


@pytest.mark.parametrize("model", FAMILIES)
def test_sample_output_is_accepted_by_evaluate(model, runs, tiny_npz, tmp_path, monkeypatch):
    from bloodgen.metrics.registry import FID, FID_CLASS_AVERAGED

    result = sample_then_evaluate(runs[model], tiny_npz, tmp_path, monkeypatch)
    assert np.isfinite(result[FID.key]["mean"])
    conditional = model != "gan"
    assert result["samples"]["has_labels"] is conditional  # unconditional -1 labels are read as no labels
    assert (FID_CLASS_AVERAGED.key in result) is conditional
