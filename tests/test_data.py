"""Data layer: resolution order, validation errors, splits, tensors and augmentation, `bloodgen data`."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from bloodgen.cli import main
from bloodgen.data import (CLASS_NAMES, SPLITS, load_bloodmnist, make_loader, random_dihedral,
                           resolve_data_path, to_model_range, to_uint8)
from bloodgen.data import bloodmnist
from bloodgen.errors import UserError
from conftest import TINY_SIZES, write_tiny_npz

OFFICIAL_TRAIN_COUNTS = [852, 2181, 1085, 2026, 849, 993, 2330, 1643]


def test_tiny_file_loads_with_not_official_warnings(tiny_npz):
    with pytest.warns(UserWarning) as caught:
        data = load_bloodmnist(write_tiny_npz(tiny_npz.parent / "again.npz", seed=1))
    messages = " ".join(str(w.message) for w in caught)
    assert "not the official BloodMNIST file" in messages and "split sizes" in messages
    assert data.split_sizes == TINY_SIZES
    assert not data.is_official


def test_splits_and_all(tiny_data):
    all_images, all_labels = tiny_data.split("all")
    assert all_images.shape == (sum(TINY_SIZES.values()), 28, 28, 3) and all_images.dtype == np.uint8
    assert all_labels.dtype == np.int64 and set(all_labels) == set(range(8))
    start = 0
    for s in SPLITS:  # "all" is train, val, test concatenated in that order
        n = TINY_SIZES[s]
        assert np.array_equal(all_images[start:start + n], tiny_data.images(s))
        start += n
    with pytest.raises(UserError, match="unknown split 'bogus'"):
        tiny_data.images("bogus")


def test_resolution_order_flag_then_env_then_default(tiny_npz, tmp_path, monkeypatch, no_download):
    other = write_tiny_npz(tmp_path / "bloodmnist.npz", seed=2)
    monkeypatch.setenv(bloodmnist.DATA_ENV, str(tmp_path))  # a folder holding the file
    assert resolve_data_path(tiny_npz) == tiny_npz  # the flag wins over the variable
    assert resolve_data_path() == other
    monkeypatch.delenv(bloodmnist.DATA_ENV)
    monkeypatch.setattr(bloodmnist, "default_root", lambda: tmp_path)
    assert resolve_data_path() == other


def test_missing_file_names_every_place_looked(no_download):
    with pytest.raises(UserError) as err:
        resolve_data_path()
    message = str(err.value)
    assert "bloodmnist.npz" in message and "--data" in message and "$BLOODGEN_DATA" in message
    assert "/nonexistent-medmnist-root/bloodmnist.npz" in message and "download" in message
    assert "\n" not in message


def test_explicit_missing_path_is_an_error_not_a_fallthrough(tmp_path, monkeypatch):
    monkeypatch.setenv(bloodmnist.DATA_ENV, str(tmp_path / "nope.npz"))
    with pytest.raises(UserError, match=r"not found at .*nope.npz \(from \$BLOODGEN_DATA\)"):
        resolve_data_path()
    with pytest.raises(UserError, match=r"empty-dir/bloodmnist.npz \(from --data\)"):
        (tmp_path / "empty-dir").mkdir()
        resolve_data_path(tmp_path / "empty-dir")


def _save(path, **overrides):
    rng = np.random.default_rng(0)
    from conftest import make_tiny_images

    arrays = {}
    for s in SPLITS:
        arrays[f"{s}_images"], arrays[f"{s}_labels"] = make_tiny_images(16, rng)
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize("overrides, message", [
    ({"val_labels": None}, "missing key"),
    ({"train_images": np.zeros((16, 28, 28, 3), np.float32)}, "must be uint8"),
    ({"train_images": np.zeros((16, 32, 32, 3), np.uint8)}, r"shape \(N, 28, 28, 3\)"),
    ({"test_labels": np.zeros((15, 1), np.uint8)}, "test_labels must have shape"),
    ({"train_labels": np.full((16, 1), 9, np.uint8)}, r"must lie in 0..7, found 9"),
])
def test_bad_files_give_one_line_errors(tmp_path, overrides, message):
    path = _save(tmp_path / "bad.npz", **overrides)
    with pytest.raises(UserError, match=message) as err:
        load_bloodmnist(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content", [b"this is not a zip file", None])
def test_truncated_or_foreign_file(tmp_path, tiny_npz, content):
    path = tmp_path / "broken.npz"
    path.write_bytes(content if content is not None else tiny_npz.read_bytes()[: tiny_npz.stat().st_size // 2])
    with pytest.raises(UserError, match="not an .npz file" if content else "damaged or truncated"):
        load_bloodmnist(path)


def test_model_range_round_trip_and_bounds(tiny_data):
    images = tiny_data.images("train")
    x = to_model_range(images)
    assert x.shape == (len(images), 3, 28, 28) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), images)
    assert to_uint8(torch.full((1, 3, 2, 2), 5.0)).max() == 255  # out-of-range values are clipped


def test_dihedral_augmentation_is_a_permutation_of_pixels():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    seen = set()
    for seed in range(40):
        y = random_dihedral(x, torch.Generator().manual_seed(seed))
        for i in range(2):  # same pixel multiset per channel, and one of the 8 symmetries
            assert torch.equal(y[i].flatten(1).sort().values, x[i].flatten(1).sort().values)
            candidates = [torch.rot90(img, r, dims=(-2, -1)) for img in (x[i], x[i].flip(-1)) for r in range(4)]
            matches = [k for k, c in enumerate(candidates) if torch.equal(c, y[i])]
            assert matches
            seen.add(matches[0])
    assert len(seen) == 8


def test_loader_batches_and_seeded_order(tiny_data):
    images, labels = tiny_data.split("train")
    first = [y for _, y in make_loader(images, labels, 16, seed=3)]
    again = [y for _, y in make_loader(images, labels, 16, seed=3)]
    x, y = next(iter(make_loader(images, labels, 16, seed=3, augment=True)))
    assert x.shape == (16, 3, 28, 28) and y.shape == (16,)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert len(first) == len(images) // 16


def test_data_command_writes_report(tiny_npz, tmp_path):
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["data", "--data", str(tiny_npz), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["class_counts"]["counts"]["train"] == np.bincount(
        load_bloodmnist(tiny_npz).labels("train"), minlength=8).tolist()
    for name in summary["figures"].values():
        assert (out / name).stat().st_size > 1000
    report = (out / "summary.md").read_text()
    assert "| 0 basophil |" in report and "imbalance" in report


def test_duplicates_are_found_across_splits(tmp_path):
    from bloodgen.data.analysis import exact_duplicates

    path = write_tiny_npz(tmp_path / "bloodmnist.npz")
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["test_images"][5] = arrays["train_images"][7]
    np.savez(path, **arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dup = exact_duplicates(load_bloodmnist(path))
    assert dup["n_groups"] == 1 and dup["n_groups_across_splits"] == 1
    assert dup["groups"][0]["splits"] == ["train", "test"]


def test_cli_user_error_is_one_line_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bloodgen", "data", "--data", str(tmp_path / "missing.npz"),
                             "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("bloodgen: error: BloodMNIST file not found")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_every_command_has_help_with_examples():
    from bloodgen.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert "example" in (p.epilog or ""), f"`bloodgen {name} --help` has no examples"


@pytest.mark.real_data
def test_real_file_matches_official_counts(real_npz):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real file must not trigger the not-official warnings
        data = load_bloodmnist(real_npz)
    assert data.is_official
    assert data.split_sizes == {"train": 11959, "val": 1712, "test": 3421}
    assert np.bincount(data.labels("train")).tolist() == OFFICIAL_TRAIN_COUNTS
    assert np.bincount(data.labels("val")).tolist() == [122, 312, 155, 290, 122, 143, 333, 235]
    assert np.bincount(data.labels("test")).tolist() == [244, 624, 311, 579, 243, 284, 666, 470]
    assert len(CLASS_NAMES) == 8


@pytest.mark.real_data
def test_data_command_on_real_file(real_npz, tmp_path):
    assert main(["data", "--data", str(real_npz), "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["class_counts"]["counts"]["train"] == OFFICIAL_TRAIN_COUNTS
    assert summary["data"]["official"] and summary["duplicates"]["n_groups"] > 0


def test_building_the_cli_does_not_import_torch():
    code = "import sys, bloodgen.cli as c; c.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", "a subcommand's add_parser imports torch; import it inside run()"


def test_derived_files_hold_out_a_class_or_cap_each_class(tiny_data, tmp_path):
    from bloodgen.data.subset import describe_subset, write_subset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        held_out = load_bloodmnist(write_subset(tiny_data, tmp_path / "no2.npz", exclude_classes=[2]))
        capped = load_bloodmnist(write_subset(tiny_data, tmp_path / "few.npz", per_class=3, seed=1))
    assert 2 not in held_out.labels("train") and 2 not in held_out.labels("val")
    assert np.array_equal(held_out.images("test"), tiny_data.images("test"))  # the anomalies stay in test
    assert np.bincount(capped.labels("train"), minlength=8).tolist() == [3] * 8
    assert describe_subset(tmp_path / "few.npz")["source"]["sha256"] == tiny_data.sha256
    with pytest.raises(UserError, match="must be in 0..7"):
        write_subset(tiny_data, tmp_path / "bad.npz", exclude_classes=[9])
    with pytest.raises(UserError, match="per class must be >= 1"):
        write_subset(tiny_data, tmp_path / "bad.npz", per_class=0)
