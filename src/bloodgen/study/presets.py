"""Study presets: how much training and how large an evaluation. Torch-free, so `--help` can list them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from bloodgen.models.registry import REGISTRY


@dataclass(frozen=True)
class StudyPreset:
    train_preset: str  # the model presets (bloodgen/configs/<model>.json) each family trains with
    train_seeds: int  # independent trainings per family (different initialisation and data order)
    n_images: int  # images per side of every FID/KID comparison
    eval_seeds: int  # sampling seeds = real-draw seeds of the protocol
    grid_per_class: int = 8
    # Sampler options per family for evaluation (families not named use their config's defaults).
    sampler_options: dict = field(default_factory=dict)
    # Config keys overridden per family, on top of its train preset (e.g. {FAMILY: {"steps": 500}}).
    config_overrides: dict = field(default_factory=dict)
    # Utility checks (class fidelity, TSTR, augmentation, memorisation) on each family's best run: each
    # trains two classifiers, so they are off where minutes count.
    utility: bool = False
    # Families whose best run gets the utility checks; empty: every family of the study.
    utility_models: tuple[str, ...] = ()
    # Reference-classifier recipe: a name from classify.recipe.RECIPES, a dict of ClassifierRecipe fields,
    # or None for the device's default.
    classifier_recipe: str | dict | None = None
    # Generated images whose nearest training image is searched (memorisation).
    memorisation_n: int = 5000
    experiments: tuple[str, ...] = ()  # names from bloodgen.study.experiments.EXPERIMENTS
    # The diffusion-classifier experiment's sizes (EvalConfig fields: n_test, n_val, n_anomaly, ...).
    diffusion_classifier: dict = field(default_factory=dict)
    # The prototypes experiment's budget (bloodgen.improve.budgets.PRESETS); None: the train preset's name.
    prototypes_budget: str | None = None
    # Classifier seeds of the domain-shift experiment (each trains S_A and one oracle per shifted domain).
    domain_shift_seeds: int = 3
    # Images per side of the translation experiment's FID/KID of each variant (0: paired SSIM/PSNR only).
    translation_fid_n: int = 2000
    # The low-data experiment's sizes (bloodgen.classify.low_data.LowDataConfig fields); empty: its defaults.
    low_data: dict = field(default_factory=dict)
    # The cell-features experiment: "input" (inception or pixels), "view", "methods", "seeds" (forest seeds) and
    # AEOptions fields (bloodgen.cellfeatures.options); empty: Inception input, every method, the defaults.
    cell_features: dict = field(default_factory=dict)
    # What the preset is for, printed at the top of the report (e.g. why its budget is what it is).
    note: str = ""
    # One draw per training run: run s is evaluated on protocol seed s alone (N generated vs N real), so the
    # protocol's repetitions are the training seeds and the mean ± std covers both sources of variance.
    # The floor is computed at the same seeds. Off: every run is evaluated on seeds 0..eval_seeds-1.
    draw_per_run: bool = False
    # Trainings run at once, each in its own process (small networks leave most of a GPU idle); 1: in turn.
    train_jobs: int = 1

    def as_dict(self) -> dict:
        return asdict(self)

    def run_eval_seeds(self, train_seed: int) -> list[int]:
        """The protocol seeds that evaluate the run of `train_seed`."""
        return [train_seed] if self.draw_per_run else list(range(self.eval_seeds))

    def floor_seeds(self) -> list[int]:
        return list(range(self.train_seeds if self.draw_per_run else self.eval_seeds))


# The diffusion-classifier experiment sized for a CPU: ~5 ms per network evaluation of a small U-Net on one core.
QUICK_DIFFUSION_CLASSIFIER = {"n_test": 60, "n_val": 24, "n_anomaly": 45, "n_corrupt": 10, "severities": (2, 5),
                              "no_prune_draws": 40, "heatmap_draws": 40, "options": {"max_draws": 40}}
# The low-data experiment as a smoke test: one regime, one repetition, a few images and draws.
# The cell-features experiment as a smoke test: pixel input, three methods, a short autoencoder, one forest seed.
QUICK_CELL_FEATURES = {"input": "pixels", "methods": ("raw", "ae", "mmd"), "seeds": 1, "steps": 40, "save_every": 20,
                       "log_every": 10, "batch_size": 64}
QUICK_LOW_DATA = {"per_class": (10,), "repeats": 1, "test_per_class": 5, "val_per_class": 2, "checkpoints": 2,
                  "resnet_steps": 20, "options": {"max_draws": 40}}

PRESETS = {
    # 13 minutes on 2 CPU cores where InceptionV3 embeds ~20 images/s, 35 where it embeds 7 (docs/study.md),
    # evaluation included: a reduced protocol, stated as such in the report. Training steps are cut below the
    # model quick presets (about a minute per family on the faster cores) so that training, sampling and
    # feature extraction fit together.
    "quick": StudyPreset(train_preset="quick", train_seeds=1, n_images=500, eval_seeds=2,
                         config_overrides={name: {"steps": spec.quick_study_steps} for name, spec in REGISTRY.items()
                                           if spec.quick_study_steps},
                         diffusion_classifier=QUICK_DIFFUSION_CLASSIFIER, domain_shift_seeds=1, translation_fid_n=0,
                         low_data=QUICK_LOW_DATA, cell_features=QUICK_CELL_FEATURES),
    # The largest budget that fits about two and a half hours on 2 CPU cores, for a machine without a GPU:
    # the models' cpu presets (15-55 minutes of training per family), one training seed, and the quick
    # preset's reduced protocol (500 vs 500 images, 2 seeds), because InceptionV3 embeds only 7-20 images/s
    # on 2 cores and the floor alone needs thousands of real images.
    # `results/` holds this study when no GPU was available to run "full".
    "cpu": StudyPreset(train_preset="cpu", train_seeds=1, n_images=500, eval_seeds=2, prototypes_budget="quick",
                       diffusion_classifier=QUICK_DIFFUSION_CLASSIFIER, domain_shift_seeds=1, translation_fid_n=500,
                       note="The cpu preset is the largest budget that fits about two and a half hours on 2 CPU "
                            "cores, for a machine without a GPU: small networks trained for 15-55 minutes each, one "
                            "training seed, a reduced protocol (500 vs 500 images, 2 seeds; KID is unbiased at this "
                            "size, FID is not). Its figures rank the families at this budget; they are not what "
                            "each family reaches with its full recipe on a GPU (`--preset full`)."),
    # The protocol of record on 2 CPU cores: the models' record presets (recipes chosen for quality per
    # CPU-hour, 30-120 minutes of training each), 5 training seeds, each run evaluated on its own draw of
    # 10,000 generated vs 10,000 real images. About 20 CPU-hours in all: run it in slices with --max-minutes
    # and commit the finished units (docs/study.md, "The protocol of record").
    "record": StudyPreset(train_preset="record", train_seeds=5, n_images=10000, eval_seeds=1, draw_per_run=True,
                          note="The record preset is the protocol of record (10,000 generated vs 10,000 real "
                               "images, 5 repetitions) on a CPU budget: each family's record recipe "
                               "(src/bloodgen/configs, docs/models.md), trained once per seed 0-4, and each run "
                               "evaluated on its own draw (protocol seed = training seed), so mean ± std is "
                               "over 5 independent trainings and 5 real draws."),
    # The same protocol in 10 minutes of one large GPU (benchmarks/gpu_record.sh): larger networks, every
    # training of the study at once in its own process.
    "gpu": StudyPreset(train_preset="gpu", train_seeds=5, n_images=10000, eval_seeds=1, draw_per_run=True,
                       train_jobs=20, prototypes_budget="full",
                       note="The gpu preset is the protocol of record (10,000 vs 10,000 images, 5 repetitions) "
                            "sized for about 10 minutes of one H200: each family's gpu recipe trained once per seed "
                            "0-4 (all trainings at once, one process each), each run evaluated on its own draw "
                            "(protocol seed = training seed)."),
    # The protocol of record: 10,000 vs 10,000 images, 5 sampling seeds, 5 training seeds per family.
    "full": StudyPreset(train_preset="full", train_seeds=5, n_images=10000, eval_seeds=5, utility=True,
                        experiments=("prototypes", "diffusion-classifier"),
                        diffusion_classifier={"n_test": 3421, "n_val": 500, "n_anomaly": 933, "n_corrupt": 300}),
}
