"""The diffusion classifier (CytoDiffusion): shared noise, pruning, toy classification, heat maps,
v-prediction, user errors, corruptions and the evaluation report."""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import tiny_config, train_tiny
from torch import nn

from bloodgen.classify import diffusion as dc
from bloodgen.classify import draws
from bloodgen.classify.corruptions import BLOODMNIST_CORRUPTIONS, corrupt_all
from bloodgen.classify.diffusion_results import (PART_RECORDS, AccuracyPart, Calibration, CalibrationPart,
                                                 DiffusionScores, EvalResults, ResnetScores)
from bloodgen.classify.scores import ClassificationScores
from bloodgen.data import dihedral
from bloodgen.errors import UserError

FAST = dc.ClassifierOptions(min_draws=4, max_draws=8, draws_per_round=4, batch_size=64)


def random_model(conditional: bool = True, prediction: str = "epsilon", class_counts=None, network=None):
    """An untrained tiny ddpm as `load_model` returns it: enough to check the bookkeeping."""
    from bloodgen.models.config import load_presets
    from bloodgen.models.ddpm import DDPM
    from bloodgen.sampling.api import LoadedModel
    from bloodgen.training.checkpoint import RunSpec

    cfg = {**load_presets("ddpm")["quick"],
           **tiny_config("ddpm"), "conditional": conditional, "prediction": prediction}
    family = DDPM("ddpm", cfg, 8)
    torch.manual_seed(0)
    net = network or family.build()["unet"].eval().requires_grad_(False)
    counts = np.full(8, 10) if class_counts is None else np.asarray(class_counts)
    return LoadedModel(family=family, network=net, spec=RunSpec("ddpm", "quick", 0, cfg), class_counts=counts,
                       step=0, source=Path("random-model"))


