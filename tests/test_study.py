"""The study on the tiny fixture: report files, results, and re-runs that redo nothing already done.

A cheap pixel-pooling feature extractor stands in for InceptionV3 so the pipeline, not the network,
is what these tests exercise (the network has its own tests).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from model_helpers import FAMILIES, tiny_config

from bloodgen.study.presets import PRESETS, StudyPreset

TINY_STUDY = StudyPreset(train_preset="quick", train_seeds=1, n_images=24, eval_seeds=2, grid_per_class=2,
                         config_overrides={m: tiny_config(m) for m in FAMILIES})


class PooledPixels:
    """4x4 average-pooled pixels as 48-d 'features'."""

    name, dim, weights_sha256 = "test-pooled-pixels", 48, "0" * 64

    def __call__(self, images: np.ndarray, desc: str = "") -> np.ndarray:
        x = images.astype(np.float32).reshape(len(images), 4, 7, 4, 7, 3).mean((2, 4))
        return x.reshape(len(images), -1) / 255.0

    def logits_weight(self):
        raise AssertionError("not used")

    def provenance(self) -> dict:
        return {"name": self.name, "dim": self.dim, "sha256": self.weights_sha256}


def study(out: Path, data: Path, preset: StudyPreset = TINY_STUDY, **kwargs) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny file is not the official BloodMNIST
        return run_tiny(out, data, preset, **kwargs)


def run_tiny(out: Path, data: Path, preset: StudyPreset = TINY_STUDY, max_minutes: float | None = None,
             train_only: bool = False, cache: bool = True, **request) -> dict:
    """`run_study` on the tiny file with the pooled-pixel extractor, `request` being StudyRequest fields."""
    from bloodgen.study.pipeline import StudyFolders, StudyRequest, run_study

    folders = StudyFolders(Path(out), data=str(data), cache_dir=str(Path(out) / "cache") if cache else None)
    return run_study(StudyRequest(preset, **request), folders, extractor=PooledPixels(), progress=False,
                     max_minutes=max_minutes, train_only=train_only)


@pytest.fixture(scope="module")
def finished_study(tiny_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return out, study(out, tiny_npz)


def test_study_writes_report_and_every_figure(finished_study):
    out, results = finished_study
    assert set(results.families) == set(FAMILIES)
    for model, family in results.families.items():
        evaluation = family.runs[0].eval
        assert evaluation["fid"]["mean"] > 0 and len(evaluation["fid"]["per_seed"]) == 2
        assert evaluation["sampling_seconds_per_10k"] > 0
        assert ("fid_per_class" in evaluation) == family.config["conditional"]
    floor = results.floor["floor"]
    assert floor["same_pool"]["fid"]["mean"] >= 0 and floor["disjoint"]["fid"]["mean"] > 0
    assert json.loads((out / "results.json").read_text())["families"].keys() == results.families.keys()
    report = (out / "report.md").read_text()
    assert "real vs real, same-pool floor" in report and "Reduced protocol" in report
    for model in FAMILIES:
        assert f"| **{model}** |" in report
    for png in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / png).stat().st_size > 2000, png


def test_rerun_redoes_nothing(finished_study, tiny_npz, monkeypatch):
    out, results = finished_study

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr("bloodgen.training.loop._start", forbidden)
    monkeypatch.setattr("bloodgen.study.stages.calculate_metrics", forbidden)
    again = study(out, tiny_npz)
    assert again.families["ddpm"].runs[0].eval == results.families["ddpm"].runs[0].eval


def test_interrupted_study_resumes_with_only_the_missing_pieces(finished_study, tiny_npz, tmp_path, monkeypatch):
    import bloodgen.metrics
    import bloodgen.training.loop

    out, _ = finished_study
    partial = tmp_path / "study"
    shutil.copytree(out / "runs", partial / "runs")  # every training finished, no evaluation yet
    real_calc, real_train = bloodgen.metrics.calculate_metrics, bloodgen.training.loop._start
    calls = {"train": 0, "metrics": 0}

    def interrupt_second_eval(samples, **kwargs):
        calls["metrics"] += 1
        if calls["metrics"] == 3:  # the floor, the first family, then Ctrl-C
            raise KeyboardInterrupt
        return real_calc(samples, **kwargs)

    monkeypatch.setattr("bloodgen.study.stages.calculate_metrics", interrupt_second_eval)
    with pytest.raises(KeyboardInterrupt):
        study(partial, tiny_npz)
    assert len(list((partial / "eval").glob("*.json"))) == 2

    def counting_train(*args, **kwargs):
        calls["train"] += 1
        return real_train(*args, **kwargs)

    def counting_calc(samples, **kwargs):
        calls["metrics"] += 1
        return real_calc(samples, **kwargs)

    calls["metrics"] = 0
    monkeypatch.setattr("bloodgen.training.loop._start", counting_train)
    monkeypatch.setattr("bloodgen.study.stages.calculate_metrics", counting_calc)
    study(partial, tiny_npz)
    assert calls == {"train": 0, "metrics": len(FAMILIES) - 1}


RECORD_MODELS = ["gan", "vae"]  # the two cheapest families
TINY_RECORD = replace(TINY_STUDY, train_seeds=2, eval_seeds=1, draw_per_run=True)


def test_record_units_each_have_their_own_draw_and_a_moved_study_continues(tiny_npz, tmp_path, monkeypatch):
    import bloodgen.metrics
    import bloodgen.training.loop
    from bloodgen.study.stages import StudyIncomplete

    first = tmp_path / "first"
    results = study(first, tiny_npz, preset=TINY_RECORD, models=RECORD_MODELS)
    for family in results.families.values():
        assert [run.seed for run in family.runs] == [0, 1]
        for run in family.runs:  # protocol seed = training seed, one draw each
            assert run.eval["protocol"]["seeds"] == [run.seed]
        agg = family.aggregate["fid"]
        assert len(agg["per_training_seed"]) == 2 and agg["std"] is not None
    assert results.floor["protocol"]["seeds"] == [0, 1] and results.pending_units == []

    # The study folder moves (a commit checked out elsewhere); one evaluation is lost.
    moved = tmp_path / "moved"
    shutil.move(str(first), moved)
    lost = next((moved / "eval").glob("vae-s1-*.json"))
    lost.unlink()
    real_calc = bloodgen.metrics.calculate_metrics
    calls = []

    def counting_calc(samples, **kwargs):
        calls.append(kwargs["seeds"])
        return real_calc(samples, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished training ran again")

    monkeypatch.setattr("bloodgen.study.stages.calculate_metrics", counting_calc)
    monkeypatch.setattr("bloodgen.training.loop._start", forbidden)
    # Out of time from the start: the finished units are reported, the lost one waits.
    with pytest.raises(StudyIncomplete) as stop:
        study(moved, tiny_npz, preset=TINY_RECORD, models=RECORD_MODELS, max_minutes=1e-9)
    assert stop.value.pending == ["vae seed 1"] and calls == []
    partial = json.loads((moved / "results.json").read_text())
    assert partial["pending_units"] == ["vae seed 1"] and len(partial["families"]["vae"]["runs"]) == 1
    assert "**Unfinished.** 3 of 4 units" in (moved / "report.md").read_text()
    # Without the limit only the lost evaluation is computed, on its own seed, from the moved weights.
    finished = study(moved, tiny_npz, preset=TINY_RECORD, models=RECORD_MODELS)
    assert calls == [[1]] and finished.pending_units == []
    assert finished.families["vae"].runs[1].eval["fid"] == results.families["vae"].runs[1].eval["fid"]


def test_a_training_cut_by_the_time_limit_resumes(tiny_npz, tmp_path):
    from bloodgen.study.stages import DataFile, train_stage
    from bloodgen.training.checkpoint import CHECKPOINT_DIR

    preset = replace(TINY_STUDY, config_overrides={"gan": tiny_config("gan", steps=40, ckpt_every=5)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert train_stage("gan", 0, preset, tmp_path, DataFile(str(tiny_npz), "sha"), False, max_minutes=1e-5) is None
        (run_dir,) = (tmp_path / "runs").iterdir()
        assert (run_dir / CHECKPOINT_DIR).is_dir()
        run = train_stage("gan", 0, preset, tmp_path, DataFile(str(tiny_npz), "sha"), False)
    assert run.summary.status == "completed" and run.summary.step == 40 and run.export.is_file()


def test_train_only_trains_every_unit_and_a_later_run_only_evaluates(tiny_npz, tmp_path, monkeypatch):
    import bloodgen.metrics
    from bloodgen.study.stages import StudyIncomplete

    def forbidden_metrics(*args, **kwargs):
        raise AssertionError("--train-only evaluated")

    real_calc = bloodgen.metrics.calculate_metrics
    monkeypatch.setattr("bloodgen.study.stages.calculate_metrics", forbidden_metrics)
    # Out of time from the start: nothing trains, every unit is reported as left.
    with pytest.raises(StudyIncomplete) as stop:
        study(tmp_path, tiny_npz, preset=TINY_RECORD, models=RECORD_MODELS, train_only=True, max_minutes=1e-9)
    assert stop.value.pending == ["gan seed 0", "vae seed 0", "gan seed 1", "vae seed 1"]
    assert not (tmp_path / "runs").exists()
    trained = study(tmp_path, tiny_npz, preset=TINY_RECORD, models=RECORD_MODELS, train_only=True)["trained"]
    assert len(trained) == 4
    for run_dir in trained:
        assert json.loads((Path(run_dir) / "summary.json").read_text())["status"] == "completed"
    assert not (tmp_path / "eval").exists() and not (tmp_path / "results.json").exists()

    def forbidden_training(*args, **kwargs):
        raise AssertionError("a trained unit was trained again")

    monkeypatch.setattr("bloodgen.study.stages.calculate_metrics", real_calc)
    monkeypatch.setattr("bloodgen.training.loop._start", forbidden_training)
    results = study(tmp_path, tiny_npz, preset=TINY_RECORD, models=RECORD_MODELS)
    assert results.pending_units == []
    assert {m: [r.seed for r in f.runs] for m, f in results.families.items()} == {"gan": [0, 1],
                                                                                           "vae": [0, 1]}


def test_parallel_trainings_are_reused_by_the_unit_loop(tiny_npz, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the unit loop trained again in the main process")

    # The workers are fresh processes: the patch reaches only the main process's unit loop.
    monkeypatch.setattr("bloodgen.training.loop._start", forbidden)
    preset = replace(TINY_STUDY, train_jobs=2)
    results = study(tmp_path, tiny_npz, preset=preset, models=RECORD_MODELS)
    for family in results.families.values():
        assert family.runs[0].summary.status == "completed"


def test_unknown_model_and_bad_seeds_are_user_errors(tiny_npz, tmp_path):
    from bloodgen.errors import UserError

    with pytest.raises(UserError, match="unknown model"):
        study(tmp_path, tiny_npz, models=["vae", "flow"])
    with pytest.raises(UserError, match="--train-seeds must be at least 1"):
        study(tmp_path, tiny_npz, train_seeds=0)


def test_a_new_experiment_and_a_new_metric_are_one_record_each(tiny_npz, tmp_path, monkeypatch):
    """Registered in EXPERIMENTS alone, a toy experiment is checked before training, runs on the study's best
    run, lands in results.json and brings its own section to report.md; registered in METRICS alone, a toy
    default metric is computed for every run and gets its column in the comparison table."""
    from bloodgen.errors import UserError
    from bloodgen.metrics.registry import METRICS, Column, MetricSpec
    from bloodgen.report.document import Heading, Paragraph
    from bloodgen.study.experiments import EXPERIMENTS, Experiment

    def toy_metric(real, fake, options, seed):
        return {"toy_gap": float(abs(real.features.mean() - fake.features.mean()))}

    def check(preset, models):
        if "vae" not in models:
            raise UserError("the toy experiment needs the vae")

    def run(ctx):
        best = ctx.best_run("vae")
        (ctx.out / "toy").mkdir(exist_ok=True)
        return {"best_seed": best.seed, "steps": best.summary.step}

    def report(result, out, folder):
        return [Heading("Toy experiment"), Paragraph(f"TOY best seed {result['best_seed']}, {result['steps']} steps")]

    monkeypatch.setitem(EXPERIMENTS, "toy", Experiment("toy", "toy", check, run, report))
    monkeypatch.setitem(METRICS, "toy", MetricSpec("toy", toy_metric, (Column("toy_gap", "toy gap", study="TOY GAP"),),
                                                   "mean feature gap", default=True))
    with pytest.raises(UserError, match="needs the vae"):
        run_tiny(tmp_path, tiny_npz, models=["gan"], experiments=["toy"])
    assert not (tmp_path / "runs").exists()  # refused before any training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_tiny(tmp_path, tiny_npz, models=["vae"], experiments=["toy"])
    assert results.experiments["toy"]["best_seed"] == 0 and (tmp_path / "toy").is_dir()
    report = (tmp_path / "report.md").read_text()
    assert "TOY best seed 0" in report
    gap = results.families["vae"].runs[0].eval["toy_gap"]
    assert gap["mean"] > 0 and len(gap["per_seed"]) == 2
    header = next(line for line in report.splitlines() if line.startswith("| row | FID (sampling seeds)"))
    row = next(line for line in report.splitlines() if line.startswith("| **vae** |"))
    column = header.split(" | ").index("TOY GAP")
    assert row.split(" | ")[column].startswith(f"{gap['mean']:.3f} ± ")


def test_the_domain_shift_experiment_cuts_the_study_data_and_reports_the_table(tiny_npz, tmp_path):
    preset = replace(TINY_STUDY, domain_shift_seeds=1, classifier_recipe={"epochs": 1, "width": 8, "batch_size": 16})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_tiny(tmp_path, tiny_npz, preset, models=["vae"], experiments=["domain-shift"])
    shift = results.experiments["domain-shift"]
    assert shift["domains"] == ["artificial", "stain", "scope"] and shift["seeds"] == [0]
    assert 0 <= shift["results"]["stain"]["reinhard"]["macro_f1"]["mean"] <= 1
    assert (tmp_path / "domain_shift" / "stain.npz").is_file()
    report = (tmp_path / "report.md").read_text()
    assert "A classifier of one lab in another" in report and "| scope |" in report


def test_the_translation_experiment_trains_each_family_per_domain_and_reports_their_columns(tiny_npz, tmp_path):
    tiny = {m: tiny_config(m) for m in ("cyclegan", "aggan")}
    preset = replace(TINY_STUDY, domain_shift_seeds=1, translation_fid_n=0,
                     config_overrides={**TINY_STUDY.config_overrides, **tiny},
                     classifier_recipe={"epochs": 1, "width": 8, "batch_size": 16})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_tiny(tmp_path, tiny_npz, preset, models=["vae"], experiments=["translation"])
    translation = results.experiments["translation"]
    assert translation["translators"] == ["aggan", "cyclegan"]
    for name in ("artificial", "stain", "scope"):
        assert {"aggan", "cyclegan", "before", "oracle"} <= set(translation["results"][name])
    assert len(list((tmp_path / "runs").glob("*gan-*-s0-*"))) == 6
    report = (tmp_path / "report.md").read_text()
    assert "S_A cyclegan" in report and "What the translation does to the cells" in report


def test_the_low_data_experiment_trains_a_ddpm_per_subset_picks_a_checkpoint_and_reports_three_methods(
        tiny_npz, tmp_path):
    preset = replace(TINY_STUDY, classifier_recipe={"epochs": 1, "width": 8, "batch_size": 16},
                     low_data={"per_class": (2, 4), "repeats": 2, "test_per_class": 2, "val_per_class": 1,
                               "checkpoints": 2, "resnet_steps": 3,
                               "options": {"min_draws": 4, "max_draws": 8, "draws_per_round": 4}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_tiny(tmp_path, tiny_npz, preset, models=["ddpm"], experiments=["low-data"])
    low = results.experiments["low-data"]
    assert [(u["per_class"], u["repeat"], u["n_train"]) for u in low["units"]] == [(2, 0, 16), (2, 1, 16),
                                                                                    (4, 0, 32), (4, 1, 32)]
    assert low["n_test"] == 16 and set(low["summary"]) == {"2", "4"}
    for unit in low["units"]:
        assert unit["steps"] % 2 == 0 and len(unit["checkpoint"]["val_accuracy"]) == 2
        assert unit["checkpoint"]["step"] in {int(s) for s in unit["checkpoint"]["val_accuracy"]}
        assert all(0 <= unit[m]["balanced_accuracy"] <= 1 for m in ("diffusion", "resnet18", "logistic"))
    runs = sorted(p.name for p in (tmp_path / "runs").glob("ddpm-lowdata-*"))
    assert len(runs) == 4 and all(len(list((tmp_path / "runs" / r / "checkpoints").glob("step-*.pt"))) == 2
                                  for r in runs)
    report = (tmp_path / "report.md").read_text()
    assert "Balanced test accuracy, mean ± std over repetitions" in report
    again = run_tiny(tmp_path, tiny_npz, preset, models=["ddpm"], experiments=["low-data"])  # resumes: all saved
    assert again.experiments["low-data"]["units"] == low["units"]
    from bloodgen.errors import UserError

    with pytest.raises(UserError, match="other low-data settings"):
        run_tiny(tmp_path, tiny_npz, replace(preset, low_data={**preset.low_data, "resnet_steps": 4}), models=["ddpm"],
                 experiments=["low-data"])


def test_the_cell_features_experiment_reports_each_method_across_the_studys_domains(tiny_npz, tmp_path):
    preset = replace(TINY_STUDY, cell_features={"input": "pixels", "methods": ["raw", "mmd"], "seeds": 1, "steps": 10,
                                                "save_every": 10, "log_every": 10, "batch_size": 32})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_tiny(tmp_path, tiny_npz, preset, models=["vae"], experiments=["cell-features"])
    cells = results.experiments["cell-features"]
    assert cells["domains"] == ["A", "artificial", "stain", "scope"]
    assert sorted(cells["units"]) == ["pixels-mmd", "pixels-raw"]
    for unit in cells["units"].values():
        assert set(unit["trained on stain"]) == {"A", "artificial", "stain", "scope"}
    assert (tmp_path / "cell_features" / "runs" / "pixels-mmd").is_dir()
    report = (tmp_path / "report.md").read_text()
    assert "### pixels-mmd" in report and "in-domain (mean of the diagonal)" in report


@pytest.mark.parametrize("preset_name", list(PRESETS))
def test_every_study_preset_plans_every_experiment(preset_name):
    """`study --preset P --experiments E` must never fail on a missing budget after hours of training: every
    registered experiment's check passes for every preset, and the prototypes budget resolves to a config."""
    from bloodgen.improve.budgets import budget_for
    from bloodgen.models.config import resolve_config
    from bloodgen.models.registry import study_families
    from bloodgen.study.experiments import EXPERIMENTS, prototypes_budget
    from bloodgen.study.pipeline import StudyRequest

    plan = StudyRequest(preset_name, experiments=list(EXPERIMENTS)).plan()
    assert [e.name for e in plan.experiments] == list(EXPERIMENTS) and plan.models == tuple(study_families())
    assert set(PRESETS[preset_name].experiments) <= set(EXPERIMENTS)
    budget = budget_for(prototypes_budget(plan.preset))
    resolve_config("proto-ddpm", budget.diffusion_preset, None, budget.diffusion_overrides)


