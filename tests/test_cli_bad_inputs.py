"""Every user mistake the CLI knows of: exit code 2, one line on stderr, no traceback, nothing written.

One parametrised test per command; each case is (id, argv, a fragment of the expected message). The ids
are the rows of docs/errors.md, which a test keeps in step with this file. Placeholders in argv:
{data} the tiny BloodMNIST file, {ddpm}/{vae} tiny trained run folders, {file} an existing file, {dir}
an existing folder, {rand} random bytes, {trunc} a truncated checkpoint, {nan} an .npz of NaN images,
{labels_range}/{labels_length} .npz files with bad labels, {out} a path inside the scratch folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bloodgen.cli import main
from model_helpers import train_tiny

NO_GPU = not torch.cuda.is_available()
UNWRITABLE = "/proc/bloodgen-test"  # /proc refuses new files even to root

SAMPLE = [
    ("sample-out-unwritable", "sample {ddpm} -n 2 --out " + UNWRITABLE + "/a.npz", "cannot write in /proc"),
    ("sample-out-under-a-file", "sample {ddpm} -n 2 --out {file}/a.npz", "is a file, not a folder"),
    ("sample-out-not-npz", "sample {ddpm} -n 2 --out {out}/a.png", "--out must name a .npz file"),
    ("sample-grid-unwritable", "sample {ddpm} -n 2 --out {out}/a.npz --grid " + UNWRITABLE + ".png", "cannot write"),
    ("sample-grid-a-folder", "sample {ddpm} -n 2 --out {out}/a.npz --grid {dir}", "--grid must name a .png file"),
    ("sample-negative-seed", "sample {ddpm} -n 2 --seed -1 --out {out}/a.npz", "--seed must be a non-negative integer"),
    ("sample-zero-n", "sample {ddpm} -n 0 --out {out}/a.npz", "-n must be at least 1"),
    ("sample-zero-steps", "sample {ddpm} -n 2 --steps 0 --out {out}/a.npz", "--steps must be at least 1"),
    ("sample-unknown-device", "sample {ddpm} -n 2 --device foo --out {out}/a.npz", "unknown device 'foo'"),
    ("sample-negative-temperature", "sample {vae} -n 2 --temperature -1 --out {out}/a.npz",
     "--temperature must be > 0"),
    ("sample-random-bytes-checkpoint", "sample {rand} -n 2 --out {out}/a.npz", "(not a PyTorch file)"),
    ("sample-truncated-checkpoint", "sample {trunc} -n 2 --out {out}/a.npz", "(damaged or truncated)"),
    ("sample-unknown-pretrained", "sample pretrained:nope -n 2 --out {out}/a.npz", "no pretrained model 'nope'"),
    ("sample-unknown-option", "sample {ddpm} -n 2 --out {out}/a.npz --stepz 3", "bloodgen sample: error: unrecog"),
]
if NO_GPU:
    SAMPLE.append(("sample-cuda-without-gpu", "sample {ddpm} -n 2 --device cuda --out {out}/a.npz",
                   "0 CUDA device(s) are available"))

EVALUATE = [
    ("evaluate-json-unwritable", "evaluate {ok} --n 8 --seeds 1 --data {data} --json " + UNWRITABLE + ".json",
     "cannot write"),
    ("evaluate-json-a-folder", "evaluate {ok} --n 8 --seeds 1 --data {data} --json {dir}", "--json must name a .json"),
    ("evaluate-markdown-under-a-file", "evaluate {ok} --n 8 --data {data} --markdown {file}/r.md",
     "is a file, not a folder"),
    ("evaluate-utility-dir-a-file", "evaluate {ok} --n 8 --data {data} --utility --utility-dir {file}", "is a file"),
    ("evaluate-random-bytes-npz", "evaluate {rand_npz} --n 8 --data {data}", "is not an .npz file"),
    ("evaluate-nan-images", "evaluate {nan} --n 8 --data {data}", "NaN values"),
    ("evaluate-bad-labels", "evaluate {labels_range} --n 8 --data {data}", "labels must lie in 0..7"),
    ("evaluate-unknown-device", "evaluate {ok} --n 8 --data {data} --device foo", "unknown device 'foo'"),
    ("evaluate-random-bytes-weights", "evaluate --floor --n 8 --seeds 1 --data {data} --cache-dir {out}/c "
                                      "--inception-weights {rand}", "is not a readable InceptionV3 weights file"),
    ("evaluate-plausibility-no-samples", "evaluate --floor --n 8 --data {data} --plausibility", "give SAMPLES"),
]

CLASSIFY = [
    ("classify-out-unwritable", "classify {ddpm} test --data {data} --out " + UNWRITABLE + "/p.npz", "cannot write"),
    ("classify-negative-seed", "classify {ddpm} test --data {data} --seed -1 --out {out}/p.npz", "--seed must be"),
    ("classify-labels-out-of-range", "classify {ddpm} {labels_range} --out {out}/p.npz", "labels must lie in 0..7"),
    ("classify-labels-wrong-length", "classify {ddpm} {labels_length} --out {out}/p.npz", "labels must have shape"),
    ("classify-n-above-images", "classify {ddpm} test --data {data} --n 999 --out {out}/p.npz",
     "--n 999 is more than the 40 images"),
    ("classify-random-bytes-images", "classify {ddpm} {rand_npz} --out {out}/p.npz", "is not an .npz file"),
    ("classify-missing-checkpoint", "classify {out}/none test --data {data} --out {out}/p.npz", "not found"),
    ("classify-unknown-device", "classify {ddpm} test --data {data} --device foo --out {out}/p.npz",
     "unknown device"),
]

TRAIN = [
    ("train-out-a-file", "train --model ddpm --out {file} --data {data}", "is a file; give a folder"),
    ("train-negative-seed", "train --model ddpm --seed -1 --out {out}/runs --data {data}", "--seed must be"),
    ("train-random-bytes-data", "train --model ddpm --out {out}/runs --data {rand_npz}", "is not an .npz file"),
    ("train-unknown-model", "train --model nope --out {out}/runs --data {data}", "unknown model 'nope'"),
    ("train-misspelt-option", "train --modle ddpm", "bloodgen train: error: unrecognized arguments: --modle"),
    ("train-random-bytes-resume", "train --resume {rand} --data {data}", "(not a PyTorch file)"),
]

DATA = [
    ("data-out-a-file", "data --data {data} --out {file}", "is a file; give a folder"),
    ("data-negative-seed", "data --data {data} --seed -1 --out {out}/report", "--seed must be"),
    ("data-random-bytes", "data --data {rand_npz} --out {out}/report", "is not an .npz file"),
    ("domains-unknown", "domains make --data {data} --out {out}/d --domains stain lab2",
     "unknown domain(s) lab2: choose from artificial, stain, scope"),
    ("domains-named-twice", "domains make --data {data} --out {out}/d --domains stain stain", "a domain is named twice"),
    ("domains-out-a-file", "domains make --data {data} --out {file}", "is a file; give a folder"),
    ("domains-negative-seed", "domains make --data {data} --out {out}/d --seed -1", "--seed must be"),
    ("domains-normalise-missing-reference", "domains normalise {data} --to {out}/A.npz --out {out}/n.npz",
     "not found: give a domain file of `bloodgen domains make`"),
    ("translate-eval-no-domains", "translate-eval --folder {out}/none --out {out}/e",
     "A.npz not found: make the domains first with `bloodgen domains make"),
    ("translate-eval-unknown-domain", "translate-eval --folder {out} --domains lab2 --out {out}/e",
     "unknown domain(s) lab2"),
    ("translate-eval-bad-translator", "translate-eval --folder {out} --translators stain --out {out}/e",
     "--translators expects DOMAIN=RUN"),
    ("translate-eval-generator", "translate-eval --folder {out} --domains stain --translators stain=pretrained:ddpm "
     "--out {out}/e", "generates rather than translates"),
    ("turing-score-not-a-key", "turing score {file} {file}", "is not"),
    ("turing-c2st-too-few", "turing c2st {ok} --n 5 --data {data} --out {out}/c.json", "--n must be at least 10"),
    ("turing-make-missing-samples", "turing make {out}/none.npz --data {data} --out {out}/q", "samples not found"),
    ("translate-missing-input", "translate pretrained:ddpm {out}/none.npz --out {out}/t.npz", "INPUT.npz"),
    ("translate-generator", "translate pretrained:ddpm {data} --out {out}/t.npz", "generates rather than translates"),
    ("domains-normalise-unknown-method", "domains normalise {data} --to {data} --method vahadane --out {out}/n.npz",
     "argument --method: invalid choice: 'vahadane'"),
]

STUDY = [
    ("study-out-a-file", "study --out {file} --data {data}", "is a file; give a folder"),
    ("study-unknown-device", "study --out {out}/study --data {data} --device foo", "unknown device"),
    ("study-zero-train-seeds", "study --out {out}/study --data {data} --train-seeds 0", "--train-seeds must be"),
]

CLASSIFIER = [
    ("classifier-json-a-folder", "classifier train --data {data} --json {dir}", "--json must name a .json"),
    ("classifier-negative-seed", "classifier train --data {data} --seed -1", "--seed must be"),
    ("classifier-zero-epochs", "classifier train --data {data} --epochs 0", "--epochs must be at least 1"),
]

PROTOTYPES = [
    ("prototypes-learn-out-under-a-file", "prototypes learn --data {data} --out {file}/p", "is a file, not a folder"),
    ("prototypes-learn-negative-seed", "prototypes learn --data {data} --seed -1 --out {out}/p", "--seed must be"),
    ("prototypes-compare-out-a-file", "prototypes compare --data {data} --out {file}", "is a file; give a folder"),
    ("prototypes-compare-zero-steps", "prototypes compare --data {data} --out {out}/c --steps 0", "--steps must be"),
]

CLASSIFY_EVAL = [
    ("classify-eval-out-a-file", "classify-eval {ddpm} --data {data} --out {file}", "is a file; give a folder"),
    ("classify-eval-negative-seed", "classify-eval {ddpm} --data {data} --seed -1 --out {out}/e", "--seed must be"),
    ("classify-eval-missing-checkpoint", "classify-eval {out}/none --data {data} --out {out}/e", "not found"),
    ("classify-eval-no-checkpoint", "classify-eval --data {data} --out {out}/e", "needs a CHECKPOINT"),
    ("classify-eval-summarise-and-checkpoint", "classify-eval {ddpm} --summarise {out}/a {out}/b --out {out}/e",
     "not both"),
    ("classify-eval-summarise-one", "classify-eval --summarise {out} --out {out}/e", "at least two"),
    ("classify-eval-summarise-no-results", "classify-eval --summarise {out}/a {out}/b --out {out}/e",
     "holds no classify-eval results"),
    ("classify-eval-zero-per-class", "classify-eval {ddpm} --data {data} --test-per-class 0 --out {out}/e",
     "--test-per-class must be"),
]

ALL_CASES = SAMPLE + EVALUATE + CLASSIFY + TRAIN + DATA + STUDY + CLASSIFIER + PROTOTYPES + CLASSIFY_EVAL


@pytest.fixture(scope="module")
def world(tiny_npz, tmp_path_factory) -> dict[str, str]:
    """The files the cases point at, built once; `scratch` is where a case may (but must not) write."""
    root = tmp_path_factory.mktemp("bad-inputs")
    runs = root / "runs"
    ddpm = train_tiny("ddpm", tiny_npz, runs).run_dir
    vae = train_tiny("vae", tiny_npz, runs).run_dir
    checkpoint = (ddpm / "checkpoints" / "checkpoint.pt").read_bytes()
    (root / "truncated.pt").write_bytes(checkpoint[: len(checkpoint) // 2])
    rng = np.random.default_rng(0)
    (root / "random.pt").write_bytes(rng.bytes(4096))
    (root / "random.npz").write_bytes(rng.bytes(4096))
    images = rng.integers(0, 256, (12, 28, 28, 3), dtype=np.uint8)
    np.savez(root / "ok.npz", images=images)
    np.savez(root / "nan.npz", images=np.full((12, 28, 28, 3), np.nan, dtype=np.float32))
    np.savez(root / "labels_range.npz", images=images, labels=np.arange(12) + 3)
    np.savez(root / "labels_length.npz", images=images, labels=np.arange(5) % 8)
    (root / "a-file").write_text("not a folder")
    (root / "a-folder").mkdir()
    (root / "scratch").mkdir()
    return {"data": str(tiny_npz), "ddpm": str(ddpm), "vae": str(vae), "file": str(root / "a-file"),
            "dir": str(root / "a-folder"), "rand": str(root / "random.pt"), "rand_npz": str(root / "random.npz"),
            "trunc": str(root / "truncated.pt"), "nan": str(root / "nan.npz"), "ok": str(root / "ok.npz"),
            "labels_range": str(root / "labels_range.npz"), "labels_length": str(root / "labels_length.npz"),
            "out": str(root / "scratch"), "root": str(root)}


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if "__pycache__" not in p.parts}


def refuses(argv: str, fragment: str, world: dict, capsys, monkeypatch) -> None:
    """Runs `bloodgen ARGV` in a scratch working folder; asserts exit 2, one stderr line holding
    `fragment`, no traceback, and no file created, changed or removed anywhere in the test's world."""
    monkeypatch.chdir(world["out"])
    monkeypatch.setenv("BLOODGEN_CACHE", str(Path(world["out"]) / "cache"))
    root = Path(world["root"])
    before = _tree(root)
    try:
        code = main(argv.format(**world).split())
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    assert _tree(root) == before, "the command wrote or removed files"
    assert not Path(UNWRITABLE).exists()


