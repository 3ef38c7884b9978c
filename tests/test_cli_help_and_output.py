"""What the CLI says when the input is acceptable but deserves a word, what it records, and its help texts."""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from bloodgen.cli import HelpFormatter, build_parser, main
from model_helpers import train_tiny


def _parsers(parser: argparse.ArgumentParser, name: str = "bloodgen"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


PARSERS = dict(_parsers(build_parser()))


@pytest.mark.parametrize("name", PARSERS)
def test_help_documents_every_option_and_states_each_default_once(name):
    parser = PARSERS[name]
    assert parser.description, f"`{name} --help` has no description"
    formatter = HelpFormatter(name)
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        text = formatter._expand_help(action).lower()
        assert text.count("default") <= 1, f"{name} {action.option_strings}: {text}"
        if action.required or action.default is None or action.default is False:
            assert "(default: none)" not in text and "(default: false)" not in text, text


def test_top_level_help_lists_every_family_and_sample_help_the_shipped_models(capsys, monkeypatch):
    from bloodgen.models.registry import REGISTRY as FAMILIES
    from bloodgen.sampling.pretrained import pretrained_names

    monkeypatch.setenv("COLUMNS", "300")  # no line breaks inside names such as proto-ddpm
    with pytest.raises(SystemExit):
        main(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    assert all(name in top for name in FAMILIES)
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    sample_help = " ".join(capsys.readouterr().out.split())
    assert pretrained_names() and all(f"pretrained:{name}" in sample_help for name in pretrained_names())
    assert "results/README.md" not in sample_help


@pytest.fixture(scope="module")
def runs(tiny_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {m: train_tiny(m, tiny_npz, out).run_dir for m in ("ddpm", "gan")}


def test_sample_records_the_resolved_sampler_and_draws_a_labelled_grid(runs, tmp_path, capsys):
    out, grid = tmp_path / "s.npz", tmp_path / "s.png"
    assert main(["sample", str(runs["ddpm"]), "-n", "16", "--balanced", "--quiet", "--out", str(out),
                 "--grid", str(grid)]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""  # --quiet: no progress bar
    assert all(str(p) in printed.out for p in (out, out.with_suffix(".json"), grid))
    record = json.loads(out.with_suffix(".json").read_text())
    # The tiny config samples with ddim, 4 steps, guidance 1.5 and eta 1: all recorded although none was given.
    assert record["sampler_options"] == {"sampler": "ddim", "steps": 4, "guidance": 1.5, "eta": 1.0}
    with Image.open(grid) as img:
        width, height = img.size
    # One row per class (8 rows of 8 images of 28 px, 2 px padding, upscaled 2x) and a margin for the names.
    assert height == 2 * (8 * 30 + 2) and width > 2 * (8 * 30 + 2)


def test_balanced_on_an_unconditional_model_warns(runs, tmp_path):
    with pytest.warns(UserWarning, match="unconditional: --balanced has no effect"):
        assert main(["sample", str(runs["gan"]), "-n", "4", "--balanced", "--quiet",
                     "--out", str(tmp_path / "g.npz")]) == 0


def test_grey_and_rgba_png_folders_warn_once(tmp_path):
    from bloodgen.metrics.inputs import load_images

    for i, mode in enumerate(["L", "RGBA", "RGB", "L"]):
        Image.new(mode, (28, 28)).save(tmp_path / f"{i}.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = load_images(tmp_path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "3 of 4 PNG files are not RGB (2 L, 1 RGBA)" in messages[0]
    assert images.images.shape == (4, 28, 28, 3)


def test_resuming_an_unfinished_run_with_new_steps_says_it_is_no_longer_bit_for_bit(tiny_npz, tmp_path):
    from bloodgen.training import RunOptions, resume

    run = train_tiny("gan", tiny_npz, tmp_path, max_minutes=1e-9).run_dir  # stops after its first step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resume(run, steps=6, options=RunOptions(tiny_npz, progress=False)).step == 6
    assert any("no longer bit-for-bit" in str(w.message) for w in caught)


def test_a_failed_training_leaves_no_run_folder(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 28, 28, 3), dtype=np.uint8))
    assert main(["train", "--model", "gan", "--data", str(bad), "--out", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_classify_accepts_the_shipped_models_as_sample_does(tmp_path, capsys):
    from conftest import make_tiny_images

    images, labels = make_tiny_images(2, np.random.default_rng(0))
    np.savez(tmp_path / "cells.npz", images=images, labels=labels[:, 0])
    out = tmp_path / "p.npz"
    assert main(["classify", "pretrained:ddpm", str(tmp_path / "cells.npz"), "--no-prune", "--min-draws", "2",
                 "--max-draws", "2", "--no-progress", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["n_images"] == 2
