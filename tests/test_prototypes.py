"""Prototype learning, the proto-ddpm family (frozen prototype conditioning) and the IMPROVE comparison."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from bloodgen.classify.prototype_options import PrototypeOptions
from bloodgen.errors import UserError
from model_helpers import sample_then_evaluate, tiny_config, train_tiny

DIM = 8  # the tiny proto-ddpm's class_dim


def toy_features(n_per_class: int, seed: int, dim: int = 16, n_classes: int = 8):
    """Separable toy classes: Gaussian blobs around well-spaced centres."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 4, (n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    return (centres[labels] + rng.normal(0, 1, (len(labels), dim))).astype(np.float32), labels


@pytest.fixture(scope="module")
def fitted():
    from bloodgen.classify.prototypes import fit_prototypes

    options = PrototypeOptions(per_class=2, dim=DIM, epochs=15, batch_size=64, seed=0)
    return fit_prototypes(toy_features(30, 0), toy_features(10, 1), 8, options)


@pytest.fixture(scope="module")
def proto_file(fitted, tmp_path_factory):
    from bloodgen.classify.prototypes import write_prototypes

    model, _ = fitted
    return write_prototypes(model, {"toy": True}, tmp_path_factory.mktemp("protos") / "prototypes.safetensors")


def test_prototype_loss_is_dce_plus_lambda_times_distance_to_closest_true_prototype():
    from bloodgen.classify.prototypes import PrototypeClassifier, prototype_loss

    model = PrototypeClassifier(4, 2, PrototypeOptions(per_class=2, dim=3, gamma=0.5))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    d = model.distances(x)
    logits = torch.logsumexp(-0.5 * d, dim=2)
    expected = torch.nn.functional.cross_entropy(logits, y) + 0.3 * d[torch.arange(5), y].min(1).values.mean()
    loss, _ = prototype_loss(model, x, y, lam=0.3)
    assert torch.allclose(loss, expected)


def test_prototypes_of_separable_toy_classes_separate(fitted):
    from bloodgen.classify.prototypes import prototype_accuracy

    model, fit = fitted
    assert fit.val_accuracy > 0.95 and len(fit.history) == 15
    assert prototype_accuracy(model, *toy_features(10, 2)) > 0.95
    # Each class's mean projected feature lies nearest to one of its own class's prototypes.
    x, y = toy_features(20, 3)
    with torch.no_grad():
        d = model.distances(torch.as_tensor(x)).min(2).values.numpy()  # (N, C): distance to each class
    means = np.stack([d[y == c].mean(0) for c in range(8)])
    assert (means.argmin(1) == np.arange(8)).all()


def test_bad_prototype_options_and_files_are_one_line_user_errors(tmp_path):
    from bloodgen.classify.prototypes import load_encoder
    from bloodgen.models.prototype_file import read_prototypes

    for options, match in [(PrototypeOptions(gamma=0), "gamma"), (PrototypeOptions(per_class=0), "per-class"),
                           (PrototypeOptions(lam=-1), "lambda"), (PrototypeOptions(dim=0), "dim")]:
        with pytest.raises(UserError, match=match):
            options.check()
    with pytest.raises(UserError, match="not found"):
        read_prototypes(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a safetensors"):
        read_prototypes(tmp_path / "junk.safetensors")
    for spec in ("no-colon", "no_such_module_xyz:f", "torch.nn:NoSuchThing"):
        with pytest.raises(UserError, match="encoder"):
            load_encoder(spec)


def test_learn_prototypes_with_a_plugged_in_encoder_writes_file_and_json(tiny_data, tmp_path):
    from bloodgen.classify.prototypes import learn_prototypes, read_info
    from bloodgen.models.prototype_file import read_prototypes

    options = PrototypeOptions(per_class=2, dim=DIM, epochs=20, batch_size=32)
    path, record = learn_prototypes(tiny_data, tmp_path, options, encoder="torch.nn:Flatten")
    assert path == tmp_path / "prototypes.safetensors" and read_prototypes(tmp_path).shape == (8, 2, DIM)
    saved = json.loads((tmp_path / "prototypes.json").read_text())
    assert saved == json.loads(json.dumps(record.to_json())) and read_info(tmp_path) == record
    assert saved["test_accuracy"] == record.test_accuracy and 0 <= record.test_accuracy <= 1
    assert saved["test_accuracy"] > 0.25  # twice chance: raw pixels of 80 images, but colour tells the classes
    assert saved["encoder"]["feature_dim"] == 28 * 28 * 3 and len(saved["data"]["sha256"]) == 64
    assert saved["options"]["per_class"] == 2 and saved["environment"]["versions"]["torch"]


def test_the_inception_encoder_reads_the_evaluation_feature_cache_split_by_split(tiny_data, tmp_path, monkeypatch):
    """--encoder inception: each split's rows of the dataset's cached Inception features (a projection stands in
    for the network here), the train split capped per class, and a record that says it never saw BloodMNIST."""
    from bloodgen.classify import prototypes
    from test_metrics_protocol import ProjectionExtractor

    extractor = ProjectionExtractor()
    monkeypatch.setattr(prototypes, "inception_extractor", lambda *args, **kwargs: extractor)
    seen = {}
    fit = prototypes.fit_prototypes

    def spy(train, val, n_classes, options):
        seen["train"], seen["val"] = train, val
        return fit(train, val, n_classes, options)

    monkeypatch.setattr(prototypes, "fit_prototypes", spy)
    _, record = prototypes.learn_prototypes(tiny_data, tmp_path, PrototypeOptions(dim=DIM, epochs=5, batch_size=32),
                                            encoder="inception", cache_dir=tmp_path / "cache", max_per_class=3)
    val_images, val_labels = tiny_data.split("val")
    assert np.allclose(seen["val"][0], extractor(val_images), atol=1e-5) and (seen["val"][1] == val_labels).all()
    assert np.bincount(seen["train"][1], minlength=8).tolist() == [3] * 8
    assert record.encoder.feature_dim == extractor.dim and "no BloodMNIST" in record.encoder.trained_on["images"]
    assert list((tmp_path / "cache" / "features").glob("*.npz"))  # shared with the evaluation's cache


# A random CLIP small enough for a test: 32-pixel input, one transformer block per tower, 16-d image features.
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                             "patch_size": 8},
             "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture
def tiny_clip(tmp_path):
    """(the tower's open_clip model, its weights file) of a random tiny CLIP architecture 'tiny-clip-test'."""
    open_clip = pytest.importorskip("open_clip")
    config = tmp_path / "tiny-clip-test.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test").eval()
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    return model, tmp_path / "tiny.pt"


def test_the_clip_encoder_embeds_28_pixel_cells_as_open_clip_s_own_preprocessing_does(tiny_clip, monkeypatch):
    import open_clip
    from PIL import Image

    from bloodgen.classify.clip_encoder import WEIGHTS_ENV, clip_encoder
    from bloodgen.classify.prototypes import encode
    from bloodgen.provenance import file_sha256

    model, weights = tiny_clip
    tower, trained_on = clip_encoder(f"clip:tiny-clip-test:{weights}")
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 3), dtype=np.uint8)
    features = encode(tower, images)
    # open_clip's PIL transform (resize, crop, normalise) on the same cells, through the saved model itself
    transform = open_clip.image_transform(32, is_train=False)
    with torch.no_grad():
        expected = model.encode_image(torch.stack([transform(Image.fromarray(im)) for im in images])).numpy()
    cosine = (features * expected).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(expected, axis=1)
    assert features.shape == (6, 16) and cosine.min() > 0.98, cosine
    assert trained_on["weights_sha256"] == file_sha256(weights) and "no BloodMNIST" in trained_on["images"]
    torch.manual_seed(1)
    other = weights.with_name("other.pt")
    torch.save(open_clip.create_model("tiny-clip-test").state_dict(), other)
    assert not np.allclose(encode(clip_encoder(f"clip:tiny-clip-test:{other}")[0], images), features, atol=1e-3)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    for spec, says in ((f"clip:tiny-clip-test:{weights.with_name('gone.pt')}", "gone.pt not found"),
                       ("clip:tiny-clip-test", WEIGHTS_ENV), (f"clip:no-such-arch:{weights}", "unknown CLIP")):
        with pytest.raises(UserError, match=says):
            clip_encoder(spec)
    monkeypatch.setenv(WEIGHTS_ENV, str(weights))
    assert np.array_equal(encode(clip_encoder("clip:tiny-clip-test")[0], images), features)


def test_prototypes_learned_on_clip_features_record_the_weights_by_name_and_hash(tiny_clip, tiny_data, tmp_path):
    from bloodgen.classify.prototypes import learn_prototypes
    from bloodgen.provenance import file_sha256

    _, weights = tiny_clip
    _, record = learn_prototypes(tiny_data, tmp_path / "p", PrototypeOptions(dim=DIM, epochs=3, batch_size=32),
                                 encoder=f"clip:tiny-clip-test:{weights}")
    assert record.encoder.spec == f"clip:tiny-clip-test:tiny.pt#{file_sha256(weights)[:16]}"
    assert record.encoder.feature_dim == 16
    assert record.encoder.trained_on["weights_sha256"] == file_sha256(weights)
    assert str(tmp_path) not in (tmp_path / "p" / "prototypes.json").read_text()