def _ids(cases):
    return [c[0] for c in cases]


@pytest.mark.parametrize("case", SAMPLE, ids=_ids(SAMPLE))
def test_sample_refuses(case, world, capsys, monkeypatch):
    refuses(*case[1:], world, capsys, monkeypatch)


@pytest.mark.parametrize("case", EVALUATE, ids=_ids(EVALUATE))
def test_evaluate_refuses(case, world, capsys, monkeypatch):
    refuses(*case[1:], world, capsys, monkeypatch)


@pytest.mark.parametrize("case", CLASSIFY, ids=_ids(CLASSIFY))
def test_classify_refuses(case, world, capsys, monkeypatch):
    refuses(*case[1:], world, capsys, monkeypatch)


@pytest.mark.parametrize("case", TRAIN, ids=_ids(TRAIN))
def test_train_refuses(case, world, capsys, monkeypatch):
    refuses(*case[1:], world, capsys, monkeypatch)


@pytest.mark.parametrize("case", DATA, ids=_ids(DATA))
def test_data_refuses(case, world, capsys, monkeypatch):
    refuses(*case[1:], world, capsys, monkeypatch)


@pytest.mark.parametrize("case", STUDY, ids=_ids(STUDY))
def test_study_refuses(case, world, capsys, monkeypatch):
    refuses(*case[1:], world, capsys, monkeypatch)


