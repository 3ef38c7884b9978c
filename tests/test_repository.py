"""What the repository itself must hold: no path of the machine that made a committed record."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bloodgen.provenance import environment, portable_path

ROOT = Path(__file__).parents[1]


def _scrubber():
    spec = importlib.util.spec_from_file_location("scrub_paths", ROOT / "benchmarks" / "scrub_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_committed_json_holds_an_absolute_path():
    try:
        files = subprocess.run(["git", "ls-files", "*.json"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    scrub = _scrubber().scrub
    leaking = [name for name in files if scrub(data := json.loads((ROOT / name).read_text())) != data]
    assert not leaking, f"absolute paths in {leaking}: run python benchmarks/scrub_paths.py"


def test_records_keep_portable_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path(str(tmp_path / "runs" / "a")) == os.path.join("runs", "a")
    assert portable_path("/somewhere/else/data/file.npz") == os.path.join("data", "file.npz")
    assert portable_path("relative/x") == "relative/x" and portable_path("--seed") == "--seed"
    monkeypatch.setattr("sys.argv", ["/opt/venv/bin/bloodgen", "sample", str(tmp_path / "r"), "-n", "2"])
    assert environment()["argv"] == [os.path.join("bin", "bloodgen"), "sample", "r", "-n", "2"]


def test_layers_import_only_downward():
    """The import-linter contract in pyproject.toml: commands > study > improve, classify > training,
    sampling, metrics > models > data > core; no module imports from a layer above its own."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.is_file():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
