"""The translation families (cyclegan, aggan): networks, losses, the history pool, bit-for-bit resume, the
extras' grids and `bloodgen translate`."""

from __future__ import annotations

import json
import signal
import warnings

import numpy as np
import pytest
import torch
from conftest import write_tiny_npz
from model_helpers import resume_tiny, train_tiny

from bloodgen.cli import main
from bloodgen.errors import UserError
from bloodgen.models.translation import DiscriminatorPair, Translation, Translator
from bloodgen.provenance import state_digest
from bloodgen.training import checkpoint as ck
from bloodgen.training.loop import lr_factor

TRANSLATORS = ("cyclegan", "aggan")


@pytest.fixture(scope="module")
def source_npz(tmp_path_factory):
    """A second tiny domain: the tiny cells with inverted colours."""
    path = write_tiny_npz(tmp_path_factory.mktemp("source") / "raw.npz", seed=3)
    with np.load(path) as f:
        arrays = {k: (255 - v if k.endswith("_images") else v) for k, v in f.items()}
    out = path.with_name("inverted.npz")
    np.savez_compressed(out, **arrays)
    return out


def _train(model, tiny_npz, source_npz, out, **overrides):
    return train_tiny(model, tiny_npz, out, overrides={"source_domain": str(source_npz), **overrides})


def test_attention_masks_sum_to_one_and_a_background_mask_passes_the_input_through():
    torch.manual_seed(0)
    g = Translator(ngf=4, blocks=1, attention_masks=3)
    x = torch.rand(2, 3, 28, 28) * 2 - 1
    with torch.no_grad():
        out, masks = g(x, with_masks=True)
    assert masks.shape == (2, 3, 28, 28) and torch.allclose(masks.sum(1), torch.ones(2, 28, 28), atol=1e-5)
    assert out.shape == x.shape and float(out.abs().max()) <= 1
    last = g.attention[-1]
    with torch.no_grad():  # all attention on the background channel: G(x) = x
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-50.0, -50.0, 50.0]))
        assert torch.allclose(g(x), x, atol=1e-5)
        assert Translator(ngf=4, blocks=1)(x, with_masks=True)[1] is None  # CycleGAN: no masks


def test_the_history_pool_fills_then_swaps_half_of_the_fakes_and_repeats_its_choices():
    pool = DiscriminatorPair(ndf=4, layers=2, pool_size=6)
    first = torch.arange(4.0)[:, None, None, None].expand(4, 3, 28, 28).clone()
    assert torch.equal(pool.from_history(first, 0, step=0), first)  # filling: every fake passes
    assert int(pool.pool_filled[0]) == 4 and int(pool.pool_filled[1]) == 0
    twin = DiscriminatorPair(ndf=4, layers=2, pool_size=6)
    twin.load_state_dict(pool.state_dict())
    swapped = []
    for step in range(1, 40):
        new = torch.full((4, 3, 28, 28), 100.0 + step)
        out, again = pool.from_history(new, 0, step), twin.from_history(new.clone(), 0, step)
        assert torch.equal(out, again)  # choices depend on (step, pool) only: every DDP process agrees
        swapped += [float(v) != 100.0 + step for v in out[:, 0, 0, 0]]
    assert int(pool.pool_filled[0]) == 6
    assert 0.3 < np.mean(swapped[4:]) < 0.7  # once full, about half the fakes come from the history


