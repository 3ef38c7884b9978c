"""The metrics beyond Inception FID on the protocol of record's trained runs, without retraining:

    python benchmarks/record_beyond_fid.py --units gan:0 vae:2 cgan:2 ddpm:1 [--max-minutes 90]

For each unit (family:training seed) the run folder in results/record/runs/ is sampled again with the record
preset's sampler and the unit's protocol seed (= its training seed, as in the record), so the `fid` figure
here must equal the record's: a check that the same images were scored. Beside it, at N = 10,000 with both
floors: FID extrapolated to infinite N, alpha-precision/beta-recall/authenticity and the Frechet distance and
KID in the reference classifier's features. One JSON per unit in results/record/beyond-fid/ (a finished unit
is skipped, so the script resumes unit by unit), then README.md there with the table.
On 2 CPU cores a unit takes about 30 min (Inception features of 10,000 samples dominate) plus its sampling.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.features import classifier_extractor  # noqa: E402
from bloodgen.data import load_bloodmnist  # noqa: E402
from bloodgen.metrics.protocol import calculate_metrics  # noqa: E402
from bloodgen.metrics.registry import CLASSIFIER  # noqa: E402
from bloodgen.provenance import write_json, write_text  # noqa: E402
from bloodgen.sampling.api import PRIOR, make_sample_fn  # noqa: E402
from bloodgen.study.presets import PRESETS  # noqa: E402

METRICS = ("fid", "kid", "fid-inf", "alpha-beta", "classifier")
COLUMNS = (("fid", "FID", 1), ("fid_infinity", "FID_inf", 1), ("kid", "KID x 10^3", 1e3),
           ("alpha_precision", "alpha-precision", 1), ("beta_recall", "beta-recall", 1),
           ("authenticity", "authenticity", 1), ("fd_classifier", "FD classifier", 1),
           ("kid_classifier", "KID classifier", 1))


def run_folder(record: Path, model: str, seed: int) -> Path:
    found = sorted((record / "runs").glob(f"{model}-s{seed}-*"))
    if not found:
        sys.exit(f"no run folder {model}-s{seed}-* in {record / 'runs'}")
    return found[0]


def evaluate_unit(record: Path, model: str, seed: int, data, n: int) -> dict:
    options = PRESETS["record"].sampler_options.get(model, {})
    sampler = make_sample_fn(run_folder(record, model, seed), classes=PRIOR, **options)
    result = calculate_metrics(sampler, n=n, seeds=(seed,), floor=True, metrics=METRICS, data=data.path,
                               extractors={CLASSIFIER: classifier_extractor(data)})
    result["sampler_options"] = options
    result["command"] = f"python benchmarks/record_beyond_fid.py --units {model}:{seed}"
    return result


def cell(block: dict, key: str, scale: float) -> str:
    value = (block.get(key) or {}).get("mean")
    return "n/a" if value is None else f"{value * scale:.3f}"


def summary(out: Path) -> str:
    rows = ["| unit | N | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
            "|---|---:|" + "---:|" * len(COLUMNS)]
    for path in sorted(out.glob("*.json")):
        result = json.loads(path.read_text())
        for name, block in ((path.stem, result), (f"{path.stem} floor, same-pool", result["floor"]["same_pool"]),
                            (f"{path.stem} floor, disjoint", result["floor"]["disjoint"])):
            rows.append(f"| {name} | {result['protocol']['n']:,} | " + " | ".join(cell(block, key, scale) for key, _, scale in COLUMNS) + " |")
    return ("# Beyond Inception FID: the record runs\n\n" + __doc__.split("\n\n", 1)[1].split("On 2 CPU")[0]
            + "\nOne protocol seed per unit (its training seed); floors at the same N and seed. KID in the "
              "classifier's features is not on Inception KID's scale (other features, other magnitudes).\n\n"
            + "\n".join(rows) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", nargs="+", required=True, metavar="FAMILY:SEED")
    parser.add_argument("--record", default=str(ROOT / "results" / "record"))
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--max-minutes", type=float, default=None, help="start no unit after this many minutes")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    record, started = Path(args.record), time.monotonic()
    out = record / "beyond-fid"
    data = load_bloodmnist(args.data)
    for unit in args.units:
        model, _, seed = unit.partition(":")
        path = out / f"{model}-s{int(seed)}.json"
        if path.is_file():
            print(f"{unit}: done already ({path})")
            continue
        if args.max_minutes is not None and (time.monotonic() - started) / 60 > args.max_minutes:
            print(f"{unit}: not started (--max-minutes {args.max_minutes} reached)")
            continue
        write_json(path, evaluate_unit(record, model, int(seed), data, args.n))
        write_text(out / "README.md", summary(out))
        print(f"{unit}: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