def spy_on_denoise(model) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The (x_t, t, labels) of every network call the model makes from now on, appended as they happen."""
    calls = []
    denoise = model.family.denoise
    model.family.denoise = lambda net, x, t, y: calls.append((x.clone(), t.clone(), y.clone())) or denoise(net, x, t, y)
    return calls


def classes_per_draw(calls) -> dict[tuple[bytes, int], list[int]]:
    """The classes each noisy image (x_t, t) was scored under."""
    groups = {}
    for xi, ti, yi in zip(*(torch.cat([c[k] for c in calls]) for k in range(3))):
        groups.setdefault((xi.numpy().tobytes(), int(ti)), []).append(int(yi))
    return groups


def test_every_class_sees_the_same_noise_and_time_in_a_draw(tiny_data):
    model = random_model(class_counts=[5, 5, 0, 5, 5, 5, 5, 5])  # class 2 never trained: no candidate
    calls = spy_on_denoise(model)
    images = tiny_data.images("test")[:3]
    res = dc.classify_images(model, images, replace(FAST, prune=False))
    groups = classes_per_draw(calls)
    assert len(groups) == 3 * FAST.max_draws  # one noisy image per (image, draw) ...
    assert all(sorted(g) == [0, 1, 3, 4, 5, 6, 7] for g in groups.values())  # ... scored under every candidate
    assert np.isnan(res.mean_errors[:, 2]).all() and (res.draws[:, 2] == 0).all()
    assert (res.draws[:, [0, 1, 3, 4, 5, 6, 7]] == FAST.max_draws).all()
    assert set(res.predictions) <= {0, 1, 3, 4, 5, 6, 7}


def test_tta_keeps_every_draw_paired_across_classes_and_changes_the_draws(tiny_data):
    model = random_model()
    calls = spy_on_denoise(model)
    images = tiny_data.images("test")[:2]
    plain = dc.classify_images(model, images, replace(FAST, prune=False))
    plain_x = torch.cat([c[0] for c in calls])
    calls.clear()
    tta = dc.classify_images(model, images, replace(FAST, prune=False, tta=True))
    groups = classes_per_draw(calls)
    assert len(groups) == 2 * FAST.max_draws and all(sorted(g) == list(range(8)) for g in groups.values())
    assert not torch.equal(plain_x, torch.cat([c[0] for c in calls]))  # some draws saw a flipped or turned image
    assert not np.allclose(plain.mean_errors, tta.mean_errors)


def test_dihedral_gives_the_eight_symmetries_of_the_square_and_the_disc_mask_its_pixels():
    x = torch.arange(2 * 5 * 5, dtype=torch.float32).view(1, 2, 5, 5).expand(8, -1, -1, -1)
    out = dihedral(x, torch.arange(8))
    assert torch.equal(out[0], x[0]) and len({o.numpy().tobytes() for o in out}) == 8
    mask = dc.disc_mask((28, 28), 12)
    assert mask[13, 13] == 1 and mask[0, 0] == 0 and mask[13, 2] == 1 and mask[13, 1] == 0  # centre 13.5
    assert torch.equal(mask, mask.flip(0)) and torch.equal(mask, mask.T)
    assert 400 < mask.sum() < 500  # about pi * 12^2 = 452
    assert torch.equal(dc.disc_mask((28, 28), 0), torch.ones(28, 28))
    scorer = dc.NoiseErrors(random_model(), "uniform", disc_radius=12)
    residuals = torch.randn(3, 3, 28, 28)
    expected = residuals.pow(2).mean(1)[:, mask.bool()].mean(1)
    torch.testing.assert_close(scorer.error(residuals), expected)
    with pytest.raises(UserError, match="--disc-radius"):
        dc.ClassifierOptions(disc_radius=-1).check()


def test_same_seed_same_result_other_seed_other_noise(tiny_data):
    model = random_model()
    images = tiny_data.images("test")[:4]
    a = dc.classify_images(model, images, FAST)
    b = dc.classify_images(model, images, FAST, chunk=3)  # batching changes float rounding only
    c = dc.classify_images(model, images, replace(FAST, seed=1))
    np.testing.assert_allclose(a.mean_errors, b.mean_errors, rtol=1e-5)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert not np.allclose(np.nan_to_num(a.mean_errors), np.nan_to_num(c.mean_errors))


def test_an_interrupted_classification_continues_after_its_last_saved_chunk(tiny_data, tmp_path, monkeypatch):
    model = random_model()
    images = tiny_data.images("test")[:6]
    whole = dc.classify_images(model, images, FAST, chunk=2)
    partial, save = tmp_path / "accuracy.partial.npz", dc._Partial.save

    def save_then_stop(self, done, seconds):
        save(self, done, seconds)
        if done == 4:
            raise KeyboardInterrupt  # killed after two of three chunks

    monkeypatch.setattr(dc._Partial, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        dc.classify_images(model, images, FAST, chunk=2, partial=partial)
    monkeypatch.setattr(dc._Partial, "save", save)
    stale = tmp_path / "stale.npz"
    stale.write_bytes(partial.read_bytes())  # the chunks of another call: other options, not reused
    other = dc.classify_images(model, images, replace(FAST, seed=1), chunk=2, partial=stale)
    np.testing.assert_array_equal(other.draws, dc.classify_images(model, images, replace(FAST, seed=1)).draws)
    calls = spy_on_denoise(model)
    resumed = dc.classify_images(model, images, FAST, chunk=2, partial=partial)
    np.testing.assert_array_equal(resumed.draws, whole.draws)
    np.testing.assert_allclose(resumed.mean_errors, whole.mean_errors, rtol=1e-6)
    assert sum(len(c[0]) for c in calls) <= whole.draws[4:].sum()  # only the last chunk was scored
    calls.clear()
    again = dc.classify_images(model, images, FAST, chunk=2, partial=partial)  # finished: nothing to score
    assert not calls and np.array_equal(again.draws, whole.draws)


def test_pruning_keeps_the_clearly_best_class_and_drops_the_rest():
    rng = np.random.default_rng(0)
    shared = rng.gamma(2.0, 0.05, size=40)  # draw-to-draw scale, common to all classes (paired)
    errors = shared + rng.normal(0, 0.002, size=(8, 40)) + 0.02
    errors[5] -= 0.02  # class 5 is clearly best
    active = np.ones(8, dtype=bool)
    active[2] = False
    kept = draws.prune_classes(errors, active, 2e-3)
    assert kept[5] and kept.sum() == 1
    # Indistinguishable classes are kept.
    tied = shared + rng.normal(0, 0.002, size=(8, 40))
    assert draws.prune_classes(tied, np.ones(8, dtype=bool), 2e-3).sum() >= 7


def test_pruning_cuts_evaluations_and_never_exceeds_max_draws(tiny_data):
    model = random_model()
    images = tiny_data.images("test")[:4]
    full = dc.classify_images(model, images, replace(FAST, prune=False, max_draws=12))
    pruned = dc.classify_images(model, images, replace(FAST, max_draws=12, p_value=0.2))
    assert (pruned.draws_used <= 12).all() and (pruned.evaluations <= full.evaluations).all()
    assert (full.evaluations == 8 * 12).all()
    # The prediction is a class that was never pruned, and the confidence is its paired gap.
    assert (pruned.draws[np.arange(4), pruned.predictions] == pruned.draws_used).all()
    assert (pruned.error_gaps[np.arange(4), pruned.predictions] == 0).all() and (pruned.confidence >= 0).all()


@pytest.mark.parametrize("weighting", ["paper", "snr"])
def test_pruning_replayed_on_kept_unpruned_draws_is_the_live_pruned_run(tiny_data, weighting):
    model = random_model()
    images = tiny_data.images("test")[:6]
    options = replace(FAST, max_draws=12, p_value=0.3, weighting=weighting)
    kept = dc.classify_images(model, images, replace(options, prune=False), keep_draws=True)
    live = dc.classify_images(model, images, options)
    assert kept.draw_errors.shape == (6, 8, 12) and (kept.draw_timesteps >= 0).all()
    abar = model.family.noise_scheduler().alphas_cumprod.double().numpy()
    weighted = kept.draw_errors * draws.draw_weights(weighting, kept.draw_timesteps, abar,
                                                      int(model.family.config["timesteps"]))[:, None]
    np.testing.assert_allclose(weighted.mean(2), kept.mean_errors, rtol=1e-12)
    predictions, class_draws = draws.replay_pruning(weighted, kept.candidates, options.min_draws, options.p_value,
                                                    options.draws_per_round)
    np.testing.assert_array_equal(class_draws, live.draws)
    np.testing.assert_array_equal(predictions, live.predictions)
    assert (live.draws < 12).any()  # some class was pruned, so the replay did prune
    unpruned = draws.predictions_by_draws(draws.combine(weighted, kept.candidates, "mean"), [4, 12])
    np.testing.assert_array_equal(unpruned[1], kept.predictions)
    first4 = dc.classify_images(model, images, replace(options, prune=False, max_draws=4))
    np.testing.assert_array_equal(unpruned[0], first4.predictions)


def test_draw_aggregations_weightings_and_the_fitted_time_weights():
    rng = np.random.default_rng(0)
    n, c, d, bins = 400, 3, 40, 4
    t = rng.integers(0, 1000, size=(n, d))
    labels = rng.integers(0, c, size=n)
    raw = rng.gamma(2.0, 1.0, size=(n, 1, d)) + rng.normal(0, 0.5, size=(n, c, d))
    early = t < 250  # only the first quarter of time tells the classes apart
    raw[np.arange(n), labels] -= np.where(early, 1.0, 0.0)
    rank = draws.combine(raw, [0, 1, 2], "rank")
    assert set(np.unique(rank[:, :, 0])) <= {1.0, 2.0, 3.0} and np.allclose(rank.sum(1), 6)
    normalised = draws.combine(raw, [0, 1], "normalised")
    assert np.isnan(normalised[:, 2]).all() and np.allclose(normalised[:, :2].mean(1), 1)
    features = draws.bin_features(raw, t, [0, 1, 2], 1000, bins)
    beta = draws.fit_bin_weights(features, labels, [0, 1, 2])
    assert beta[0] > 3 * np.abs(beta[1:]).max()
    assert (draws.cross_fitted_predictions(features, labels, [0, 1, 2]) == labels).mean() > 0.8
    abar = np.linspace(0.999, 0.001, 1000)
    assert np.allclose(draws.draw_weights("exp-2", np.array([0, 999]), abar, 1000), [1, np.exp(-2)])
    with pytest.raises(UserError, match="unknown weighting"):
        draws.draw_weights("cosine", t, abar, 1000)


def test_a_class_pruned_on_cheap_early_draws_does_not_win_on_its_unpaired_mean():
    t_scale = np.linspace(0.01, 1.0, 40)  # errors grow with t, and the later draws happen to have large t
    errors = np.zeros((1, 8, 40))
    errors[0, 1] = t_scale
    errors[0, 0, :10] = t_scale[:10] + 0.01  # worse than class 1 on every draw it took part in
    counts = np.zeros((1, 8), dtype=np.int64)
    counts[0, :2] = [10, 40]
    gaps = draws.paired_gaps(errors, counts, [0, 1])
    assert gaps[0, 1] == 0 and gaps[0, 0] == pytest.approx(0.01)
    assert errors[0, 0, :10].mean() < errors[0, 1].mean()  # the naive comparison would pick class 0


class OracleUNet(nn.Module):
    """The exact noise (or v) predictor for a data set of one flat image per class: grey level -0.6 + 0.4 c."""

    def __init__(self, scheduler, prediction: str):
        super().__init__()
        self.abar = scheduler.alphas_cumprod
        self.prediction = prediction
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, t, class_labels=None):
        abar = self.abar[t].view(-1, 1, 1, 1).float()
        x0 = (-0.6 + 0.4 * class_labels.float()).view(-1, 1, 1, 1).expand_as(x)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        out = eps if self.prediction == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
        return type("Out", (), {"sample": out})()


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_exact_denoiser_classifies_perfectly_with_either_prediction_type(prediction):
    model = random_model(prediction=prediction, class_counts=[5, 5, 5, 5, 0, 0, 0, 0])
    model.network = OracleUNet(model.family.noise_scheduler(), prediction)
    levels = np.round((np.array([-0.6, -0.2, 0.2, 0.6]) + 1) * 127.5).astype(np.uint8)
    images = np.repeat(levels, 28 * 28 * 3).reshape(4, 28, 28, 3)
    res = dc.classify_images(model, images, replace(FAST, weighting="uniform"))
    np.testing.assert_array_equal(res.predictions, [0, 1, 2, 3])
    # Rounding to uint8 leaves the true class an error of almost zero: v was turned back into epsilon.
    assert res.mean_errors[np.arange(4), [0, 1, 2, 3]].max() < 1e-3
    assert (res.confidence > 0).all()


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A tiny conditional ddpm trained on two easily told-apart classes (dark and light discs) only."""
    from conftest import make_tiny_images

    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in {"train": 96, "val": 16, "test": 24}.items():
        images, labels = make_tiny_images(n * 4, rng)
        keep = np.flatnonzero(np.isin(labels[:, 0], [0, 7]))[:n]  # the two most different discs
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[keep], labels[keep]
    path = tmp_path_factory.mktemp("toy") / "toy.npz"
    np.savez_compressed(path, **arrays)
    run = train_tiny("ddpm", path, tmp_path_factory.mktemp("toy-runs"),
                     overrides={"steps": 100, "lr": 2e-3, "warmup_steps": 10, "ema_decay": 0.9, "cfg_dropout": 0.0,
                                "augment": False})
    return path, run.run_dir