def test_a_study_plan_refuses_what_cannot_run_before_training():
    from bloodgen.errors import UserError
    from bloodgen.study.pipeline import StudyRequest

    for request, message in ((StudyRequest("quick", experiments=["nope"]), "unknown experiment"),
                             (StudyRequest("quick", models=["vae"], experiments=["diffusion-classifier"]),
                              "uses the study's ddpm"),
                             (StudyRequest(replace(PRESETS["quick"], prototypes_budget="nope"),
                                           experiments=["prototypes"]), "unknown preset 'nope'"),
                             (StudyRequest(replace(PRESETS["quick"], diffusion_classifier={"n_tset": 5}),
                                           experiments=["diffusion-classifier"]), "n_tset"),
                             (StudyRequest(replace(PRESETS["quick"], low_data={"per_clas": 5}),
                                           experiments=["low-data"]), "per_clas"),
                             (StudyRequest("quick", models=["vae"], experiments=["low-data"]), "trains the study's ddpm"),
                             (StudyRequest(replace(PRESETS["quick"], cell_features={"methods": ["pca"]}),
                                           experiments=["cell-features"]), "methods from"),
                             (StudyRequest("nope"), "unknown study preset"),
                             (StudyRequest("quick", train_seeds=0), "--train-seeds must be at least 1"),
                             (StudyRequest("quick", models=["gan"], utility_models=["vae"]), "names vae")):
        with pytest.raises(UserError, match=message):
            request.plan()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# Appended to a copy of the report: once loaded, it records how many images decoded and what tables hold.
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const probe = document.createElement('pre'); probe.id = 'probe';
  probe.textContent = JSON.stringify({images: imgs.length, decoded: imgs.filter(i => i.naturalWidth > 0).length,
    tables: document.querySelectorAll('table').length, firstRow: document.querySelector('table tbody tr').innerText});
  document.body.appendChild(probe); });</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package 'chromium'; .ci/run installs it)")