def build_proto(path, mode="prototypes", **extra):
    from bloodgen.models.config import resolve_config
    from bloodgen.models.registry import get_family

    overrides = tiny_config("proto-ddpm", class_embedding=mode, prototypes=str(path), **extra)
    family = get_family("proto-ddpm")("proto-ddpm", resolve_config("proto-ddpm", "quick", overrides=overrides), 8)
    torch.manual_seed(0)
    return family, family.build()


def test_prototype_conditioning_is_frozen_through_training_and_ema_and_changes_the_output(tiny_data, proto_file):
    from bloodgen.models.prototype_file import read_prototypes
    from bloodgen.data import to_model_range
    from bloodgen.training.ema import EMA
    from bloodgen.training.loop import Stepper, make_accelerator

    family, nets = build_proto(proto_file)
    unet = nets["unet"]
    means = read_prototypes(proto_file).mean(1)
    expected = means / means.pow(2).mean().sqrt()
    assert torch.allclose(unet.prototypes, expected)
    assert "prototypes" not in dict(unet.named_parameters())
    ema = EMA(unet, 0.9)
    optimizers = family.optimizers(nets)
    ctx = Stepper(make_accelerator(True, "no"), nets, optimizers,
                  {"unet": torch.optim.lr_scheduler.LambdaLR(optimizers["unet"], lambda s: 1.0)}, grad_clip=1.0)
    images, labels = tiny_data.split("train")
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    for step in range(2):
        ctx.step = step
        family.train_step(nets, to_model_range(images[:16]), torch.as_tensor(labels[:16]), ctx)
        ema.update(unet, step)
    assert torch.equal(unet.prototypes, expected) and torch.equal(ema.network.prototypes, expected)
    assert not torch.equal(before["embed.linear_1.weight"], unet.embed.linear_1.weight)  # the rest did train
    x = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = family.denoise(unet.eval(), x, torch.tensor(40), torch.tensor([0, 1, 2]))
        b = family.denoise(unet, x, torch.tensor(40), torch.tensor([3, 4, 5]))
        null = family.denoise(unet, x, torch.tensor(40), torch.full((3,), family.null_class))
    assert (a - b).abs().mean() > 1e-4 and (a - null).abs().mean() > 1e-4


def test_learned_arm_has_same_architecture_with_a_trainable_embedding(proto_file):
    _, proto = build_proto(proto_file)
    _, learned = build_proto("", mode="learned")
    assert learned["unet"].classes.weight.requires_grad and learned["unet"].classes.weight.shape == (8, DIM)
    shapes = lambda net: {k: v.shape for k, v in net.state_dict().items() if k not in ("prototypes", "classes.weight")}
    assert shapes(proto["unet"]) == shapes(learned["unet"])


def test_bad_proto_ddpm_inputs_are_one_line_user_errors(tiny_npz, tmp_path, proto_file):
    from bloodgen.classify.prototypes import PrototypeClassifier, write_prototypes
    from bloodgen.models.config import resolve_config

    with pytest.raises(UserError, match="not found"):
        train_tiny("proto-ddpm", tiny_npz, tmp_path, overrides={"prototypes": str(tmp_path / "none.safetensors")})
    with pytest.raises(UserError, match="'prototypes' is empty"):
        build_proto("")
    with pytest.raises(UserError, match="class_dim"):
        build_proto(proto_file, class_dim=DIM + 1)
    five = write_prototypes(PrototypeClassifier(4, 5, PrototypeOptions(dim=DIM)), {}, tmp_path / "five.safetensors")
    with pytest.raises(UserError, match="5 classes"):
        build_proto(five)
    with pytest.raises(UserError, match="'class_embedding'"):
        resolve_config("proto-ddpm", "quick", overrides={"class_embedding": "clip"})
    with pytest.raises(UserError, match="'conditional'"):
        resolve_config("proto-ddpm", "quick", overrides={"conditional": False})


