"""`bloodgen demo`: what the toolkit does at its best, in about 20 minutes on 2 CPU cores.

The shipped record models (`pretrained:NAME`) are sampled and evaluated with the protocol at a reduced N
beside both real-vs-real floors at that N; the ddpm's cells are judged by the shipped reference classifier
(class fidelity) and checked for copies of training images; then every family trains briefly, which
demonstrates the training machinery and says nothing about quality (the report says so). Each stage
writes its result into OUT and is reused by a re-run with the same settings, so an interrupted demo
continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from bloodgen.classify.reference import shipped_reference_classifier
from bloodgen.classify.utility import class_fidelity, memorisation, pixel_vectors
from bloodgen.data import CLASS_NAMES, load_bloodmnist
from bloodgen.metrics import ImageSet, calculate_metrics
from bloodgen.metrics.inception import inception_extractor
from bloodgen.metrics.inputs import load_images
from bloodgen.models.config import resolve_config
from bloodgen.provenance import write_json
from bloodgen.report.grid import save_class_grid, save_grid
from bloodgen.samplefile import write_samples
from bloodgen.sampling.api import load_model, sample
from bloodgen.sampling.pretrained import pretrained_names
from bloodgen.study.demo_report import write_demo_report
from bloodgen.training import RunOptions, resume, train
from bloodgen.training.loop import SUMMARY_FILE
from bloodgen.training.records import COMPLETED, RunSummary

SAMPLE_SEED = 0
PROTOCOL_SEED = 0


@dataclass(frozen=True)
class DemoSettings:
    out: Path
    n: int = 1000  # images per side of every comparison
    models: tuple[str, ...] = ()  # shipped models; the CLI fills in all of them, best record FID first
    train_steps: int = 150  # per family: enough to show the machinery run, far from a trained model
    train_models: tuple[str, ...] = ()  # the CLI fills in every standalone family
    data: str | None = None
    inception_weights: str | None = None
    device: str | None = None
    cache_dir: str | None = None
    progress: bool = True


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _cached_json(path: Path, key: dict, compute) -> dict:
    """`compute()` unless `path` holds a result made with the same `key` (then that result)."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["result"]
    result = compute()
    write_json(path, {"key": key, "result": result})
    return result