def test_trained_toy_model_tells_its_two_classes_apart(toy_run):
    from bloodgen.sampling.api import load_model

    path, run_dir = toy_run
    model = load_model(run_dir, "cpu")
    assert dc.candidate_classes(model) == [0, 7]
    with np.load(path) as f:
        images, labels = f["test_images"][:12], f["test_labels"][:12, 0]
    res = dc.classify_images(model, images, dc.ClassifierOptions(min_draws=10, max_draws=30, weighting="uniform"))
    assert (res.predictions == labels).mean() >= 0.9
    assert np.isnan(res.mean_errors[:, 1:7]).all()


def test_heat_maps_have_the_image_shape_and_zero_for_the_predicted_class(tiny_data):
    model = random_model(class_counts=[5, 5, 5, 0, 5, 5, 5, 5])
    maps = dc.counterfactual_maps(model, tiny_data.images("test")[0], draws=4)
    assert maps.squared.shape == (8, 28, 28) and maps.signed.shape == (8, 3, 28, 28)
    assert np.isnan(maps.squared[3]).all() and np.isnan(maps.signed[3]).all()
    others = [0, 1, 2, 4, 5, 6, 7]
    assert (maps.squared[maps.predicted] == 0).all() and np.isfinite(maps.squared[others]).all()
    assert (maps.signed[maps.predicted] == 0).all() and np.isfinite(maps.signed[others]).all()


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_signed_maps_of_an_exact_denoiser_point_from_the_image_to_the_target_class(prediction):
    """Classes are flat grey levels -0.6 + 0.4 c: the way to class c is uniformly brighter for c above the
    prediction, darker below, more so the farther c is (eps_pred - eps_c = sqrt(abar / (1 - abar)) (x0_c - x0_pred))."""
    model = random_model(prediction=prediction, class_counts=[5, 5, 5, 5, 0, 0, 0, 0])
    model.network = OracleUNet(model.family.noise_scheduler(), prediction)
    image = np.full((28, 28, 3), round((0.2 + 1) * 127.5), dtype=np.uint8)  # class 2
    maps = dc.counterfactual_maps(model, image, draws=6, options=replace(FAST, weighting="uniform"))
    assert maps.predicted == 2
    means = [maps.signed[c].mean() for c in range(4)]
    assert means[0] < means[1] < 0 == means[2] < means[3]
    for c in (0, 1, 3):
        np.testing.assert_allclose(maps.signed[c], means[c], rtol=1e-3)  # the same change everywhere