def test_cli_errors_are_one_line(tiny_npz, tmp_path, capsys):
    from bloodgen.cli import main

    assert main(["prototypes", "learn", "--data", str(tiny_npz), "--out", str(tmp_path), "--gamma", "-1"]) == 2
    assert main(["prototypes", "learn", "--data", str(tiny_npz), "--out", str(tmp_path), "--encoder", "nope"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("bloodgen: error: ") for line in errors)


class PooledPixels:
    """4x4 average-pooled pixels as 48-d 'features', standing in for InceptionV3."""

    name, dim, weights_sha256 = "test-pooled-pixels", 48, "0" * 64

    def __call__(self, images: np.ndarray, desc: str = "") -> np.ndarray:
        return images.astype(np.float32).reshape(len(images), 4, 7, 4, 7, 3).mean((2, 4)).reshape(len(images), -1) / 255

    def provenance(self) -> dict:
        return {"name": self.name, "dim": self.dim, "sha256": self.weights_sha256}


class TinyNet(torch.nn.Module):
    """A few-kilobyte stand-in for the ResNet-18 classifier (same `fc` head the encoder removes)."""

    def __init__(self, n_classes: int = 8, width: int = 8):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, stride=2), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.fc = torch.nn.Linear(width, n_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def test_comparison_runs_both_arms_in_both_regimes_resumes_and_samples_without_prototypes(tiny_npz, tmp_path,
                                                                                         monkeypatch):
    from bloodgen.improve import compare as cmp
    from bloodgen.sampling.api import load_model, sample

    monkeypatch.setattr("bloodgen.classify.reference.resnet18_28", TinyNet)
    # Two steps of batch 8 and 2-step sampling: the pipeline is under test here, not the models.
    budget = cmp.Budget(diffusion_preset="quick",
                        diffusion_overrides=tiny_config("proto-ddpm", steps=2, batch_size=8, sample_steps=2),
                        prototypes=PrototypeOptions(dim=DIM, epochs=5, batch_size=32), classifier="cpu",
                        n_samples=16, fid_n=8, fid_seeds=1, tstr_epochs=1, eval_per_class=2)

    def run(budget=budget):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cmp.compare(tmp_path, cmp.Comparison(budget, data=tiny_npz), cache_dir=tmp_path / "cache",
                               progress=False, extractor=PooledPixels())

    results = run()
    for regime in cmp.REGIMES:
        block = results.regimes[regime]
        assert tuple(block.arms) == cmp.ARMS and 0 <= block.real.f1 <= 1
        for row in block.arms.values():
            assert np.isfinite(row.fid) and 0 <= row.class_fidelity <= 1
            assert 0 <= row.tstr.f1 <= 1 and row.n_samples == 16
        assert (tmp_path / block.grid).is_file()
        assert 0 <= block.prototypes.test_accuracy <= 1
    saved = json.loads((tmp_path / cmp.RESULTS_FILE).read_text())
    assert set(saved["regimes"]["low"]["rows"]) == {cmp.REAL, *cmp.ARMS}
    assert cmp.ComparisonResult.from_json(saved).to_json() == saved
    configs = [json.loads((tmp_path / "runs" / f"full-{arm}" / "config.json").read_text())["config"]
               for arm in cmp.ARMS]
    assert {k for k in configs[0] if configs[0][k] != configs[1][k]} == {"class_embedding", "prototypes"}
    assert "F1" in (tmp_path / "report.md").read_text() and (tmp_path / "report.html").is_file()

    # The exported model carries its prototypes: it samples after the prototypes file is gone.
    run_dir = tmp_path / "runs" / "low-prototypes"
    trained = load_model(run_dir, device="cpu").network.prototypes.clone()
    (tmp_path / "prototypes").rename(tmp_path / "away")
    model = load_model(run_dir, device="cpu")
    assert torch.equal(model.network.prototypes, trained) and trained.abs().sum() > 0
    images, _ = sample(model, 3, seed=0, classes="balanced")
    assert images.shape == (3, 28, 28, 3) and images.dtype == np.uint8
    assert "class_vectors_sha256" in json.loads((run_dir / "summary.json").read_text())["extras"]

    (tmp_path / "away").rename(tmp_path / "prototypes")

    # Resumable: a second call finds every stage done and trains nothing.
    monkeypatch.setattr("bloodgen.improve.compare.train", lambda *a, **k: pytest.fail("retrained a finished run"))
    monkeypatch.setattr("bloodgen.improve.compare.learn_prototypes", lambda *a, **k: pytest.fail("relearned"))
    assert run().regimes == results.regimes
    with pytest.raises(UserError, match="another budget"):
        run(cmp.replace(budget, fid_n=4))


def test_proto_ddpm_samples_are_accepted_by_evaluate(tiny_npz, tmp_path, proto_file, monkeypatch):
    run = train_tiny("proto-ddpm", tiny_npz, tmp_path / "run", overrides={"prototypes": str(proto_file)})
    result = sample_then_evaluate(run.run_dir, tiny_npz, tmp_path, monkeypatch)
    assert np.isfinite(result["fid"]["mean"]) and result["samples"]["has_labels"]
