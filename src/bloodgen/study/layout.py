"""What a study folder holds: its sub-folders and the keys of its results.json (read by the pipeline that
writes them, the report and the publishing script)."""

RUNS_DIR = "runs"
EVAL_DIR = "eval"
UTILITY_DIR = "utility"  # utility samples (not published) and the images the memorisation figure shows
RESULTS_FILE = "results.json"

# results.json keys.
K_STUDY = "study"
K_FLOOR = "floor"
K_FAMILIES = "families"
K_RUNS = "runs"
K_AGGREGATE = "aggregate"
K_TRAIN = "train"
K_EVAL = "eval"
K_SAMPLING_TIME_10K = "sampling_seconds_per_10k"
K_UTILITY = "utility"
K_EXPERIMENTS = "experiments"
K_PENDING = "pending_units"


def utility_samples_file(model: str, seed: int) -> str:
    """The utility checks' samples of a run, relative to the study folder (tens of MB: not published)."""
    return f"{UTILITY_DIR}/{model}-s{seed}-samples.npz"


def closest_samples_file(model: str, seed: int) -> str:
    """The few generated images the memorisation figure shows, relative to the study folder (published)."""
    return f"{UTILITY_DIR}/{model}-s{seed}-closest.npz"
