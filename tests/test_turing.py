"""Real or generated? The classifier two-sample test and the HTML quiz with its scoring."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from bloodgen.classify.quiz import KEY_FILE, QUIZ_FILE, score_answers
from bloodgen.classify.recipe import RECIPES
from bloodgen.classify.two_sample import balanced_draw, classifier_two_sample_test
from bloodgen.cli import main

TINY_RECIPE = replace(RECIPES["cpu"], epochs=12, width=16, batch_size=16)


def test_balanced_draw_takes_the_classes_in_turn(tiny_data):
    images, labels = tiny_data.split("train")
    _, drawn = balanced_draw(images, labels, 16, np.random.default_rng(0), 8)
    assert np.bincount(drawn, minlength=8).tolist() == [2] * 8
    _, none = balanced_draw(images, None, 5, np.random.default_rng(0), 8)
    assert none is None


def test_the_two_sample_test_tells_a_shifted_set_apart_and_not_the_same_cells(tiny_data):
    real = tiny_data.images("all")  # 144 images: 72 a side
    inverted = classifier_two_sample_test(255 - real[:72], real[72:], TINY_RECIPE, progress=False)
    assert inverted.accuracy >= 0.8 and inverted.ci95[0] > 0.5 and inverted.p_value < 0.05
    assert inverted.n_per_side == 72 and inverted.n_test == 30  # 15 a side
    same = classifier_two_sample_test(real[:72], real[72:], TINY_RECIPE, progress=False)
    assert same.accuracy < inverted.accuracy


def test_a_quiz_is_self_contained_its_key_apart_and_answers_score_against_it(tiny_npz, tiny_data, tmp_path, capsys):
    samples = tmp_path / "samples.npz"
    images, labels = tiny_data.split("train")
    np.savez(samples, images=255 - images, labels=labels.astype(np.int64))
    out = tmp_path / "quiz"
    assert main(["turing", "make", str(samples), "--n", "8", "--data", str(tiny_npz), "--out", str(out)]) == 0
    page = (out / QUIZ_FILE).read_text()
    assert page.count('class="item"') == 16 and page.count("data:image/png;base64,") == 16
    # Nothing but the item number and the image tells the cells apart: the key is not in the page.
    assert re.findall(r'<div class="item"[^>]*>', page) == [f'<div class="item" data-item="{i}">' for i in range(16)]
    key = json.loads((out / KEY_FILE).read_text())
    assert sum(item["generated"] for item in key["items"]) == 8 and len(key["items"]) == 16
    perfect = {"rater": "a", "answers": [{"item": i["item"], "call": "generated" if i["generated"] else "real",
                                          "class": i["class"]} for i in key["items"]]}
    coin = {"rater": "b", "answers": [{"item": i["item"], "call": "real", "class": None} for i in key["items"][:10]]}
    best = score_answers(key, perfect)
    assert best["accuracy"]["rate"] == 1.0 and best["sensitivity"]["rate"] == 1.0 and best["class_agreement"]["rate"] == 1.0
    lazy = score_answers(key, coin)
    assert lazy["answered"] == 10 and lazy["unanswered"] == 6 and lazy["sensitivity"]["rate"] == 0.0
    files = []
    for answers in (perfect, coin):
        files.append(tmp_path / f"{answers['rater']}.json")
        files[-1].write_text(json.dumps(answers))
    report = tmp_path / "scores.json"
    assert main(["turing", "score", str(out / KEY_FILE), *map(str, files), "--json", str(report)]) == 0
    scores = json.loads(report.read_text())
    assert scores["pooled"]["answered"] == 26 and scores["pooled"]["unanswered"] == 6
    assert "a: 16 answered, accuracy 1.000" in capsys.readouterr().out
    assert main(["turing", "score", str(files[0]), str(files[1])]) == 2  # answers given as the key
    assert main(["turing", "score", str(tmp_path / "none.json"), str(files[1])]) == 2


def test_c2st_command_writes_its_figures(tiny_npz, tiny_data, tmp_path, monkeypatch):
    samples = tmp_path / "samples.npz"
    images, labels = tiny_data.split("train")
    np.savez(samples, images=255 - images, labels=labels.astype(np.int64))
    monkeypatch.setitem(RECIPES, "cpu", TINY_RECIPE)
    out = tmp_path / "c2st.json"
    assert main(["turing", "c2st", str(samples), "--n", "40", "--classifier-recipe", "cpu", "--data", str(tiny_npz),
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_per_side"] == 40 and 0.5 <= result["accuracy"] <= 1 and len(result["ci95"]) == 2
    assert main(["turing", "c2st", str(samples), "--n", "5", "--data", str(tiny_npz), "--out", str(out)]) == 2


def test_answers_for_unknown_items_count_as_unanswered_and_a_file_without_answers_is_refused():
    from bloodgen.errors import UserError

    key = {"items": [{"item": 0, "generated": True, "class": 1}, {"item": 1, "generated": False, "class": 2}]}
    scored = score_answers(key, {"answers": [{"item": 99, "call": "real"}]})
    assert scored["answered"] == 0 and scored["unanswered"] == 2 and scored["accuracy"]["rate"] is None
    with pytest.raises(UserError, match="an answers file must hold"):
        score_answers(key, {})


def test_each_side_is_cut_alike_so_the_held_out_set_is_half_generated():
    from bloodgen.classify.two_sample import _splits

    train, val, test = _splits(50, np.random.default_rng(0))
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    for part, size in ((train, 30), (val, 10), (test, 10)):
        assert (part < 50).sum() == size and (part >= 50).sum() == size


def test_a_rater_answering_twice_counts_once_and_a_bad_file_is_refused(tmp_path, capsys):
    from bloodgen.classify.quiz import pooled_scores

    key = {"items": [{"item": 0, "generated": True, "class": 1}, {"item": 1, "generated": False, "class": None}]}
    twice = {"rater": "c", "answers": [{"item": 0, "call": "real"}, {"item": 0, "call": "generated", "class": "x"}]}
    scored = score_answers(key, twice)
    assert scored["answered"] == 1 and scored["accuracy"]["rate"] == 1.0 and scored["class_agreement"]["n"] == 0
    pooled = pooled_scores(key, [twice, twice])
    assert pooled["answered"] == 2 and pooled["unanswered"] == 2 and "descriptive" in pooled["note"]
    (tmp_path / "key.json").write_text(json.dumps(key))
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    assert main(["turing", "score", str(tmp_path / "key.json"), str(tmp_path / "list.json")]) == 2
    assert "an answers file must hold" in capsys.readouterr().err


def test_an_unconditional_models_quiz_draws_real_cells_at_random(tiny_npz, tiny_data, tmp_path):
    samples = tmp_path / "unlabelled.npz"
    np.savez(samples, images=255 - tiny_data.images("train"))
    assert main(["turing", "make", str(samples), "--n", "8", "--data", str(tiny_npz), "--out", str(tmp_path / "q")]) == 0
    key = json.loads((tmp_path / "q" / KEY_FILE).read_text())
    assert all(item["class"] is None for item in key["items"])