def test_html_report_renders_in_a_real_browser(finished_study, tmp_path):
    out, _ = finished_study
    page = tmp_path / "probe.html"
    page.write_text((out / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1).replace("&quot;", '"'))
    assert probe["images"] >= 3 and probe["decoded"] == probe["images"]
    assert probe["tables"] >= 3 and "same-pool floor" in probe["firstRow"]


def test_utility_section_for_conditional_and_unconditional_families(tiny_npz, tmp_path, monkeypatch):
    from dataclasses import replace

    import bloodgen.classify.utility

    preset = replace(TINY_STUDY, utility=True, classifier_recipe={"epochs": 3, "batch_size": 16, "lr": 3e-3, "width": 8})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_tiny(tmp_path, tiny_npz, preset, models=["gan", "cgan"])
    cgan, gan = results.families["cgan"].utility, results.families["gan"].utility
    assert 0 <= cgan["fidelity"]["class_fidelity_macro"] <= 1 and "tstr" in cgan and "augmented" in cgan
    assert "tstr" not in gan and "skipped" in gan  # unconditional: memorisation only
    assert {"pixels", "inception"} <= set(cgan["memorisation"]) and {"pixels", "inception"} <= set(gan["memorisation"])
    report = (tmp_path / "report.md").read_text()
    assert "Utility of the synthetic images" in report and "real images (train on real)" in report
    for png in ("fidelity_confusion.png", "nearest_pixels.png", "nearest_inception.png"):
        assert (tmp_path / "figures" / png).stat().st_size > 2000

    for samples in (tmp_path / "utility").glob("*-samples.npz"):  # a clone has the figure's images only
        samples.unlink()
    figure = (tmp_path / "figures" / "nearest_pixels.png").read_bytes()
    (tmp_path / "figures" / "nearest_pixels.png").unlink()

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished utility check ran again")

    monkeypatch.setattr(bloodgen.classify.utility, "evaluate_utility", forbidden)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_tiny(tmp_path, tiny_npz, preset, models=["gan", "cgan"])
        assert (tmp_path / "figures" / "nearest_pixels.png").read_bytes() == figure
        # --utility-models: only the named families get the checks (here, reused from the run above)
        only = run_tiny(tmp_path, tiny_npz, replace(preset, utility=False), models=["gan", "cgan"],
                        utility_models=["cgan"])
    assert only.families["cgan"].utility is not None and only.families["gan"].utility is None
    assert only.study.command.endswith("--utility-models cgan")
    from bloodgen.errors import UserError

    with pytest.raises(UserError, match="--utility-models names vae"):
        run_tiny(tmp_path, tiny_npz, preset, models=["gan", "cgan"], utility_models=["vae"])

    # Publishing it (benchmarks/publish_study.py): the hand-written README stays, the utility samples stay behind.
    import importlib.util

    spec = importlib.util.spec_from_file_location("publish_study", Path(__file__).parents[1] / "benchmarks"
                                                  / "publish_study.py")
    publish_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish_study)
    published, pretrained = tmp_path / "published", tmp_path / "pretrained"
    published.mkdir()
    (published / "README.md").write_text("how this study was made")
    (published / "stale.json").write_text("{}")
    (published / "record").mkdir()  # another study published inside (results/record/) stays
    (published / "record" / "results.json").write_text("{}")
    shipped = publish_study.publish(tmp_path, published, pretrained)
    assert (published / "README.md").read_text() == "how this study was made"
    assert not (published / "stale.json").exists() and (published / "record" / "results.json").is_file()
    assert (published / "figures" / "fidelity_confusion.png").is_file() and (tmp_path / "utility").is_dir()
    assert not list(published.rglob("*-samples.npz"))  # only the figure's few images travel
    assert sorted(p.name for p in (published / "utility").iterdir()) == ["cgan-s0-closest.npz", "gan-s0-closest.npz"]
    assert set(shipped["shipped"]) == {"gan", "cgan"} and (pretrained / "cgan" / "provenance.json").is_file()
    cgan = shipped["shipped"]["cgan"]  # the best run samples from its published folder, as the shipped copy
    assert Path(cgan["run"]).parent.parent == published and "--out" in cgan["study"]
    weights = (Path(cgan["run"]) / "model.safetensors").read_bytes()
    assert weights == (pretrained / "cgan" / "model.safetensors").read_bytes()
    assert '": "/' not in (pretrained / "cgan" / "model.json").read_text()  # no machine path in the shipped copy
    # --pretrained-only: the shipped models from a study kept where it is, nothing else copied
    only = publish_study.publish_pretrained(published, tmp_path / "pretrained-only")
    assert only["shipped"]["cgan"]["run"] == cgan["run"]
    assert (tmp_path / "pretrained-only" / "gan" / "model.json").is_file()


