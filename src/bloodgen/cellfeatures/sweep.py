"""`bloodgen features sweep`: AE-CFE's bottleneck study (Table 3.1) on one data file.

For every bottleneck b, image loss (SSIM or MSE) and view (the whole image or the segmented cell), an
autoencoder without a domain loss is trained on the file's train split, and a random forest per seed on
its bottleneck features is scored on the test split. Each (view, loss, b) is a unit kept in
OUT/<view>-<loss>-b<b>.json as its parts finish (its autoencoder in OUT/runs/, resumable), with its test
reconstructions in OUT/reconstructions/; OUT/README.md holds the table in Table 3.1's layout (rows b,
columns view x loss) and the grids.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bloodgen.cellfeatures.experiment import InputSpec, domain_inputs, load_domain
from bloodgen.cellfeatures.inputs import CellInputs
from bloodgen.cellfeatures.options import BOTTLENECKS, IMAGE_LOSSES, VIEWS, AEOptions
from bloodgen.cellfeatures.probe import ProbeScores, forest_probe
from bloodgen.cellfeatures.train import embed, train_autoencoder
from bloodgen.data.bloodmnist import N_CLASSES
from bloodgen.errors import UserError
from bloodgen.provenance import environment, saved_parts, write_text
from bloodgen.report.grid import reconstruction_picks, save_reconstruction_grid


@dataclass(frozen=True)
class Sweep:
    """The file (None: BloodMNIST's default location), where the sweep lives, its grid and the options every
    unit shares (their bottleneck and image loss are the unit's)."""

    data: str | None
    out: Path
    spec: InputSpec = InputSpec()
    bottlenecks: tuple[int, ...] = BOTTLENECKS
    image_losses: tuple[str, ...] = IMAGE_LOSSES
    views: tuple[str, ...] = VIEWS
    options: AEOptions = AEOptions()
    seeds: int = 5

    def units(self) -> list[tuple[str, str, int]]:
        return [(view, loss, b) for view in self.views for loss in self.image_losses for b in self.bottlenecks]


def unit_name(view: str, loss: str, bottleneck: int) -> str:
    return f"{view}-{loss}-b{bottleneck}"


@torch.no_grad()
def reconstructions(model, inputs: CellInputs, path: Path) -> Path:
    """Four test cells per class above what the image decoder rebuilds from their features."""
    pick = reconstruction_picks(inputs.labels, N_CLASSES)
    drawn = model(torch.from_numpy(inputs.features[pick]))[2]
    rebuilt = (drawn.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return save_reconstruction_grid(inputs.images[pick], rebuilt, path)


def run_unit(sweep: Sweep, view: str, loss: str, bottleneck: int, progress: bool = True) -> dict:
    name = unit_name(view, loss, bottleneck)
    step = saved_parts(sweep.out / f"{name}.json", name)
    spec = replace(sweep.spec, view=view)
    options = replace(sweep.options, bottleneck=bottleneck, image_loss=loss, alignment="none")
    plan = {"input": spec.source, "options": vars(options), "seeds": sweep.seeds}
    if step("plan", lambda: plan) != json.loads(json.dumps(plan)):
        raise UserError(f"{sweep.out / name}.json was begun with other options: use another --out or the same ones")
    data = load_domain(sweep.data)
    train, test = domain_inputs(data, spec, "train"), domain_inputs(data, spec, "test")
    provenance = {"input": spec.source, "view": view, "data": data.provenance()}
    model = train_autoencoder(train, [], options, sweep.out / "runs" / name, provenance=provenance, progress=progress)
    step("probe", lambda: forest_probe((embed(model, train), train.labels), {"test": (embed(model, test), test.labels)},
                                       seeds=sweep.seeds)["test"].to_json())
    grid = sweep.out / "reconstructions" / f"{name}.png"
    step("reconstructions", lambda: str(reconstructions(model, test, grid).relative_to(sweep.out)))
    return step("protocol", lambda: {"environment": environment()})


def run_sweep(sweep: Sweep, max_minutes: float | None = None, progress: bool = True) -> Path:
    """Every unit (none starts after `max_minutes`), then the report; returns README.md's path."""
    if not sweep.units():
        raise UserError("the sweep is empty: give at least one --bottlenecks, --image-losses and --views value")
    started = time.perf_counter()
    for view, loss, b in sweep.units():
        if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
            print(f"time limit: {unit_name(view, loss, b)} and the units after it wait for the same command")
            break
        run_unit(sweep, view, loss, b, progress)
    return write_report(sweep)


def _accuracy(result: dict) -> str:
    figure = ProbeScores.from_json(result["probe"]).accuracy
    return f"{figure.mean:.3f}" + ("" if figure.std is None else f" ± {figure.std:.3f}")


def write_report(sweep: Sweep) -> Path:
    saved = {p.stem: json.loads(p.read_text()) for p in sweep.out.glob("*-b*.json")}
    columns = [(view, loss) for view in sweep.views for loss in sweep.image_losses]
    bottlenecks = sorted({b for _, _, b in sweep.units()})
    lines = [REPORT_HEAD.format(input=sweep.spec.source, steps=sweep.options.steps, seeds=sweep.seeds),
             "| b | " + " | ".join(f"{view}, {loss}" for view, loss in columns) + " |",
             "|---:|" + "---:|" * len(columns)]
    for b in bottlenecks:
        cells = [saved.get(unit_name(view, loss, b), {}) for view, loss in columns]
        lines.append(f"| {b} | " + " | ".join(_accuracy(c) if "probe" in c else "-" for c in cells) + " |")
    grids = [f"![{name}]({result['reconstructions']})" for name, result in sorted(saved.items())
             if "reconstructions" in result]
    lines += ["", "Test reconstructions (rows: four cells per class, then what the image decoder draws from their "
                  "features):", "", *grids, ""]
    waiting = [unit_name(*u) for u in sweep.units() if "protocol" not in saved.get(unit_name(*u), {})]
    if waiting:
        lines.append(f"Unfinished (the same command continues): {', '.join(waiting)}.")
    return write_text(sweep.out / "README.md", "\n".join(lines) + "\n")


REPORT_HEAD = """# AE-CFE bottleneck study (Table 3.1's layout)

Random-forest test accuracy (mean ± std over {seeds} forest seeds) on the bottleneck features of an
autoencoder without a domain loss, trained on the train split ({steps} steps, input h: {input}), by
bottleneck b (rows) and view x image loss (columns). Made by `bloodgen features sweep` (see its --help).
"""

