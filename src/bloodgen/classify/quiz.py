"""Can a person tell generated cells from real ones? A self-contained HTML quiz in place of the CytoDiffusion
paper's expert Turing test, and the scoring of its answers.

`make_quiz` writes OUT/index.html (every image embedded, nothing to install or serve: a rater opens it in a
browser, calls each cell real or generated, may name its type, and downloads the answers as JSON) and
OUT/answer_key.json apart (which items are generated and their classes), so the key can stay with the
organiser. `score_answers` reads the key and any number of raters' answer files: accuracy with its exact
95 % interval and the binomial p-value against chance, sensitivity (generated called generated),
specificity (real called real), and how often a named cell type matches the label.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import binomtest

from bloodgen.classify.two_sample import balanced_draw
from bloodgen.data import CLASS_NAMES, N_CLASSES
from bloodgen.errors import UserError
from bloodgen.provenance import write_json, write_text

QUIZ_FILE, KEY_FILE = "index.html", "answer_key.json"
CALLS = ("real", "generated")
SCALE = 6  # 28-pixel cells shown at 168 pixels, nearest-neighbour: no smoothing that would hide artefacts


def _png(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).resize((28 * SCALE, 28 * SCALE), Image.NEAREST).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def make_quiz(generated: tuple[np.ndarray, np.ndarray | None], real: tuple[np.ndarray, np.ndarray | None], n: int,
              out: Path, seed: int = 0, source: dict | None = None) -> Path:
    """n generated and n real cells (class-balanced where labelled: give the real labels only with labelled
    samples, so the class mix gives nothing away), shuffled into OUT/index.html, with OUT/answer_key.json."""
    rng = np.random.default_rng(seed)
    g_images, g_labels = balanced_draw(*generated, n, rng, N_CLASSES)
    r_images, r_labels = balanced_draw(*real, n, rng, N_CLASSES)
    if min(len(g_images), len(r_images)) < n:
        raise UserError(f"the quiz needs {n} images per side, got {len(g_images)} generated and {len(r_images)} real")
    images = np.concatenate([g_images, r_images])
    is_generated = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    labels = [None if k is None else int(k) for side in (g_labels, r_labels)
              for k in (side if side is not None else [None] * n)]
    order = rng.permutation(2 * n)
    out.mkdir(parents=True, exist_ok=True)
    key = [{"item": i, "generated": bool(is_generated[j]), "class": labels[j]} for i, j in enumerate(order)]
    write_json(out / KEY_FILE, {"items": key, "seed": seed, "n_per_side": n, "source": source or {}})
    cells = "\n".join(_item_html(i, _png(images[j])) for i, j in enumerate(order))
    return write_text(out / QUIZ_FILE, PAGE.replace("{cells}", cells).replace("{n}", str(2 * n)))


def _item_html(i: int, png: str) -> str:
    options = "".join(f'<option value="{k}">{html.escape(name)}</option>' for k, name in enumerate(CLASS_NAMES))
    calls = "".join(f'<label><input type="radio" name="c{i}" value="{c}"> {c}</label> ' for c in CALLS)
    return (f'<div class="item" data-item="{i}"><div>#{i + 1}</div><img src="data:image/png;base64,{png}" '
            f'alt="cell {i + 1}"><div>{calls}</div><select><option value="">type (optional)</option>{options}'
            f'</select></div>')


def _rate(hits: int, total: int) -> dict:
    if not total:
        return {"n": 0, "rate": None, "ci95": None}
    interval = binomtest(hits, total, 0.5).proportion_ci(0.95, method="exact")
    return {"n": total, "rate": hits / total, "ci95": [float(interval.low), float(interval.high)]}


def _answers(record: dict) -> list[dict]:
    """A rater's answers, the last one per item, each {"item": int, "call": str, "class": int | None}."""
    answers = record.get("answers") if isinstance(record, dict) else None
    if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
        raise UserError("an answers file must hold {\"rater\": NAME, \"answers\": [{\"item\": I, \"call\": "
                        "\"real\" | \"generated\", \"class\": K | null}, ...]}, as the quiz page saves it")
    last = {}
    for a in answers:
        if isinstance(a.get("item"), int) and a.get("call") in CALLS:
            named = a.get("class")
            last[a["item"]] = {**a, "class": named if isinstance(named, int) else None}
    return list(last.values())