def test_a_latent_model_classifies_on_its_encoders_latents_and_refuses_pixel_heat_maps(tiny_npz, tiny_data,
                                                                                        tmp_path):
    from bloodgen.sampling.api import load_model

    run = train_tiny("ldm", tiny_npz, tmp_path, overrides={"conditional": True})
    model = load_model(run.run_dir, "cpu")
    calls = spy_on_denoise(model)
    images = tiny_data.images("test")[:3]
    res = dc.classify_images(model, images, replace(FAST, prune=False, tta=True), keep_draws=True)
    latent = (model.family.config["latent_channels"], 14, 14)
    assert all(tuple(x.shape[1:]) == latent for x, _, _ in calls)  # the U-Net saw latents, not pixels
    assert res.draw_errors.shape == (3, 8, FAST.max_draws) and np.isfinite(res.draw_errors).all()
    assert set(res.predictions) <= set(range(8))
    with pytest.raises(UserError, match="pixel-space model"):
        dc.counterfactual_maps(model, images[0], draws=2)


def test_moving_along_a_faithful_map_reaches_the_target_more_often_than_random_moves():
    from bloodgen.classify.heatmaps import faithfulness, moved

    levels = np.array([0.2, 0.4, 0.6, 0.8])  # a "classifier" of brightness: the nearest level's class

    def predict(images: np.ndarray) -> np.ndarray:
        distance = np.abs(images.mean((1, 2, 3))[:, None] / 255 - levels)
        return np.eye(4)[distance.argmin(1)]

    images = np.stack([np.full((28, 28, 3), round(255 * lv), dtype=np.uint8) for lv in levels])
    maps = np.stack([[np.full((3, 28, 28), b - a) for b in levels] for a in levels])  # towards each level
    step = moved(images[0], np.random.default_rng(0).standard_normal((3, 28, 28)), 0.1)
    assert abs(np.sqrt(np.mean((step / 255 - images[0] / 255) ** 2)) - 0.1) < 0.01
    f = faithfulness(images, [0, 1, 2, 3], maps, [0, 1, 2, 3], predict, steps=(0.15, 0.3), n_random=4)
    assert f.pairs == 12 and f.random_directions == 4
    # a 0.15 step reaches the 6 neighbouring levels (0.2 apart) and no farther one; random noise moves no mean
    assert f.map_to_target[0] == 0.5 and f.random_to_target[0] == 0
    assert f.map_gain[1] > f.random_gain[1]


