"""The reference classifier: ResNet-18 adapted to 28x28, as in the MedMNIST v2 benchmark.

It judges generated images (class fidelity), and its training recipe, applied to synthetic or mixed
training sets, gives train-on-synthetic/test-on-real and augmentation figures. Training runs through
`accelerate`, so the same code uses a CPU, a GPU or several; the selected weights are cached on disk,
keyed by the data file and the recipe, and reused.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from sklearn import metrics as skm
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock
from tqdm import tqdm

from bloodgen.classify.recipe import RECIPES, ClassifierRecipe
from bloodgen.classify.scores import ClassificationScores
from bloodgen.data import N_CLASSES, make_loader, random_dihedral, to_model_range
from bloodgen.errors import UserError
from bloodgen.metrics.features import default_cache_dir
from bloodgen.provenance import atomic_path, environment, write_json

# bloodgen/pretrained/<this>/: the cpu recipe's classifier on the official file, so class fidelity needs no
# training (benchmarks/publish_classifier.py puts it there).
SHIPPED_CLASSIFIER = "reference-classifier"


def resnet18_28(n_classes: int = N_CLASSES, width: int = 64) -> nn.Module:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, so 28x28 inputs keep their detail.

    `width` scales every stage (width, 2w, 4w, 8w); 64 is the standard network. torchvision fixes the
    widths, so other widths rebuild its stages with its own `_make_layer`, keeping its module names.
    """
    model = resnet18(num_classes=n_classes)
    model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    if width != 64:
        model.bn1 = nn.BatchNorm2d(width)
        model.inplanes = width
        for i, mult in enumerate((1, 2, 4, 8)):
            setattr(model, f"layer{i + 1}", model._make_layer(BasicBlock, width * mult, 2, stride=1 if i == 0 else 2))
        model.fc = nn.Linear(8 * width, n_classes)
    return model


def default_recipe() -> ClassifierRecipe:
    """The full recipe where a GPU is present; the CPU-sized one otherwise (the full one takes hours there)."""
    return RECIPES["full" if torch.cuda.is_available() else "cpu"]


