"""Translating a whole BloodMNIST-format file with a trained translation model (cyclegan, aggan).

The output is a BloodMNIST-format file like the input (every split, the same labels and order), so every
command that reads a data file reads a translated one too; a JSON record beside it names the model and the
input by hash.
"""

from __future__ import annotations

import time
from pathlib import Path

from bloodgen.data import SPLITS, BloodMNIST
from bloodgen.data.subset import write_splits
from bloodgen.errors import UserError
from bloodgen.models.registry import get_spec, translation_families
from bloodgen.models.translation import TO_A, translate_array
from bloodgen.provenance import environment, file_sha256, portable_path, write_json
from bloodgen.sampling.api import LoadedModel


def check_translator(model: LoadedModel) -> None:
    if not get_spec(model.spec.model).translates:
        raise UserError(f"{model.source} is a {model.spec.model} model, which generates rather than translates: "
                        f"give a run of {' or '.join(translation_families())}")


def translate_file(model: LoadedModel, source: BloodMNIST, out: str | Path, direction: str = TO_A) -> Path:
    """Every split of `source` translated by `model` in `direction`, written to `out` with `out`.json."""
    check_translator(model)
    out = Path(out)
    start = time.perf_counter()
    splits = {s: (translate_array(model.network, source.images(s), direction)[0], source.labels(s)) for s in SPLITS}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_splits(out, splits)
    write_json(out.with_suffix(".json"), {
        "translation": direction, "model": model.spec.to_dict(), "model_source": portable_path(str(model.source)),
        "model_sha256": file_sha256(model.source), "step": model.step,
        "input": source.provenance(), "split_sizes": {s: int(len(v[1])) for s, v in splits.items()},
        "seconds": round(time.perf_counter() - start, 3), "environment": environment()})
    return out
