"""Inputs of `bloodgen evaluate`: .npz files, PNG folders, generators, and a clear error for each mistake."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bloodgen.errors import UserError
from bloodgen.metrics.inputs import Generator, ImageSet, as_samples, load_images


def images(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)


def test_npz_with_dataset_shaped_labels(tmp_path):
    x = images()
    np.savez(tmp_path / "s.npz", images=x, labels=np.arange(6)[:, None] % 8)
    loaded = load_images(tmp_path / "s.npz")
    assert loaded.kind == "npz" and np.array_equal(loaded.images, x)
    assert loaded.labels.tolist() == list(range(6))


def test_all_unlabelled_means_no_labels(tmp_path):
    np.savez(tmp_path / "u.npz", images=images(), labels=np.full(6, -1, np.int64))  # as `bloodgen sample` writes
    assert load_images(tmp_path / "u.npz").labels is None


def test_png_folder_reads_like_pytorch_fid_and_hashes_like_the_npz(tmp_path):
    x = images()
    for i, img in enumerate(x):
        Image.fromarray(img).save(tmp_path / f"{i:03d}.png")
    Image.fromarray(x[0]).convert("L").save(tmp_path / "grey.png")  # converted to RGB, as pytorch-fid does
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = load_images(tmp_path)
    assert loaded.kind == "png" and loaded.labels is None
    assert np.array_equal(loaded.images[:6], x)
    assert loaded.images[6].shape == (28, 28, 3)
    np.savez(tmp_path / "same.npz", images=loaded.images)
    assert load_images(tmp_path / "same.npz").provenance()["content_sha256"] == loaded.provenance()["content_sha256"]


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 3, 28, 28), np.uint8), "channels first"),
    (np.zeros((4, 32, 32, 3), np.uint8), "shape (N, 28, 28, 3)"),
    (np.zeros((0, 28, 28, 3), np.uint8), "no images"),
    (np.full((4, 28, 28, 3), 0.5, np.float32), "(x * 255)"),
    (np.full((4, 28, 28, 3), -0.5, np.float32), "outside 0..255"),
    (np.full((4, 28, 28, 3), 300, np.int16), "outside 0..255"),
    (np.full((4, 28, 28, 3), 200, np.int64), "must be uint8"),
])
def test_bad_arrays_are_refused_with_the_reason(tmp_path, array, message):
    np.savez(tmp_path / "bad.npz", images=array)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        load_images(tmp_path / "bad.npz")


@pytest.mark.parametrize("labels, message", [
    (np.arange(5), r"shape \(6,\)"),
    (np.full(6, 8), "0..7"),
    (np.full(6, 1.0), "integers"),
    (np.array([-1, -1, 0, 1, 2, 3]), "2 of 6 labels are -1"),
    (np.full(6, -2), "0..7"),
])
def test_bad_labels_are_refused(tmp_path, labels, message):
    np.savez(tmp_path / "bad.npz", images=images(), labels=labels)
    with pytest.raises(UserError, match=message):
        load_images(tmp_path / "bad.npz")


def test_missing_file_empty_folder_wrong_key_and_wrong_size_png(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_images(tmp_path / "nothing.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no .png files"):
        load_images(tmp_path / "empty")
    np.savez(tmp_path / "arr.npz", images())
    with pytest.raises(UserError, match="no 'images' array.*arr_0"):
        load_images(tmp_path / "arr.npz")
    (tmp_path / "big").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big" / "a.png")
    with pytest.raises(UserError, match="64x64 pixels"):
        load_images(tmp_path / "big")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="is not an .npz file"):
        load_images(tmp_path / "broken.npz")


def test_generator_contract_is_checked():
    def good(n, seed):
        return images(n, seed), np.arange(n) % 8

    x, y = Generator(good).sample(5, 3)
    assert np.array_equal(x, images(5, 3)) and y.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(UserError, match="returned 4 images, fewer than the 5 requested"):
        Generator(lambda n, seed: (images(n - 1), None)).sample(5, 0)
    with pytest.raises(UserError, match="must return a tuple"):
        Generator(lambda n, seed: images(n)).sample(5, 0)
    with pytest.raises(UserError, match="outside 0..255"):
        Generator(lambda n, seed: (images(n).astype(np.float32) * 2 - 1, None)).sample(5, 0)


def test_as_samples_accepts_arrays_paths_and_callables(tmp_path):
    assert isinstance(as_samples(images()), ImageSet)
    assert isinstance(as_samples(lambda n, seed: (images(n), None)), Generator)
    with pytest.raises(UserError, match="must be a path"):
        as_samples(42)


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bloodgen", "evaluate", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("make_args, message", [
    (lambda tmp: [], "give SAMPLES"),
    (lambda tmp: [tmp / "missing.npz"], "not found"),
    (lambda tmp: [tmp / "float.npz"], "must be uint8"),
    (lambda tmp: [tmp / "float.npz", "--inception-weights", tmp / "no-weights.pth", "--reference", tmp / "ok.npz"],
     "must be uint8"),
    (lambda tmp: [tmp / "ok.npz", "--reference", tmp / "ref.npz", "--n", "100", "--inception-weights",
                  tmp / "no-weights.pth"], "fewer than the 100 requested"),
    (lambda tmp: [tmp / "ok.npz", "--reference", tmp / "ref.npz", "--n", "6", "--inception-weights",
                  tmp / "no-weights.pth"], "weights not found at"),
    (lambda tmp: [tmp / "ok.npz", "--reference", tmp / "ok.npz", "--n", "6"], "too few for two disjoint halves"),
])
def test_cli_user_errors_are_one_line_with_exit_code_2(tmp_path, make_args, message):
    np.savez(tmp_path / "float.npz", images=images().astype(np.float32) / 255)
    np.savez(tmp_path / "ok.npz", images=images())
    np.savez(tmp_path / "ref.npz", images=images(200))
    proc = run_cli(*make_args(tmp_path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bloodgen: error:") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
