"""What the repository itself must hold: no path of the machine that made a committed record."""

from __future__ import annotations

import ast
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


# Imports inside a library function, each with its reason; every other import sits at the top of its module.
# The commands (*cli.py) import the library inside their handlers, so `--help` stays free of torch
# (tests/test_data.py checks that).
HELP_PATH = "read while the parsers are built: keeps `bloodgen --help` free of torch"
OPTIONAL = "an optional dependency, imported where it is used"
DEFERRED_IMPORTS = {
    "checks.py": ({"torch"}, HELP_PATH),
    "provenance.py": ({"torch"}, HELP_PATH),
    "data/__init__.py": ({"bloodgen.data"}, HELP_PATH),
    "sampling/__init__.py": ({"bloodgen.sampling"}, HELP_PATH),
    "training/__init__.py": ({"bloodgen.training"}, HELP_PATH),
    "data/domains.py": ({"skimage.color", "skimage.transform", "bloodgen.report.plots"}, HELP_PATH),
    "metrics/features.py": ({"torch"}, HELP_PATH),
    "metrics/inception.py": ({"torch.nn.utils.fusion", "torchvision.models.inception"}, HELP_PATH),
    "metrics/protocol.py": ({"bloodgen.metrics.inception"}, HELP_PATH),
    "models/prototype_file.py": ({"safetensors", "safetensors.torch"}, HELP_PATH),
    "study/experiments.py": ({"bloodgen.classify.diffusion_eval", "bloodgen.classify.domain_shift",
                              "bloodgen.classify.low_data", "bloodgen.classify.translation_eval",
                              "bloodgen.cellfeatures.experiment", "bloodgen.cellfeatures.study",
                              "bloodgen.improve.compare", "bloodgen.models.config", "bloodgen.sampling.api"},
                             HELP_PATH),
    "study/stages.py": ({"torch", "bloodgen.classify.reference", "bloodgen.classify.utility",
                         "bloodgen.models.config", "bloodgen.sampling.api", "bloodgen.training.checkpoint",
                         "bloodgen.training.loop"}, HELP_PATH),
    "classify/corruptions.py": ({"cv2", "medmnistc.corruptions.filter", "medmnistc.corruptions.registry"}, OPTIONAL),
    "cellfeatures/study.py": ({"umap"}, OPTIONAL),
    "classify/clip_encoder.py": ({"open_clip"}, OPTIONAL),
    "data/bloodmnist.py": ({"medmnist"}, OPTIONAL),
}


def _deferred_imports(path: Path) -> set[str]:
    found = set()
    for function in ast.walk(ast.parse(path.read_text())):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    found.add(node.module)
    return found


def test_library_modules_import_at_the_top_but_for_listed_reasons():
    package = ROOT / "src" / "bloodgen"
    unlisted = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        if path.name.endswith("cli.py") or path.name == "__main__.py":
            continue
        extra = _deferred_imports(path) - DEFERRED_IMPORTS.get(name, (set(), ""))[0]
        if extra:
            unlisted[name] = sorted(extra)
    assert not unlisted, f"imports inside functions without a listed reason: {unlisted}"