@pytest.mark.parametrize("case", CLASSIFIER, ids=_ids(CLASSIFIER))
def test_classifier_refuses(case, world, capsys, monkeypatch):
    refuses(*case[1:], world, capsys, monkeypatch)


@pytest.mark.parametrize("case", PROTOTYPES, ids=_ids(PROTOTYPES))
def test_prototypes_refuses(case, world, capsys, monkeypatch):
    refuses(*case[1:], world, capsys, monkeypatch)


@pytest.mark.parametrize("case", CLASSIFY_EVAL, ids=_ids(CLASSIFY_EVAL))
def test_classify_eval_refuses(case, world, capsys, monkeypatch):
    refuses(*case[1:], world, capsys, monkeypatch)


def test_a_second_training_of_the_same_run_is_refused(world, capsys, monkeypatch):
    """A live lock (this very process) makes `--resume` refuse; the lock of a dead process is taken over."""
    from bloodgen.training.loop import RunLock

    run = Path(world["ddpm"])
    with RunLock(run):
        refuses("train --resume {ddpm} --steps 6 --data {data}", "is being trained by process", world, capsys,
                monkeypatch)
    lock = run / RunLock.NAME
    assert not lock.exists()
    host, boot, me = RunLock._owner()
    for stale in ([host, boot, "999999999"], [host, "an-earlier-boot", me]):  # no such process; rebooted since
        lock.write_text(" ".join(stale))
        with RunLock(run):
            assert lock.read_text().split() == [host, boot, str(os.getpid())]
        assert not lock.exists()


def test_the_sample_api_refuses_a_negative_seed(world):
    from bloodgen.errors import UserError
    from bloodgen.sampling.api import load_model, sample

    with pytest.raises(UserError, match="seed must be a non-negative integer"):
        sample(load_model(world["ddpm"]), 2, -1)


def test_docs_list_every_case():
    """docs/errors.md is the user's table of these cases: each id appears there."""
    table = (Path(__file__).parents[1] / "docs" / "errors.md").read_text()
    missing = [case[0] for case in ALL_CASES if f"`{case[0]}`" not in table]
    assert not missing, f"docs/errors.md lacks rows for {missing}"
