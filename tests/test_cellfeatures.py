"""Autoencoder cell features (AE-CFE): the network's shape, the domain losses, resumable training, the
forest probe and the `bloodgen features` commands, on the tiny file with pixel inputs (no Inception)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from bloodgen.cellfeatures.alignment import DomainDiscriminator, alignment_loss, moment_distance, normal_distance
from bloodgen.cellfeatures.autoencoder import CellAutoencoder, widths
from bloodgen.cellfeatures.experiment import InputSpec, domain_inputs, load_domain
from bloodgen.cellfeatures.inputs import cell_view, load_inputs
from bloodgen.cellfeatures.options import AEOptions
from bloodgen.cellfeatures.probe import forest_probe
from bloodgen.cellfeatures.train import CHECKPOINT_FILE, LOG_FILE, WEIGHTS_FILE, embed, train_autoencoder
from bloodgen.cli import main

PIXELS = InputSpec("pixels", "whole")
FAST = AEOptions(bottleneck=8, steps=12, batch_size=16, save_every=4, log_every=4)


@pytest.fixture(scope="module")
def domains(tiny_npz, tmp_path_factory):
    from bloodgen.data.domains import make_domains

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_domains(load_domain(str(tiny_npz)), tmp_path_factory.mktemp("domains"), ["stain"], seed=0)


def test_the_encoder_is_six_linear_layers_with_group_norm_down_to_the_bottleneck():
    model = CellAutoencoder(2048, 50)
    linear = [m for m in model.encoder if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 6 and linear[0].in_features == 2048 and linear[-1].out_features == 50
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in model.encoder) == 5
    assert widths(2048, 50) == sorted(widths(2048, 50), reverse=True)
    z, rebuilt, image = model(torch.randn(4, 2048))
    assert z.shape == (4, 50) and rebuilt.shape == (4, 2048) and image.shape == (4, 3, 28, 28)
    assert 0 <= image.min() and image.max() <= 1


def test_domain_losses_are_zero_for_one_domain_and_grow_with_the_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 6, generator=g)
    assert moment_distance(a, a).item() == 0
    assert moment_distance(a, a + 0.5).item() > moment_distance(a, a + 0.1).item() > 0.01
    assert normal_distance(a).item() < 0.05 < normal_distance(a * 2).item()
    assert alignment_loss("none", a, a + 1).item() == 0
    assert abs(moment_distance(a * 1e-3, (a + 0.5) * 1e-3).item() - moment_distance(a, a + 0.5).item()) < 1e-3


def test_the_adversarial_loss_reaches_the_encoder_reversed():
    torch.manual_seed(0)
    disc = DomainDiscriminator(3)
    source, target = torch.randn(8, 3, requires_grad=True), torch.randn(8, 3)
    disc(source, target).backward()
    reversed_grad = source.grad.clone()
    source.grad = None
    torch.nn.functional.binary_cross_entropy_with_logits(disc.net(source).squeeze(1), torch.ones(8),
                                                         reduction="sum").div(16).backward()
    assert torch.allclose(reversed_grad, -source.grad, atol=1e-6)


def test_cell_view_keeps_the_cell_and_blacks_out_the_rest(tiny_data):
    images = tiny_data.images("test")[:6]
    cells = cell_view(images)
    kept = (cells == images).all(-1)
    assert ((cells == 0).all(-1) | kept).all() and kept.any() and (~kept).any()


def test_pixel_inputs_match_the_split(tiny_data):
    inputs = load_inputs(tiny_data, "val", "pixels", "whole")
    assert inputs.features.shape == (24, 28 * 28 * 3) and inputs.features.max() <= 1.0
    assert (inputs.labels == tiny_data.labels("val")).all()


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_data, tmp_path, monkeypatch):
    import bloodgen.cellfeatures.train as train

    source = load_inputs(tiny_data, "train", "pixels", "whole")
    whole = train_autoencoder(source, [], FAST, tmp_path / "whole", progress=False)
    real_step, calls = train._step, []

    def cut(*args):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(train, "_step", cut)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(source, [], FAST, tmp_path / "cut", progress=False)
    assert (tmp_path / "cut" / CHECKPOINT_FILE).is_file() and not (tmp_path / "cut" / WEIGHTS_FILE).exists()
    monkeypatch.setattr(train, "_step", real_step)
    resumed = train_autoencoder(source, [], FAST, tmp_path / "cut", progress=False)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / LOG_FILE).read_text().splitlines()]
    assert steps == [4, 8, 12]


def test_mmd_alignment_brings_the_domains_bottlenecks_together(domains, tmp_path):
    a, stain = load_domain(str(domains["A"])), load_domain(str(domains["stain"]))
    gaps = {}
    for kind in ("none", "mmd"):  # 32 cells a domain and step: a smaller batch's covariance says little
        options = AEOptions(bottleneck=8, steps=40, batch_size=64, alignment=kind, beta=10.0, image_loss="mse",
                            save_every=40, log_every=40)
        targets = [domain_inputs(stain, PIXELS, "train")] if kind != "none" else []
        model = train_autoencoder(domain_inputs(a, PIXELS, "train"), targets, options, tmp_path / kind, progress=False)
        za, zs = (torch.from_numpy(embed(model, domain_inputs(d, PIXELS, "test"))) for d in (a, stain))
        gaps[kind] = moment_distance(za, zs).item()
    assert gaps["mmd"] < 0.5 * gaps["none"], gaps


def test_the_forest_probe_beats_chance_on_the_tiny_file(tiny_data):
    train, test = (load_inputs(tiny_data, s, "pixels", "whole") for s in ("train", "test"))
    scores = forest_probe((train.features, train.labels), {"test": (test.features, test.labels)}, seeds=2, trees=50)
    assert scores["test"].balanced_accuracy.mean > 0.25 and len(scores["test"].accuracy.per_seed) == 2


def test_features_commands_train_probe_and_refuse_bad_input(domains, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["features", "train", "--data", str(domains["A"]), "--target", str(domains["stain"]), "--input", "pixels",
            "--alignment", "normal", "--bottleneck", "8", "--steps", "6", "--batch-size", "16", "--out", str(run),
            "--quiet"]
    assert main(args) == 0 and (run / WEIGHTS_FILE).is_file()
    options = json.loads((run / "options.json").read_text())
    assert options["inputs"]["input"] == "pixels" and options["inputs"]["targets"][0]["sha256"]
    out = tmp_path / "probe.json"
    assert main(["features", "probe", "--run", str(run), "--data", str(domains["A"]), "--test", str(domains["stain"]),
                 "--seeds", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["tests"]) == {"source", "stain"} and result["features"] == "bottleneck"
    assert "| stain |" in capsys.readouterr().out
    assert main(["features", "train", "--data", str(domains["A"]), "--input", "pixels", "--alignment", "mmd",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "needs a target domain" in capsys.readouterr().err
    assert main(["features", "probe", "--run", str(tmp_path / "nothing"), "--data", str(domains["A"])]) == 2
    assert main(args[:-3] + ["--bottleneck", "9", "--out", str(run), "--quiet"]) == 2  # other options, same folder


def test_the_study_scores_every_domain_per_method_and_resumes(domains, tmp_path, monkeypatch, capsys):
    import bloodgen.cellfeatures.study as study

    args = ["features", "study", "--domains", str(domains["A"].parent), "--out", str(tmp_path / "s"), "--input",
            "pixels", "--methods", "raw", "mmd", "--steps", "4", "--batch-size", "16", "--seeds", "2", "--quiet"]
    assert main(args) == 0
    mmd = json.loads((tmp_path / "s" / "pixels-mmd.json").read_text())
    assert set(mmd) == {"plan", "trained on A", "trained on stain", "protocol"}
    assert set(mmd["trained on stain"]) == {"A", "stain"} and mmd["plan"]["autoencoder"]["alignment"] == "mmd"
    report = (tmp_path / "s" / "README.md").read_text()
    assert "| pixels-raw |" in report and "| pixels-mmd |" in report and "### pixels-mmd" in report
    monkeypatch.setattr(study, "forest_probe", lambda *a, **k: pytest.fail("a finished unit ran again"))
    assert main(args) == 0
    assert main(["features", "study", "--domains", str(tmp_path), "--out", str(tmp_path / "t")]) == 2
    assert "bloodgen domains make" in capsys.readouterr().err
    assert main(args[:-2] + ["3", "--quiet"]) == 2  # other forest seeds in the same folder
    assert "begun with other options" in capsys.readouterr().err


def test_the_resnet_oracle_is_trained_in_each_domain_and_scored_in_all(domains, tmp_path, monkeypatch):
    from dataclasses import replace

    from sklearn.metrics import accuracy_score

    import bloodgen.classify.reference as reference
    from bloodgen.cellfeatures import study
    from bloodgen.classify.recipe import ClassifierRecipe

    recipe, cache = ClassifierRecipe(epochs=1, batch_size=32, width=8), str(tmp_path / "cache")
    plan = study.FeatureStudy(study.domain_files(domains["A"].parent), tmp_path / "s",
                              InputSpec("pixels", "whole", cache_dir=cache), methods=("resnet18",), recipe=recipe,
                              classifier_seeds=2)
    report = study.run_study(plan, progress=False).read_text()
    unit = json.loads((tmp_path / "s" / "resnet18.json").read_text())
    assert set(unit) == {"plan", "trained on A", "trained on stain", "protocol"} and unit["plan"]["seeds"] == 2
    assert "### resnet18" in report and "| resnet18 |" in report
    # The unit's figures are the cached oracles' own predictions: the seed-1 network of stain, scored on A.
    monkeypatch.setattr(reference, "train_classifier", lambda *a, **k: pytest.fail("a cached oracle was retrained"))
    stain, a = load_domain(str(domains["stain"])), load_domain(str(domains["A"]))
    model, _ = reference.reference_classifier(stain, replace(recipe, seed=1), cache_dir=cache)
    predicted = reference.predict_proba(model, a.images("test")).argmax(1)
    per_seed = unit["trained on stain"]["A"]["accuracy"]["per_seed"]
    assert len(per_seed) == 2 and per_seed[1] == accuracy_score(a.labels("test"), predicted)


def test_the_bottleneck_sweep_fills_table_3_1_with_grids_and_resumes(tiny_npz, tmp_path, monkeypatch, capsys):
    import bloodgen.cellfeatures.sweep as sweep

    args = ["features", "sweep", "--data", str(tiny_npz), "--out", str(tmp_path / "s"), "--input", "pixels",
            "--bottlenecks", "4", "16", "--image-losses", "mse", "ssim", "--views", "whole", "--steps", "4",
            "--batch-size", "16", "--seeds", "2", "--quiet"]
    assert main(args) == 0
    units = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "s").glob("*-b*.json")}
    assert set(units) == {"whole-mse-b4", "whole-mse-b16", "whole-ssim-b4", "whole-ssim-b16"}
    for name, unit in units.items():
        assert len(unit["probe"]["accuracy"]["per_seed"]) == 2 and 0 <= unit["probe"]["accuracy"]["mean"] <= 1
        assert (tmp_path / "s" / unit["reconstructions"]).is_file()
        assert unit["plan"]["options"]["bottleneck"] == int(name.rsplit("-b", 1)[1])
    report = (tmp_path / "s" / "README.md").read_text()
    assert "| b | whole, mse | whole, ssim |" in report and "| 16 |" in report and "Unfinished" not in report
    monkeypatch.setattr(sweep, "forest_probe", lambda *a, **k: pytest.fail("a finished unit ran again"))
    assert main(args) == 0
    assert main(args[:6] + ["--bottlenecks", "0", "--quiet"]) == 2
    assert "--bottlenecks must be at least 1" in capsys.readouterr().err
    assert main(args[:-2] + ["3", "--quiet"]) == 2  # other forest seeds in the same folder
    assert "begun with other options" in capsys.readouterr().err