@pytest.mark.parametrize("model", TRANSLATORS)
def test_a_translation_run_trains_writes_its_grids_and_samples_from_the_source(model, tiny_npz, source_npz,
                                                                                 tmp_path):
    from bloodgen.sampling.api import load_model, sample

    run = _train(model, tiny_npz, source_npz, tmp_path)
    assert run.status == "completed"
    rows = [json.loads(line) for line in (run.run_dir / "log.jsonl").read_text().splitlines()]
    assert {"loss_g", "loss_d", "cycle", "identity", "adversarial"} <= set(rows[-1])
    assert all(np.isfinite(v) for r in rows for k, v in r.items() if k.startswith("loss"))
    grids = {"cycle-a.png", "cycle-b.png"} | ({"cycle-a-masks.png", "cycle-b-masks.png"} if model == "aggan" else set())
    assert {p.name for p in (run.run_dir / "extras").iterdir()} == grids
    loaded = load_model(run.run_dir)
    images, labels = sample(loaded, 6, seed=0)
    again, _ = sample(loaded, 6, seed=0)
    assert images.shape == (6, 28, 28, 3) and labels is None and np.array_equal(images, again)


def test_a_translation_run_resumes_bit_for_bit_after_ctrl_c(tiny_npz, source_npz, tmp_path, monkeypatch):
    full = _train("aggan", tiny_npz, source_npz, tmp_path / "full", steps=8, pool_size=20)
    original = Translation.train_step

    def ctrl_c_at_step_3(self, networks, x, y, ctx):
        if ctx.step == 2:
            signal.raise_signal(signal.SIGINT)
        return original(self, networks, x, y, ctx)

    monkeypatch.setattr(Translation, "train_step", ctrl_c_at_step_3)
    stopped = _train("aggan", tiny_npz, source_npz, tmp_path / "parts", steps=8, pool_size=20)
    monkeypatch.setattr(Translation, "train_step", original)
    assert stopped.status == "interrupted" and stopped.step == 3
    resumed = resume_tiny(stopped.run_dir, tiny_npz)

    def state(path):  # the discriminators' history pool is part of it
        c = ck.load_checkpoint(path)
        return {k: getattr(c, k) for k in ("step", "networks", "ema", "optimizers", "rng")}

    assert state_digest(state(full.checkpoint)) == state_digest(state(resumed.checkpoint))
    assert int(ck.load_checkpoint(full.checkpoint).networks["discriminators"]["pool_filled"][0]) > 0


def test_a_translation_family_without_its_source_domain_says_how_to_set_it(tiny_npz, tmp_path):
    with pytest.raises(UserError, match="--set source_domain=FILE"):
        train_tiny("cyclegan", tiny_npz, tmp_path)
    with pytest.raises(UserError, match="source_domain file .*missing.npz not found"):
        train_tiny("cyclegan", tiny_npz, tmp_path / "b", overrides={"source_domain": str(tmp_path / "missing.npz")})
    with pytest.raises(UserError, match="attention_masks"):
        train_tiny("aggan", tiny_npz, tmp_path / "c", overrides={"attention_masks": 1})


