"""The FID network: locating its weights, refusing Inception Score without logits, and agreeing with pytorch-fid."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from bloodgen.cli import main
from bloodgen.errors import UserError
from bloodgen.metrics import inception


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """No weights anywhere: no variable, an empty torch hub cache, and a download that fails as offline."""
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(inception, "_download", lambda dst: "failed: offline (test)")
    return tmp_path


def test_missing_weights_error_names_the_file_and_every_place_looked(nowhere):
    with pytest.raises(UserError) as err:
        inception.resolve_weights()
    message = str(err.value)
    assert inception.WEIGHTS_FILENAME in message and "--inception-weights (not given)" in message
    assert f"${inception.WEIGHTS_ENV} (not set)" in message
    assert str(nowhere / "torch" / "hub" / "checkpoints" / inception.WEIGHTS_FILENAME) in message
    assert "failed: offline (test)" in message and "\n" not in message


def test_explicit_locations_must_exist(nowhere, monkeypatch):
    with pytest.raises(UserError, match="not found at .*typo.pth \\(from --inception-weights\\)"):
        inception.resolve_weights(nowhere / "typo.pth")
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(nowhere / "env-typo.pth"))
    with pytest.raises(UserError, match="from \\$BLOODGEN_INCEPTION_WEIGHTS"):
        inception.resolve_weights()


def test_weights_are_found_in_the_torch_hub_cache(nowhere):
    hub_file = nowhere / "torch" / "hub" / "checkpoints" / inception.WEIGHTS_FILENAME
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(b"x")
    assert inception.resolve_weights() == hub_file


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable InceptionV3 weights file \\(not a PyTorch file\\)"):
        inception.load_network(bad)
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="does not hold pytorch-fid's InceptionV3 weights"):
        inception.load_network(bad)


@pytest.fixture(scope="module")
def random_state() -> dict[str, torch.Tensor]:
    """Random weights in pytorch-fid's exact layout (captured from the library's own constructor)."""
    import torchvision
    from pytorch_fid import inception as pfi

    built = []
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *args, **kwargs: None), \
            mock.patch.object(torchvision.models.Inception3, "load_state_dict",
                              lambda self, state, *args, **kwargs: built.append(self)):
        pfi.fid_inception_v3()
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, value in built[0].state_dict().items():
        if key.endswith(("running_mean", "bn.bias")):
            value = torch.randn(value.shape, generator=gen) * 0.1
        elif key.endswith(("running_var", "bn.weight")):
            value = torch.rand(value.shape, generator=gen) + 0.5
        elif key == "fc.weight":
            value = torch.randn(value.shape, generator=gen) * 0.01
        state[key] = value
    return state


def library_features(network, images: np.ndarray) -> torch.Tensor:
    """pytorch-fid's own path: ToTensor (uint8 / 255), the InceptionV3 module, pool3 flattened."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        return network(x)[0].flatten(1)


def test_fast_network_computes_pytorch_fids_features(random_state):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 3), dtype=np.uint8)
    fast = inception.InceptionV3Features(random_state, Path("random.pth"))
    library = inception._pytorch_fid_network(random_state, Path("random.pth"))
    with torch.inference_mode():
        ours = fast(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    theirs = library_features(library, images)
    assert ours.shape == (3, inception.FEATURE_DIM)
    assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()


def test_zeroed_logits_layer_refuses_inception_score(random_state):
    assert inception.InceptionV3Features(random_state, Path("random.pth")).has_logits
    zeroed = {**random_state, "fc.weight": torch.zeros_like(random_state["fc.weight"]),
              "fc.bias": torch.zeros_like(random_state["fc.bias"])}
    network = inception.InceptionV3Features(zeroed, Path("zeroed.pth"))
    assert not network.has_logits
    with pytest.raises(UserError, match="Inception Score needs the network's logits layer, but zeroed.pth has a "
                                        "zeroed fc layer"):
        network.logits_weight()


def test_real_weights_features_within_1e_4_of_pytorch_fid(inception_weights, tiny_data):
    images = tiny_data.images("test")[:8]
    state = inception._read_state_dict(inception_weights)
    library = inception._pytorch_fid_network(state, inception_weights)
    extractor = inception.inception_extractor(inception_weights, device="cpu", progress=False)
    assert float(np.abs(extractor(images) - library_features(library, images).numpy()).max()) <= 1e-4


def test_cli_refuses_inception_score_with_the_shared_zeroed_weights(inception_weights, tmp_path, capsys):
    if inception._read_state_dict(inception_weights)["fc.weight"].any():
        pytest.skip("these weights have a real logits layer")
    samples = tmp_path / "s.npz"
    np.savez(samples, images=np.zeros((20, 28, 28, 3), np.uint8))
    code = main(["evaluate", str(samples), "--reference", str(samples), "--n", "20", "--isc",
                 "--inception-weights", str(inception_weights), "--quiet"])
    assert code == 2
    assert "zeroed fc layer" in capsys.readouterr().err


def write_pngs(images: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    return folder


@pytest.mark.slow
def test_evaluate_agrees_with_the_pytorch_fid_command(real_npz, inception_weights, tmp_path):
    n = 100
    with np.load(real_npz) as data:
        generated = write_pngs(data["test_images"][:n], tmp_path / "generated")
        real = write_pngs(data["val_images"][:n], tmp_path / "real")
    # pytorch-fid only reads its weights from the torch hub cache, under the original file name.
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(inception_weights, checkpoints / inception.WEIGHTS_FILENAME)
    # pytorch-fid's sqrtm is mostly single-threaded and takes about a minute: run both at once.
    pytorch_fid = subprocess.Popen([sys.executable, "-m", "pytorch_fid", "--device", "cpu", str(generated), str(real)],
                                   env={**os.environ, "TORCH_HOME": str(tmp_path / "torch")},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "eval.json"
    try:
        code = main(["evaluate", str(generated), "--reference", str(real), "--n", str(n), "--seeds", "1",
                     "--metrics", "fid", "--inception-weights", str(inception_weights), "--device", "cpu",
                     "--json", str(out), "--quiet"])
        stdout, stderr = pytorch_fid.communicate(timeout=900)
    finally:
        pytorch_fid.kill()  # only does something if this test failed while it was still running
    assert code == 0 and pytorch_fid.returncode == 0, stderr
    theirs = float(re.search(r"FID:\s+(\S+)", stdout).group(1))
    ours = json.loads(out.read_text())["fid"]["mean"]
    assert abs(ours - theirs) <= 1e-3 * theirs, (ours, theirs)
