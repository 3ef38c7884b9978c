"""Data files in, runs and probe tables out: what `bloodgen features` and the studies built on it do with
the autoencoder (train.py), the inputs (inputs.py) and the forest (probe.py)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file

from bloodgen.cellfeatures.autoencoder import CellAutoencoder
from bloodgen.cellfeatures.inputs import CellInputs, load_inputs
from bloodgen.cellfeatures.options import AEOptions
from bloodgen.cellfeatures.probe import ProbeScores, forest_probe
from bloodgen.cellfeatures.train import OPTIONS_FILE, WEIGHTS_FILE, embed, train_autoencoder
from bloodgen.data.bloodmnist import BloodMNIST
from bloodgen.data.domains import read_domain
from bloodgen.errors import UserError
from bloodgen.metrics.inception import inception_extractor


@dataclass(frozen=True)
class InputSpec:
    """Which features the autoencoder reads (see inputs.py) and where the Inception weights and cache are."""

    source: str = "inception"
    view: str = "whole"
    inception_weights: str | None = None
    cache_dir: str | None = None

    def extractor(self):
        return _extractor(self.inception_weights) if self.source == "inception" else None


@functools.cache
def _extractor(weights: str | None):
    return inception_extractor(weights, progress=True)


def load_domain(path: str | None) -> BloodMNIST:
    """A BloodMNIST-format file (the official one, or a domain of `bloodgen domains make`)."""
    if path is not None and not Path(path).exists():
        raise UserError(f"{path} not found: give a BloodMNIST-format .npz (e.g. one of `bloodgen domains make`)")
    return read_domain(path)


def domain_inputs(data: BloodMNIST, spec: InputSpec, split: str) -> CellInputs:
    return load_inputs(data, split, spec.source, spec.view, spec.extractor(), spec.cache_dir)


def train_run(data_path: str | None, target_paths: list[str], spec: InputSpec, options: AEOptions,
              out: str | Path, progress: bool = True) -> CellAutoencoder:
    """The autoencoder on the train split of --data and of each --target file, in run folder `out`."""
    data, targets = load_domain(data_path), [load_domain(p) for p in target_paths]
    provenance = {"input": spec.source, "view": spec.view, "data": data.provenance(),
                  "targets": [t.provenance() for t in targets]}
    return train_autoencoder(domain_inputs(data, spec, "train"), [domain_inputs(t, spec, "train") for t in targets],
                             options, out, provenance=provenance, progress=progress)


def run_model(run: str | Path) -> tuple[CellAutoencoder, dict]:
    """A finished run's autoencoder and its options.json."""
    record_path, weights = Path(run) / OPTIONS_FILE, Path(run) / WEIGHTS_FILE
    if not weights.is_file() or not record_path.is_file():
        raise UserError(f"{run} holds no finished `bloodgen features train` run ({WEIGHTS_FILE}, {OPTIONS_FILE})")
    state, record = load_file(str(weights)), json.loads(record_path.read_text())
    model = CellAutoencoder(state["mean"].shape[0], record["options"]["bottleneck"])
    model.load_state_dict(state)
    return model.eval(), record


def probe_files(data_path: str | None, test_paths: list[str], spec: InputSpec, run: str | None,
                seeds: int) -> dict:
    """Forest scores in the bottleneck of `run` (or on the raw inputs): trained on --data's train split,
    scored on its test split and on each test file's."""
    model, record = run_model(run) if run else (None, None)
    if record is not None:  # the run's own inputs
        inputs = record["inputs"]
        if "input" not in inputs:
            raise UserError(f"{run} does not record its input features: probe it with --input and --view, "
                            f"without --run's bottleneck, or train it with `bloodgen features train`")
        spec = InputSpec(inputs["input"], inputs.get("view", "whole"), spec.inception_weights, spec.cache_dir)
    project = (lambda inputs: embed(model, inputs)) if model is not None else (lambda inputs: inputs.features)
    data = load_domain(data_path)
    train = domain_inputs(data, spec, "train")
    names = ["source", *[Path(p).stem for p in test_paths]]
    if len(set(names)) < len(names):
        raise UserError(f"test sets are named by their file: {', '.join(names)} has a name twice; rename one")
    tests = dict(zip(names, [data, *[load_domain(p) for p in test_paths]]))
    test_sets = {name: domain_inputs(d, spec, "test") for name, d in tests.items()}
    scores = forest_probe((project(train), train.labels),
                          {name: (project(t), t.labels) for name, t in test_sets.items()}, seeds=seeds)
    return {"run": str(run) if run else None, "features": "bottleneck" if run else f"{spec.source} ({spec.view})",
            "seeds": seeds, "tests": {name: s.to_json() for name, s in scores.items()}}


def probe_table(result: dict) -> str:
    rows = ["| test set | accuracy | balanced accuracy |", "|---|---:|---:|"]
    for name, block in result["tests"].items():
        scores = ProbeScores.from_json(block)
        rows.append(f"| {name} | {scores.accuracy} | {scores.balanced_accuracy} |")
    return f"Random forest on {result['features']}, {result['seeds']} seed(s)\n" + "\n".join(rows)
