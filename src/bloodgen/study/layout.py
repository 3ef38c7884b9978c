"""What a study folder holds: its sub-folders and the keys of its results.json (read by the pipeline that
writes them, the report and the publishing script)."""

RUNS_DIR = "runs"
EVAL_DIR = "eval"
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
PROTOTYPES_DIR = "prototypes"
DIFFUSION_CLASSIFIER_DIR = "diffusion_classifier"