def sample_stage(settings: DemoSettings, name: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """N images of the shipped model in the training class mix (kept as OUT/samples/NAME.npz), its grid."""
    path = settings.out / "samples" / f"{name}.npz"
    record = settings.out / "samples" / f"{name}.json"
    key = {"model": f"pretrained:{name}", "n": settings.n, "seed": SAMPLE_SEED}
    if path.is_file() and record.is_file() and json.loads(record.read_text()).get("key") == key:
        saved = load_images(path)
        return saved.images, saved.labels, json.loads(record.read_text())
    model = load_model(f"pretrained:{name}", settings.device)
    log(f"sampling {settings.n} images of pretrained:{name}")
    t0 = time.perf_counter()
    images, labels = sample(model, settings.n, SAMPLE_SEED, progress=settings.progress)
    info = {"key": key, "seconds": round(time.perf_counter() - t0, 1), "step": model.step,
            "sampler_options": model.family.check_sampler_options({}), "provenance": _provenance(name)}
    write_samples(path, images, labels)
    grid = settings.out / "grids" / f"{name}.png"
    save_class_grid(images, labels, grid, CLASS_NAMES) if labels is not None else save_grid(images[:64], grid, 8)
    write_json(record, info)
    return images, labels, info


def _shipped_json(name: str, file: str) -> dict:
    return json.loads(resources.files("bloodgen").joinpath("pretrained", name, file).read_text())


def _provenance(name: str) -> dict:
    return _shipped_json(name, "provenance.json")


def ranked_shipped_models() -> tuple[str, ...]:
    """The shipped generative models, lowest record FID first."""
    return tuple(sorted(pretrained_names(), key=lambda name: _provenance(name).get("fid", float("inf"))))


def utility_model(models: tuple[str, ...]) -> str | None:
    """The model whose cells the classifier judges: the first class-conditional one of `models`."""
    return next((m for m in models if _shipped_json(m, "model.json")["spec"]["config"]["conditional"]), None)


def evaluate_stage(settings: DemoSettings, name: str, images, labels, extractor) -> dict:
    key = {"n": settings.n, "seed": PROTOCOL_SEED, "samples": f"pretrained:{name}", "extractor": extractor.name}

    def compute() -> dict:
        log(f"evaluating pretrained:{name} at N = {settings.n:,} (protocol seed {PROTOCOL_SEED})")
        return calculate_metrics(ImageSet.from_arrays(images, labels, source=f"pretrained:{name}"), n=settings.n,
                                 seeds=[PROTOCOL_SEED], floor=True, data=settings.data, extractor=extractor,
                                 cache_dir=settings.cache_dir, progress=settings.progress)

    return _cached_json(settings.out / "eval" / f"{name}.json", key, compute)


def utility_stage(settings: DemoSettings, name: str, images: np.ndarray, labels: np.ndarray, data) -> dict:
    """Class fidelity by the shipped reference classifier, and nearest training images in pixel space."""
    key = {"n": settings.n, "model": f"pretrained:{name}", "data": data.sha256}

    def compute() -> dict:
        log(f"class fidelity and memorisation of pretrained:{name}")
        classifier, info = shipped_reference_classifier(data)
        train, test = data.images("train"), data.images("test")
        return {"fidelity": class_fidelity(classifier, images, labels).to_json(),
                "classifier": {"test_accuracy": info["test"]["accuracy"], "recipe": info["recipe"]},
                "memorisation_pixels": memorisation(pixel_vectors(images), pixel_vectors(train),
                                                    pixel_vectors(test)).to_json()}

    result = _cached_json(settings.out / "eval" / f"utility-{name}.json", key, compute)
    return {"model": name, **result}


def train_stage(settings: DemoSettings, name: str) -> dict:
    """A short quick-preset run of one family: the machinery at work (loss log, grids, export)."""
    run_dir = settings.out / "runs" / name
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file():
        summary = RunSummary.from_dict(json.loads(summary_path.read_text()))
        if summary.status == COMPLETED and summary.steps == settings.train_steps:
            return summary.to_dict()
    log(f"training {name} for {settings.train_steps} steps (a demonstration of the machinery, not of quality)")
    options = RunOptions(data=settings.data, progress=settings.progress)
    if (run_dir / "checkpoints").is_dir():
        result = resume(run_dir, options=options)
    else:
        result = train(name, preset="quick", overrides=_short_run(name, settings.train_steps), seed=0,
                       run_dir=run_dir, options=options)
    return result.summary.to_dict()


def _short_run(name: str, steps: int) -> dict:
    """The quick preset cut to `steps`; phases counted in steps (ldm's autoencoder) shrink in proportion."""
    quick = resolve_config(name, "quick", None, {})
    phases = {key: max(1, round(quick[key] * steps / quick["steps"])) for key in ("ae_steps",) if key in quick}
    return {"steps": steps, "sample_every": 0, **phases}


def run_demo(settings: DemoSettings) -> Path:
    """Every stage in turn, then OUT/report.md and OUT/report.html; returns the report's path."""
    data = load_bloodmnist(settings.data)
    extractor = inception_extractor(settings.inception_weights, device=settings.device, progress=settings.progress)
    evaluations, samples, utility = {}, {}, None
    judged = utility_model(settings.models)
    for name in settings.models:
        images, labels, info = sample_stage(settings, name)
        samples[name] = info
        evaluations[name] = evaluate_stage(settings, name, images, labels, extractor)
        if name == judged:
            utility = utility_stage(settings, name, images, labels, data)
    trainings = {name: train_stage(settings, name) for name in settings.train_models}
    settings_record = {k: v for k, v in asdict(settings).items() if k != "progress"}
    return write_demo_report(settings.out, settings_record, samples, evaluations, utility, trainings)