def test_calibration_temperature_and_probabilities():
    errors = np.array([[0.10, 0.20, np.nan], [0.30, 0.10, np.nan], [0.10, 0.11, np.nan]])
    t = dc.fit_temperature(errors, np.array([0, 1, 0]))
    p = dc.error_probabilities(errors, t)
    np.testing.assert_allclose(p.sum(1), 1)
    assert (p[:, 2] == 0).all() and (p.argmax(1) == [0, 1, 0]).all()


def test_user_errors_are_one_line(tiny_data, tiny_npz, tmp_path, capsys):
    from bloodgen.cli import main

    with pytest.raises(UserError, match="unconditional"):
        dc.candidate_classes(random_model(conditional=False))
    with pytest.raises(UserError, match=r"\(N, 28, 28, 3\)"):
        dc.check_images(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(UserError, match="uint8"):
        dc.check_images(np.zeros((2, 28, 28, 3), np.float32))
    for bad, match in [({"weighting": "cubic"}, "unknown weighting"), ({"p_value": 1.5}, "p-value"),
                       ({"min_draws": 1}, "min-draws"), ({"min_draws": 30, "max_draws": 20}, "max-draws")]:
        with pytest.raises(UserError, match=match):
            dc.ClassifierOptions(**bad).check()
    images = tmp_path / "cells.npz"
    np.savez(images, images=np.zeros((2, 28, 28, 3), np.uint8))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((2, 28, 28), np.uint8))
    cases = [
        (["classify", str(tmp_path / "missing-run"), str(images)], "not found"),
        (["classify", str(tmp_path), str(wrong)], r"\(N, 28, 28, 3\)"),
        (["classify", str(tmp_path), str(images), "--p-value", "0"], "p-value"),
        (["classify", str(tmp_path), "nonsense"], "neither a split"),
        (["classify-eval", str(tmp_path), "--out", str(tmp_path / "o"), "--parts", "accuracy", "magic"], "unknown part"),
        (["classify-eval", str(tmp_path), "--out", str(tmp_path / "o"), "--parts", "anomaly"], "holdout-checkpoint"),
    ]
    for argv, match in cases:
        assert main(argv + ["--data", str(tiny_npz)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("bloodgen: error:") and "\n" not in err
        assert __import__("re").search(match, err), err


def test_classify_command_writes_predictions_and_accuracy(toy_run, tmp_path, capsys):
    from bloodgen.cli import main

    path, run_dir = toy_run
    out = tmp_path / "pred.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["classify", str(run_dir), "test", "--data", str(path), "--n", "6", "--min-draws", "4",
                     "--max-draws", "8", "--out", str(out), "--no-progress", "--save-draws"]) == 0
    assert "accuracy" in capsys.readouterr().out
    with np.load(out) as f:
        assert f["predictions"].shape == (6,) and f["mean_errors"].shape == (6, 8) and "labels" in f
        assert f["draw_errors"].shape == (6, 8, 8) and f["draw_timesteps"].shape == (6, 8)
        # pruned: a class's errors end where it was pruned, and every image made at least --min-draws draws
        assert (np.isfinite(f["draw_errors"]).sum(2) == f["draws"]).all() and (f["draw_timesteps"][:, :4] >= 0).all()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["options"]["seed"] == 0 and "environment" in summary and len(summary["per_image"]) == 6