def score_answers(key: dict, answers: dict) -> dict:
    """One rater's figures against the key (unanswered items are left out and counted)."""
    truth = {item["item"]: item for item in key["items"]}
    given = [a for a in _answers(answers) if a["item"] in truth]
    return {"rater": str(answers.get("rater") or "unnamed"), "answered": len(given),
            "unanswered": len(truth) - len(given), **_figures(truth, given)}


def pooled_scores(key: dict, records: list[dict]) -> dict:
    """Every rater's answers together, counted as independent trials: descriptive (raters who saw the same
    cells are not independent, so the interval is too narrow)."""
    truth = {item["item"]: item for item in key["items"]}
    given = [a for record in records for a in _answers(record) if a["item"] in truth]
    return {"rater": "all raters", "answered": len(given), "unanswered": len(records) * len(truth) - len(given),
            **_figures(truth, given), "note": "answers of all raters counted as independent: descriptive"}


def _figures(truth: dict, given: list[dict]) -> dict:
    calls = [(truth[a["item"]]["generated"], a["call"] == "generated") for a in given]
    correct = sum(t == c for t, c in calls)
    typed = [a for a in given if a["class"] is not None and truth[a["item"]]["class"] is not None]
    accuracy = _rate(correct, len(calls))
    accuracy["p_value"] = float(binomtest(correct, len(calls), 0.5).pvalue) if calls else None
    return {"accuracy": accuracy,
            "sensitivity": _rate(sum(c for t, c in calls if t), sum(t for t, _ in calls)),
            "specificity": _rate(sum(not c for t, c in calls if not t), sum(not t for t, _ in calls)),
            "class_agreement": _rate(sum(a["class"] == truth[a["item"]]["class"] for a in typed), len(typed))}


def read_json(path: str | Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{what} {path} is not valid JSON ({err})") from None


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Real or generated? {n} blood cells</title>
<style>
body { font-family: sans-serif; margin: 2em; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; }
.item { border: 1px solid #ccc; padding: 6px; width: 180px; font-size: 13px; }
.item img { image-rendering: pixelated; width: 168px; height: 168px; }
</style></head><body>
<h1>Real or generated?</h1>
<p>Each of these {n} blood cells (BloodMNIST, 28 x 28 pixels, shown enlarged) is either a real microscopy image
or one made by a generative model; about half are each. Call every cell <b>real</b> or <b>generated</b>, and
name its type if you can. Then enter your name and save your answers: the file goes to whoever sent you the
quiz (the answer key is not in this page).</p>
<div class="grid">
{cells}
</div>
<p>Your name: <input id="rater"> <button id="save">Save my answers</button> <span id="count"></span></p>
<script>
function answers() {
  return Array.from(document.querySelectorAll('.item')).map(function (el) {
    var call = el.querySelector('input[type=radio]:checked');
    var type = el.querySelector('select').value;
    return {item: Number(el.dataset.item), call: call ? call.value : null, "class": type === '' ? null : Number(type)};
  });
}
document.getElementById('save').onclick = function () {
  var rater = document.getElementById('rater').value || 'rater';
  var list = answers();
  document.getElementById('count').textContent = list.filter(function (a) { return a.call; }).length + ' answered';
  var blob = new Blob([JSON.stringify({rater: rater, answers: list}, null, 1)], {type: 'application/json'});
  var link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = 'answers-' + rater.replace(/[^A-Za-z0-9_-]/g, '_') + '.json';
  link.click();
};
</script></body></html>
"""