def test_experiments_get_the_study_ddpm_a_holdout_ddpm_and_a_report_section(tiny_npz, tmp_path, monkeypatch):
    """The plumbing only: each experiment's own code is tested in test_prototypes.py / test_diffusion_classifier.py."""
    from dataclasses import replace

    import bloodgen.classify.diffusion_eval as diffusion_eval
    import bloodgen.improve.compare as improve
    from bloodgen.classify.diffusion_results import EvalResults
    from bloodgen.data import load_bloodmnist
    from bloodgen.report.document import Paragraph

    calls = {}

    def fake_compare(out, comparison, **kwargs):
        calls["prototypes"] = (out, comparison)
        return SimpleNamespace(to_json=lambda: {"marker": "prototypes"})

    def fake_evaluation(cfg):
        calls["diffusion-classifier"] = cfg
        return EvalResults()

    monkeypatch.setattr(improve, "compare", fake_compare)
    monkeypatch.setattr(improve.ComparisonResult, "from_json", lambda record: record)
    monkeypatch.setattr(diffusion_eval, "run_evaluation", fake_evaluation)
    monkeypatch.setattr(improve, "report_blocks", lambda results, out, **kw: [Paragraph("SECTION " + results["marker"])])
    monkeypatch.setattr(diffusion_eval, "report_blocks",
                        lambda results, out, **kw: [Paragraph("SECTION diffusion classifier"
                                                              if isinstance(results, EvalResults) else "")])
    preset = replace(TINY_STUDY, diffusion_classifier={"n_test": 5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_tiny(tmp_path, tiny_npz, preset, models=["ddpm"],
                           experiments=["prototypes", "diffusion-classifier"])
    assert calls["prototypes"][0] == tmp_path / "prototypes" and calls["prototypes"][1].preset == "quick"
    cfg = calls["diffusion-classifier"]
    ddpm = results.families["ddpm"].runs[0]
    assert Path(cfg.checkpoint) == tmp_path / ddpm.run_dir / ddpm.summary.export and cfg.n_test == 5
    trained_on = json.loads((Path(cfg.holdout_checkpoint).parent / "environment.json").read_text())["data"]
    holdout_data = load_bloodmnist(next((tmp_path / "cache" / "subsets").glob("*-without-2.npz")))
    assert 2 not in holdout_data.labels("train") and trained_on["sha256"] == holdout_data.sha256
    report = (tmp_path / "report.md").read_text()
    assert "SECTION prototypes" in report and "SECTION diffusion classifier" in report
    assert "--experiments prototypes diffusion-classifier" in results.study.command
    with pytest.raises(Exception, match="uses the study's ddpm"):
        run_tiny(tmp_path, tiny_npz, preset, models=["vae"], experiments=["diffusion-classifier"], cache=False)