def test_eval_heatmap_part_writes_results_report_and_blocks(toy_run, tmp_path):
    from bloodgen.classify.diffusion_eval import EvalConfig, report_blocks, run_evaluation
    from bloodgen.classify.recipe import RECIPES
    from bloodgen.report.document import Image

    path, run_dir = toy_run
    cfg = EvalConfig(checkpoint=str(run_dir), out=str(tmp_path / "eval"), data=str(path), parts=("heatmaps",),
                     heatmap_draws=4, options=FAST, recipe=replace(RECIPES["cpu"], epochs=1),
                     cache_dir=str(tmp_path / "cache"), progress=False)
    results = run_evaluation(cfg)
    assert (tmp_path / "eval" / "results.json").is_file() and (tmp_path / "eval" / "report.html").is_file()
    assert results.heatmaps.image_classes == [0, 7]
    heat = results.heatmaps
    assert heat.kind == "signed" and heat.faithfulness.pairs == 2 and len(heat.faithfulness.map_to_target) == 3
    assert (tmp_path / "eval" / heat.figures["overlays"]).is_file()
    saved = json.loads((tmp_path / "eval" / "parts" / "heatmaps.json").read_text())
    assert saved["image_classes"] == [0, 7] and saved["draws"] == 4
    assert saved["checkpoint_step"] == results.heatmaps.run.checkpoint_step
    blocks = report_blocks(results, tmp_path / "study", results_dir=tmp_path / "eval")  # figures copied there
    images = [b for b in blocks if isinstance(b, Image)]
    assert images and all((tmp_path / "study" / b.path).is_file() for b in images)


def test_eval_ablations_and_psychometric_parts_build_on_the_accuracy_parts_saves(toy_run, tmp_path, monkeypatch):
    from bloodgen.classify.diffusion_eval import EvalConfig, run_evaluation
    from bloodgen.classify.recipe import RECIPES

    path, run_dir = toy_run
    out = tmp_path / "eval"
    cfg = EvalConfig(checkpoint=str(run_dir), out=str(out), data=str(path), parts=("ablations",), n_test=10,
                     no_prune_draws=12, options=FAST, recipe=replace(RECIPES["cpu"], epochs=1),
                     cache_dir=str(tmp_path / "cache"), progress=False)
    with pytest.raises(UserError, match="run --parts accuracy first"):
        run_evaluation(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_evaluation(replace(cfg, parts=("accuracy",)))
    monkeypatch.setattr(dc.NoiseErrors, "residuals", lambda *a: pytest.fail("the replay evaluated the network"))
    results = run_evaluation(cfg)
    with pytest.raises(UserError, match="run --parts accuracy calibration first"):
        run_evaluation(replace(cfg, parts=("psychometric",)))
    ab = results.ablations
    assert ab.n_images == 10 and ab.stored_draws == 12 and ab.draw_counts[-1] == 12
    unpruned = results.accuracy.diffusion_no_prune
    assert ab.weightings[FAST.weighting]["mean"].accuracy == pytest.approx(unpruned.report.accuracy)
    assert {(s.min_draws, s.p_value) for s in ab.pruning} >= {(10, 2e-3)}
    same = next(s for s in ab.pruning if (s.min_draws, s.p_value) == (10, 2e-3))
    assert same.evaluations_per_image <= 2 * 12
    report = (out / "report.md").read_text()
    assert "Pruning replayed" in report and (out / ab.figures["ablations"]).is_file()
    monkeypatch.undo()
    ps = run_evaluation(replace(cfg, parts=("calibration", "psychometric"), n_val=8)).psychometric
    assert ps.n_images == 10
    for fit, guess in ((ps.diffusion, 1 / 2), (ps.resnet18, 1 / 8)):  # the toy model scores 2 classes
        # a toy classifier may give every image the same confidence: then nothing is fitted, and the report says so
        assert fit is None or (len(fit.bins) == 10 and sum(b[2] for b in fit.bins) == 10
                               and fit.guess == pytest.approx(guess))
    assert "Psychometric functions" in (out / "report.md").read_text()


def test_eval_scores_the_shifted_domains_on_the_same_images(toy_run, tmp_path):
    """The corruptions part scores both classifiers on the first --n-corrupt test images in every shifted
    domain (bloodgen.data.domains), beside clean, and the report gets a table of them."""
    from dataclasses import replace

    from bloodgen.classify.diffusion_eval import EvalConfig, report_blocks, run_evaluation
    from bloodgen.classify.recipe import RECIPES
    from bloodgen.report.document import Document, to_markdown

    path, run_dir = toy_run
    cfg = EvalConfig(checkpoint=str(run_dir), out=str(tmp_path / "eval"), data=str(path), parts=("corruptions",),
                     n_corrupt=6, corruptions=(), domains=("stain", "artificial"), options=FAST,
                     recipe=replace(RECIPES["cpu"], epochs=1), cache_dir=str(tmp_path / "cache"), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        part = run_evaluation(cfg).corruptions
    assert part.n_images == 6 and not part.corrupted and list(part.domains) == ["stain", "artificial"]
    for shift in part.domains.values():
        for scores in (shift.diffusion, shift.resnet18):
            assert 0 <= scores.balanced_accuracy <= 1
    text = to_markdown(Document("x", report_blocks(EvalResults(corruptions=part), tmp_path / "eval")))
    assert "| stain |" in text and "| artificial |" in text
    with pytest.raises(UserError, match="unknown domain"):
        EvalConfig(checkpoint="", out="", parts=("corruptions",), domains=("lab2",)).check()


def test_stratified_test_images_hold_k_of_each_class(tiny_data):
    from bloodgen.classify.diffusion_eval import EvalConfig, _test_indices

    labels = tiny_data.labels("test")
    idx = _test_indices(labels, EvalConfig(checkpoint="", out="", test_per_class=2))
    counts = np.bincount(labels[idx], minlength=8)
    assert (counts == np.minimum(2, np.bincount(labels, minlength=8))).all() and (np.diff(idx) > 0).all()
    assert np.array_equal(idx, _test_indices(labels, EvalConfig(checkpoint="", out="", test_per_class=2)))
    assert len(_test_indices(labels, EvalConfig(checkpoint="", out="", n_test=5))) == 5


def _fake_results(folder: Path, accuracy: float, recall0: float, with_calibration: bool) -> Path:
    """A classify-eval results.json with made-up figures where the summary reads none."""
    report = ClassificationScores(accuracy=accuracy, balanced_accuracy=accuracy - 0.1, macro_precision=0.5,
                                  macro_recall=0.5, macro_f1=0.5, auc_ovr=None,
                                  per_class_recall=[recall0] + [0.5] * 7, confusion_matrix=[[0] * 8] * 8)
    diffusion = DiffusionScores(report, n_images=16, evaluations_per_image=100.0, draws_per_image=10.0,
                                seconds_per_image=2.0, options={})
    results = EvalResults(accuracy=AccuracyPart(diffusion, diffusion, ResnetScores(report, seconds_per_image=2.0),
                                                classifier={}, test_indices=[], evaluation_reduction=1.0,
                                                accuracy_loss_points=0.0))
    if with_calibration:
        results = replace(results, calibration=CalibrationPart(temperature=1.0, n_val=1, diffusion=Calibration(0.1, {}),
                                                               resnet18=Calibration(0.2, {}), figures={}))
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results.to_json()))
    return folder


