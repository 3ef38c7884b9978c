"""`bloodgen demo` end to end on the real file, at a small N: the shipped models, the floors, the ddpm's
class fidelity by the shipped classifier, a short training, the report, and a re-run that redoes nothing."""

from __future__ import annotations

import json

import pytest

from bloodgen.cli import main


@pytest.mark.slow
def test_demo_reports_the_shipped_models_and_reuses_its_stages(real_npz, inception_weights, tmp_path, monkeypatch):
    out = tmp_path / "demo"
    monkeypatch.setenv("BLOODGEN_CACHE", str(tmp_path / "cache"))
    argv = ["demo", "--out", str(out), "--n", "40", "--models", "ddpm", "gan", "--train-models", "gan",
            "--train-steps", "2", "--data", str(real_npz), "--inception-weights", str(inception_weights),
            "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    ddpm, gan = results["evaluations"]["ddpm"], results["evaluations"]["gan"]
    assert ddpm["protocol"]["n"] == 40 and ddpm["floor"]["disjoint"]["fid"]["mean"] > 0
    assert ddpm["fid"]["mean"] > 0 and gan["fid"]["mean"] > 0 and "fid_class_averaged" in ddpm
    # The shipped ddpm's cells are read as their class by the shipped classifier far above chance (1/8).
    assert results["utility"]["fidelity"]["class_fidelity_macro"] > 0.5
    assert results["utility"]["memorisation_pixels"]["exact_copies"] == 0
    assert results["trainings"]["gan"]["status"] == "completed" and results["trainings"]["gan"]["step"] == 2
    report = (out / "report.md").read_text()
    for text in ("pretrained:ddpm", "same-pool floor", "disjoint floor", "a demonstration, not a result",
                 "grids/ddpm.png", "figures/fidelity_confusion.png", "figures/train-gan.png"):
        assert text in report, text
    assert (out / "report.html").is_file() and (out / "grids" / "gan.png").is_file()

    # A re-run reuses every stage: no sampling, no evaluation, no training.
    import bloodgen.study.demo as demo

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    for stage in ("sample", "calculate_metrics", "train"):
        monkeypatch.setattr(demo, stage, forbidden)
    assert main(argv) == 0