def test_translate_writes_every_split_in_the_data_format_and_refuses_a_generator(tiny_npz, source_npz, tmp_path,
                                                                                  capsys):
    from bloodgen.data import SPLITS, load_bloodmnist

    run = _train("cyclegan", tiny_npz, source_npz, tmp_path / "run")
    out = tmp_path / "translated.npz"
    assert main(["translate", str(run.run_dir), str(source_npz), "--out", str(out)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source, translated = load_bloodmnist(source_npz), load_bloodmnist(out)
    for split in SPLITS:
        assert np.array_equal(translated.labels(split), source.labels(split))
        assert translated.images(split).shape == source.images(split).shape
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["translation"] == "to_a" and record["input"]["sha256"] == source.sha256
    back = tmp_path / "back.npz"
    assert main(["translate", str(run.run_dir), str(source_npz), "--direction", "to_b", "--out", str(back)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not np.array_equal(load_bloodmnist(back).images("test"), translated.images("test"))
    gan = train_tiny("gan", tiny_npz, tmp_path / "gan")
    assert main(["translate", str(gan.run_dir), str(source_npz), "--out", str(tmp_path / "g.npz")]) == 2
    assert "generates rather than translates" in capsys.readouterr().err


def test_the_linear_tail_schedule_holds_then_falls_to_zero():
    assert [lr_factor(s, 0, 100, "linear-tail") for s in (0, 49, 50, 75, 100)] == [1.0, 1.0, 1.0, 0.5, 0.0]


def test_paired_fidelity_is_perfect_for_the_originals_and_drops_for_a_shift(tiny_data):
    from bloodgen.classify.translation_eval import paired_fidelity
    from bloodgen.data.domains import stain

    x = tiny_data.images("test")
    same = paired_fidelity(x, x)
    assert same == {"ssim": 1.0, "psnr_db": 100.0}
    shifted = paired_fidelity(stain(x), x)
    assert shifted["ssim"] < 0.99 and shifted["psnr_db"] < 40


def test_translate_eval_adds_each_translator_as_a_column_with_its_image_figures(tiny_npz, tmp_path, monkeypatch,
                                                                                capsys):
    from dataclasses import replace

    from bloodgen.classify.recipe import RECIPES

    folder = tmp_path / "domains"
    assert main(["domains", "make", "--data", str(tiny_npz), "--out", str(folder), "--domains", "stain", "scope"]) == 0
    run = _train("aggan", folder / "A.npz", folder / "stain.npz", tmp_path / "runs")
    monkeypatch.setitem(RECIPES, "cpu", replace(RECIPES["cpu"], epochs=1, width=8, batch_size=16))
    out = tmp_path / "eval"
    assert main(["translate-eval", "--folder", str(folder), "--domains", "stain", "scope", "--translators",
                 f"stain={run.run_dir}", "--classifier-recipe", "cpu", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(out)]) == 0
    study = json.loads((out / "translate_eval.json").read_text())
    assert study["translators"] == ["aggan"]
    assert set(study["results"]["stain"]) == {"before", "reinhard", "histogram", "aggan", "oracle"}
    assert "aggan" not in study["results"]["scope"]  # no translator given for scope
    assert 0 <= study["results"]["stain"]["aggan"]["class_flips"]["mean"] <= 1
    paired = study["images"]["paired"]
    assert set(paired["stain"]) == {"before", "reinhard", "histogram", "aggan"} and "fid" not in paired["stain"]["aggan"]
    assert -1 <= paired["stain"]["aggan"]["ssim"] <= 1 and set(study["images"]["reverse"]) == {"stain"}
    report = (out / "translate_eval.md").read_text()
    assert "S_A aggan" in report and "| scope |" in report and "A -> B" in report
    assert main(["translate-eval", "--folder", str(folder), "--domains", "stain", "--translators",
                 f"stain={run.run_dir}", f"stain={run.run_dir}", "--out", str(out)]) == 2
    assert "two aggan runs" in capsys.readouterr().err
    assert main(["translate-eval", "--folder", str(folder), "--domains", "scope", "--translators",
                 f"scope={run.run_dir}", "--out", str(out)]) == 2
    assert "not from" in capsys.readouterr().err  # trained from stain, given for scope
    second = train_tiny("aggan", folder / "A.npz", tmp_path / "runs", seed=1,
                        overrides={"source_domain": str(folder / "stain.npz")})
    assert main(["translate-eval", "--folder", str(folder), "--domains", "stain", "--translators",
                 f"stain={run.run_dir}", f"stain={second.run_dir}", "--classifier-recipe", "cpu", "--cache-dir",
                 str(tmp_path / "cache"), "--out", str(out)]) == 0
    study = json.loads((out / "translate_eval.json").read_text())
    assert {"aggan-s0", "aggan-s1"} <= set(study["results"]["stain"]) and "aggan" not in study["results"]["stain"]
    spread = study["translator_seeds"]["stain"]["aggan"]
    f1 = [study["results"]["stain"][k]["macro_f1"]["mean"] for k in ("aggan-s0", "aggan-s1")]
    assert spread["runs"] == ["aggan-s0", "aggan-s1"] and spread["macro_f1"]["mean"] == pytest.approx(np.mean(f1))
    assert "Translators over their training seeds" in (out / "translate_eval.md").read_text()