def test_summarise_gives_mean_and_sample_std_of_the_parts_every_folder_holds(tmp_path):
    from bloodgen.classify.diffusion_summary import write_summary

    folders = [_fake_results(tmp_path / "s0", 0.9, 0.8, True), _fake_results(tmp_path / "s1", 0.8, 0.6, True),
               _fake_results(tmp_path / "s2", 0.7, 0.4, False)]
    summary = write_summary(folders, tmp_path / "summary")
    row = summary["rows"]["diffusion, pruned: accuracy %"]
    assert row["mean"] == pytest.approx(80.0) and row["std"] == pytest.approx(10.0)  # ddof = 1
    assert not any("ECE" in label for label in summary["rows"])  # s2 has no calibration part
    assert summary["per_class_recall"]["resnet18"]["mean"][0] == pytest.approx(60.0)
    assert "80.000 ± 10.000" in (tmp_path / "summary" / "report.md").read_text()
    two = write_summary(folders[:2], tmp_path / "summary2")
    assert two["rows"]["diffusion: ECE"]["mean"] == pytest.approx(0.1)


def test_summarise_gives_each_shifted_domain_both_classifiers_spread(tmp_path):
    from bloodgen.classify.diffusion_results import ClassifierPair, CorruptionsPart, ShiftedScore
    from bloodgen.classify.diffusion_summary import write_summary

    folders = []
    for k, (diffusion, resnet) in enumerate(((0.6, 0.5), (0.8, 0.7))):
        folder = _fake_results(tmp_path / f"s{k}", 0.9, 0.8, False)
        results = EvalResults.from_json(json.loads((folder / "results.json").read_text()))
        domains = {"stain": ClassifierPair(ShiftedScore(diffusion, 0.1), ShiftedScore(resnet, 0.2)),
                   "scope": ClassifierPair(ShiftedScore(0.5, 0.0), ShiftedScore(0.5, 0.0))}
        corruptions = CorruptionsPart(n_images=4, clean=ClassifierPair(0.9, 0.9), corrupted={}, skipped={},
                                      mean_drop=ClassifierPair(None, None), severities=[],
                                      domains=domains if k == 0 else {"stain": domains["stain"]})
        (folder / "results.json").write_text(json.dumps(replace(results, corruptions=corruptions).to_json()))
        folders.append(folder)
    rows = write_summary(folders, tmp_path / "summary")["rows"]
    assert rows["diffusion, domain stain: balanced accuracy %"]["mean"] == pytest.approx(70.0)
    assert rows["ResNet-18, domain stain: balanced accuracy %"]["values"] == pytest.approx([50.0, 70.0])
    assert not any("scope" in label for label in rows)  # only one folder scored it