def chosen_recipe(name: str | None) -> ClassifierRecipe:
    """The recipe a --classifier-recipe value names, or the device's default when it names none."""
    return RECIPES[name] if name else default_recipe()


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int = 512,
                   device: torch.device | str | None = None) -> np.ndarray:
    """Raw logits (N, C) for uint8 images (N, 28, 28, 3)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_model_range(images[start:start + batch_size]).to(device)
        out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, N_CLASSES), np.float32)


def predict_proba(model: nn.Module, images: np.ndarray, batch_size: int = 512,
                  device: torch.device | str | None = None) -> np.ndarray:
    """Softmax probabilities (N, C) for uint8 images (N, 28, 28, 3)."""
    return torch.from_numpy(predict_logits(model, images, batch_size, device)).softmax(-1).numpy()


def classification_report(y_true: np.ndarray, proba: np.ndarray) -> ClassificationScores:
    """Accuracy, balanced accuracy, macro precision/recall/F1, one-vs-rest AUC, per-class recall, confusion."""
    y_pred = proba.argmax(1)
    labels = list(range(proba.shape[1]))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro",
                                                                   zero_division=0)
    present = np.unique(y_true)
    try:  # AUC needs every class present among the true labels and probabilities that sum to one
        auc = float(skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=labels)) if len(present) == len(labels) else None
    except ValueError:
        auc = None
    per_class_recall = skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return ClassificationScores(
        accuracy=float(skm.accuracy_score(y_true, y_pred)),
        balanced_accuracy=float(skm.balanced_accuracy_score(y_true, y_pred)),
        macro_precision=float(precision), macro_recall=float(recall), macro_f1=float(f1), auc_ovr=auc,
        per_class_recall=per_class_recall.round(4).tolist(),
        confusion_matrix=skm.confusion_matrix(y_true, y_pred, labels=labels).tolist())


def train_classifier(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                     recipe: ClassifierRecipe = RECIPES["full"], model: nn.Module | None = None,
                     progress: bool = True, desc: str = "classifier") -> tuple[nn.Module, dict]:
    """Train with AdamW + cosine schedule; keep the weights of the epoch with the best val accuracy.

    Returns the model (on the accelerator's device, in eval mode) and a history dict.
    """
    images, labels = train
    if len(images) < recipe.batch_size:
        recipe = replace(recipe, batch_size=max(1, len(images)))
    accelerator = Accelerator()
    set_seed(recipe.seed)
    model = model if model is not None else resnet18_28(width=recipe.width)
    loader = make_loader(images, labels, recipe.batch_size, shuffle=True, augment=False, seed=recipe.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    total_steps = recipe.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=max(total_steps, 1),
                                                    pct_start=0.15)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    best_acc, best_state, history = -1.0, None, []
    start = time.perf_counter()
    bar = tqdm(range(recipe.epochs), desc=desc, disable=not (progress and accelerator.is_main_process))
    for epoch in bar:
        model.train()
        losses = []
        for x, y in loader:
            if recipe.augment:
                x = random_dihedral(x)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        val_acc = float((predict_proba(accelerator.unwrap_model(model), val[0]).argmax(1) == val[1]).mean())
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_accuracy": val_acc})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_acc=f"{val_acc:.4f}")
        if val_acc > best_acc:
            best_acc = val_acc
            best_state = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    model = accelerator.unwrap_model(model)
    model.load_state_dict(best_state)
    model.eval()
    return model, {"history": history, "best_val_accuracy": best_acc, "train_seconds": time.perf_counter() - start,
                   "device": str(accelerator.device), "n_train": int(len(images))}


def reference_classifier(data, recipe: ClassifierRecipe | None = None, cache_dir: str | Path | None = None,
                         retrain: bool = False) -> tuple[nn.Module, dict]:
    """The reference classifier for this data file: loaded from the cache, or trained on train/val and cached.

    Without a recipe, `default_recipe()` picks the full or the CPU-sized one; the info records which.
    """
    recipe = recipe or default_recipe()
    folder = Path(cache_dir or default_cache_dir()) / "classifier" / f"{data.sha256[:16]}-{recipe.key()}"
    weights, info_path = folder / "model.safetensors", folder / "info.json"
    shipped = _shipped_folder()
    if not retrain and not weights.is_file() and _shipped_matches(shipped, data, recipe):
        folder, weights, info_path = shipped, shipped / "model.safetensors", shipped / "info.json"
    model = resnet18_28(width=recipe.width)
    if weights.is_file() and info_path.is_file() and not retrain:
        try:
            model.load_state_dict(load_file(weights))
            model.eval()
            return model, json.loads(info_path.read_text())
        except Exception as err:  # a damaged cache entry is rebuilt rather than trusted
            print(f"bloodgen: rebuilding damaged classifier cache {folder}: {type(err).__name__}")
    model, info = train_classifier(data.split("train"), data.split("val"), recipe, model=model)
    info.update(recipe=asdict(recipe), data=data.provenance(), environment=environment(),
                test=classification_report(data.labels("test"), predict_proba(model, data.images("test"))).to_json())
    with atomic_path(weights) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    write_json(info_path, info)
    return model, info


def _shipped_folder() -> Path:
    return Path(str(resources.files("bloodgen").joinpath("pretrained", SHIPPED_CLASSIFIER)))


def _shipped_matches(folder: Path, data, recipe: ClassifierRecipe) -> bool:
    """The shipped classifier stands in for a training only for its own recipe on its own data file."""
    info_path = folder / "info.json"
    if not info_path.is_file():
        return False
    info = json.loads(info_path.read_text())
    return info.get("recipe") == asdict(recipe) and info.get("data", {}).get("sha256") == data.sha256


def shipped_reference_classifier(data) -> tuple[nn.Module, dict]:
    """The reference classifier shipped with bloodgen (trained once on the official file), for that file."""
    folder = _shipped_folder()
    if not (folder / "info.json").is_file():
        raise UserError(f"this install ships no reference classifier ({folder} is missing); train one with "
                        f"`bloodgen classifier train`")
    recipe = ClassifierRecipe(**json.loads((folder / "info.json").read_text())["recipe"])
    if not _shipped_matches(folder, data, recipe):
        raise UserError(f"the shipped reference classifier was trained on the official BloodMNIST file, not on "
                        f"{data.path}; train one for this file with `bloodgen classifier train`")
    return reference_classifier(data, recipe)


def load_classifier(path: str | Path) -> nn.Module:
    """A reference classifier from a `model.safetensors` file (or the folder holding it)."""
    path = Path(path)
    path = path / "model.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"classifier weights not found at {path}; train them with `bloodgen classifier train`")
    try:
        state = load_file(path)
        model = resnet18_28(width=state["conv1.weight"].shape[0])
        model.load_state_dict(state)
    except Exception as err:
        raise UserError(f"{path} is not a bloodgen classifier ({type(err).__name__}: {err})") from None
    return model.eval()