def test_committed_results_read_and_write_back_unchanged():
    """The committed classify-eval results (a folder, and a study's experiment), read into records and written
    again, give the same JSON (keys, nesting, order): old folders resume and re-render as they were."""
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    folder = results / "diffusion_classifier"
    parts = sorted((folder / "parts").glob("*.json"))
    assert parts and {p.stem for p in parts} <= set(PART_RECORDS)
    for path in parts:
        saved = json.loads(path.read_text())
        assert json.dumps(PART_RECORDS[path.stem].from_json(saved).to_json()) == json.dumps(saved), path
    study = json.loads((results / "study-quick-diffusion-classifier" / "results.json").read_text())
    for saved in (json.loads((folder / "results.json").read_text()), study["experiments"]["diffusion-classifier"]):
        assert json.dumps(EvalResults.from_json(saved).to_json()) == json.dumps(saved)


def test_corruptions_applied_or_skipped_with_a_reason(tiny_data):
    pytest.importorskip("medmnistc", reason="medmnistc (the 'robustness' extra) is not installed")
    images = tiny_data.images("test")[:3]
    result = corrupt_all(images, severities=(1, 5))
    done = {name for name, _ in result.images}
    assert done | set(result.skipped) == set(BLOODMNIST_CORRUPTIONS) and not done & set(result.skipped)
    assert all(reason for reason in result.skipped.values())
    for (name, severity), x in result.images.items():
        assert x.shape == images.shape and x.dtype == np.uint8
    assert not np.array_equal(result.images[("brightness_down", 5)], images)


def test_corruptions_report_why_when_medmnistc_is_missing(tiny_data, monkeypatch):
    for name in [m for m in sys.modules if m.startswith("medmnistc")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "medmnistc", None)  # makes `import medmnistc...` raise ImportError
    result = corrupt_all(tiny_data.images("test")[:2], severities=(1,))
    assert not result.images and set(result.skipped) == set(BLOODMNIST_CORRUPTIONS)
    assert all("medmnistc not importable" in r and "robustness" in r for r in result.skipped.values())


def test_psychometric_fit_recovers_a_known_function_and_bins_by_count():
    from bloodgen.classify.psychometric import binned, curve, fit_psychometric

    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.1, 1.0, 2000)
    truth = 1 / 8 + (1 - 1 / 8 - 0.02) * (confidence > 0.55)  # a step at 0.55: threshold 0.55, narrow width
    fit = fit_psychometric(confidence, rng.random(2000) < truth, n_classes=8)
    assert fit.guess == pytest.approx(1 / 8) and fit.threshold_ci95[0] <= fit.threshold <= fit.threshold_ci95[1]
    assert abs(fit.threshold - 0.55) < 0.03 and fit.width < 0.15 and fit.lapse < 0.06
    assert curve(fit, np.array([fit.threshold]))[0] == pytest.approx(fit.guess + (1 - fit.guess - fit.lapse) / 2)
    assert fit_psychometric(np.full(40, 0.9), np.ones(40, dtype=bool), n_classes=8) is None
    rows = binned(np.r_[np.ones(30), np.zeros(20)], np.ones(50, dtype=bool), bins=25)
    assert len(rows) == 25 and (rows[:, 2] == 2).all() and rows[:, 1].sum() == 50  # ties split by order


def test_the_anomaly_auc_interval_is_tight_when_separated_and_spans_chance_when_not():
    from bloodgen.classify.diffusion_eval import auc_interval

    rng = np.random.default_rng(0)
    positive = np.r_[np.ones(100, dtype=bool), np.zeros(200, dtype=bool)]
    separated = auc_interval(positive, np.r_[rng.normal(3, 1, 100), rng.normal(0, 1, 200)])
    chance = auc_interval(positive, rng.normal(0, 1, 300))
    assert 0.95 < separated[0] < separated[1] <= 1.0
    assert chance[0] < 0.5 < chance[1] and chance[1] - chance[0] < 0.2
