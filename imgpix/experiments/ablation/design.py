"""The ablations' design, as data: the variants trained per seed (:data:`VARIANTS`) and how each is matched
to the baseline (:data:`EPOCH_MATCHED`), the settings tuned on the selection split (:data:`TUNING`), the
tables' rows (:class:`Row`, :data:`TABLES`: each row declared once, with its reference and the paper's
figure), the budgets (:data:`PRESETS`) and :class:`AblationConfig`, everything that determines the results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ...config import TrainConfig
from ...data.synthetic import PRESETS as SCENE_PRESETS
from ...fusion import LOGIT_ADD_BETA
from ...labels import DEFAULT_TAU, LabelSource
from .. import splits
from ..stats import N_RESAMPLES, QUICK_RESAMPLES

VARIANTS = {  # TrainConfig settings beyond the shared ones of train_config()
    "baseline": {"fusion": None, "train_labels": "none"},
    "label": {"fusion": "dot"},
    "generator": {"fusion": None, "train_labels": "none", "generator": True},
    "generator_epochs": {"fusion": None, "train_labels": "none", "generator": True},
    "full": {"fusion": "dot", "generator": True, "labeler": "tiny"},
    "discriminator": {"fusion": None, "train_labels": "none", "discriminator": True},
    "add": {"fusion": "add"},
    "logit_add": {"fusion": "logit_add"},
}
# How each variant's budget is matched to the baseline's (see plan()): by segmenter updates, or by epochs
# (images seen; also the paper's iterations, as an iteration reads one batch in both procedures).
EPOCH_MATCHED = ("generator_epochs",)
# Swept on seed 0 and the selection split before the reported cells train (see tune()): the variant, the
# TrainConfig field, its values (the first: imgpix's default) and the variants that use the chosen value.
TUNING = {
    "generator": ("aux_weight", (1.0, 0.1, 10.0), ("generator", "generator_epochs", "full")),
    "discriminator": ("aux_weight", (1.0, 0.1, 10.0), ("discriminator",)),
    "add": ("lr", (0.05, 0.2, 0.8), ("add",)),
}
# epochs: of the variants with two segmenter updates per iteration (the others train twice as many).
# Synthetic scenes: one fixed training set (a finite set can be over-fitted, as in the paper's 10,582 images).
# Real photographs: every training image each epoch, the longer side scaled to ``resize``, ``crop_size`` crops.
PRESETS = {
    "default": {"epochs": 16, "num_train": 256, "batch_size": 8, "image_size": 32, "num_val": 256, "train_val": 64},
    "quick": {"epochs": 2, "num_train": 32, "batch_size": 8, "image_size": 32, "num_val": 32, "train_val": 16},
    "real-default": {"epochs": 15, "num_train": None, "batch_size": 16, "num_val": None, "train_val": None,
                     "resize": 64, "crop_size": 48},
    "real-quick": {"epochs": 1, "num_train": 32, "batch_size": 16, "num_val": 16, "train_val": 16, "resize": 48,
                   "crop_size": 32},
}
DEFAULT_SEEDS = {"default": 3, "quick": 2}
LR_SCHEDULE = "cosine"  # the segmenter's, in every variant: each run ends on its budget's plateau, not mid-swing


@dataclass(frozen=True)
class Row:
    """A table row: ``variant`` evaluated with test ``labels`` (none / oracle / labeler), fused with its own
    operator or with ``fusion`` (the same trained net, another operator); tested against ``reference``."""

    name: str
    variant: str
    labels: str
    reference: str | None = None  # the row it is compared with; None: the table's reference row
    paper: float | None = None  # the paper's MIOU (%), when known
    fusion: str | None = None

    @property
    def spec(self) -> str:
        """The evaluation this row reads: test labels, plus the test-time operator when overridden."""
        return self.labels + (f"+{self.fusion}" if self.fusion else "")


DOT = "dot P·L"
PAPER_BASELINE = 59.4  # FCN-32s, PASCAL VOC 2011 val (the paper's Tables 1 and 2)
TABLES = {
    "table1": ("Table 1: components (fused rows: oracle image labels at test, the paper's VOC 2011 val protocol)", (
        Row("baseline", "baseline", "none", paper=PAPER_BASELINE),
        Row("+ image label", "label", "oracle", "baseline", 74.9),
        Row("+ generator", "generator", "none", "baseline", 63.8),
        Row("+ image label + generator", "full", "oracle", "baseline", 75.7),
        Row("+ image label + generator, labeler labels at test", "full", "labeler", "baseline"),
    )),
    "table2": ("Table 2: no image labels (train or test)", (
        Row("baseline", "baseline", "none", paper=PAPER_BASELINE),
        Row("+ discriminator", "discriminator", "none", "baseline", 60.6),
        Row("+ generator", "generator", "none", "baseline", 63.8),
    )),
    "generator": ("Generator matchings: the same generator against the baseline at equal segmenter updates, and at "
                  "equal epochs (equal images seen and equal iterations, the paper's matching: twice the updates)", (
        Row("baseline", "baseline", "none", paper=PAPER_BASELINE),
        Row("+ generator, updates matched", "generator", "none", "baseline", 63.8),
        Row("+ generator, epochs / iterations matched", "generator_epochs", "none", "baseline", 63.8),
    )),
    "table3": ("Table 3: fusion operator, oracle labels (trained with it, or applied at test to the dot-trained net)", (
        Row("baseline", "baseline", "none", paper=PAPER_BASELINE),
        Row(DOT, "label", "oracle", "baseline"),
        Row("addition (P+L)/(1+n)", "add", "oracle", "baseline", 66.3),
        Row(f"logit addition z+{LOGIT_ADD_BETA:g}·L", "logit_add", "oracle", "baseline"),
        Row("addition at test, dot-trained net", "label", "oracle", DOT, fusion="add"),
        Row("logit addition at test, dot-trained net", "label", "oracle", DOT, fusion="logit_add"),
    )),
}
PAPER_NOTE = ("Paper figures (PASCAL VOC 2011 val, FCN-32s on VGG16): baseline 59.4, + image label 74.9, + generator "
              "63.8, + image label + generator 75.7 (Table 1); + discriminator 60.6 (Table 2); addition 66.3 "
              "(Table 3). The paper gives no figure for labeler labels at test or for logit addition.")
PAPER_SETTINGS = (
    "The paper's optimisation, and how imgpix translates it: Caffe SGD at learning rate 1e-10 for 100,000 "
    "iterations on a cross-entropy summed over the pixels of an image (FCN's unnormalised loss, with FCN's "
    "momentum 0.99), and Adam at 1e-10 for its generator. imgpix averages every loss over the pixels, so the "
    "summed-loss rate 1e-10 over the about 1.9e5 pixels of a 500x375 VOC image is a per-pixel-mean rate of "
    "about 1.9e-5, an effective step lr / (1 - momentum) of about 1.9e-3; imgpix uses SGD at 0.05 with "
    "momentum 0.9 (effective 0.5) and a cosine decay over a budget two CPU cores can train, with tiny "
    "networks, and Adam at 1e-3 for the generator and the discriminator (at 1e-10 on a mean loss they would "
    "not move). The auxiliary weight (generator and discriminator) and the addition fusion's learning rate are "
    "not taken from the paper but chosen on the selection split (the tuning table). The paper matched "
    "iterations, so its generator arms had twice the segmenter updates of its baseline: the generator-"
    "matchings table reports both matchings.")


@dataclass(frozen=True)
class AblationConfig:
    """Everything that determines the results (output paths, progress and --force do not)."""

    seeds: int | None = None
    quick: bool = False
    epochs: int | None = None
    num_train: int | None = None
    num_val: int | None = None
    image_size: int | None = None
    scene_preset: str = "voc"
    fixed_train: bool = True  # synthetic scenes: one fixed training set (False: fresh scenes every epoch)
    data: str = "synthetic"
    root: str | None = None
    classes: str | None = None
    background: str | None = "auto"
    resize: int | None = None
    eval_split: str | None = None  # None: test on real data, val on synthetic scenes
    tau: float = DEFAULT_TAU
    tune: bool = True  # sweep TUNING on the selection split; False: imgpix's defaults (each grid's first value)
    batch_size: int | None = None
    lr: float | None = None  # the segmenter's peak SGD learning rate (None: TrainConfig's; add's is tuned)
    seed: int = 0  # the base seed: seed i of the run trains with seed + i
    model: str = "tiny"  # the segmenter of every row (imgpix's, torchvision's or a factory: see imgpix.models)
    labeler_model: str = "tiny"  # the image labeler of the rows that train one
    device: str = "cpu"

    def __post_init__(self):
        if self.data != "synthetic" and not self.root:
            raise ValueError(f"--data {self.data} needs --root DIR (the dataset folder)")
        if self.seeds is not None and self.seeds < 2:
            raise ValueError(f"seeds must be >= 2 (mean ± sd and paired tests over seeds), got {self.seeds}")
        for name in ("epochs", "num_train", "num_val"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.image_size is not None and self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if self.real and self.image_size is not None:
            raise ValueError("--image-size is the synthetic scenes' side; real images are scaled with --resize")
        if not self.real and self.resize is not None:
            raise ValueError("--resize scales real images; the synthetic scenes' side is --image-size")
        if self.resize is not None and self.resize < 16:
            raise ValueError(f"resize must be >= 16, got {self.resize}")
        if (self.budget["num_train"] or self.budget["batch_size"]) < self.budget["batch_size"]:
            raise ValueError(f"num_train must be >= the batch size {self.budget['batch_size']}, "
                             f"got {self.budget['num_train']}")
        if self.scene_preset not in SCENE_PRESETS:
            raise ValueError(f"scene_preset must be one of {sorted(SCENE_PRESETS)}, got {self.scene_preset!r}")
        splits.check_disjoint(self.real, self.eval_split)
        for variant in VARIANTS:  # every training setting checked before anything runs
            plan(self, variant, 0)

    @property
    def real(self) -> bool:
        return self.data != "synthetic"

    @property
    def budget(self) -> dict:
        name = "quick" if self.quick else "default"
        budget = dict(PRESETS[f"real-{name}" if self.real else name])
        for name in ("epochs", "num_train", "num_val", "image_size", "resize", "batch_size"):
            if getattr(self, name) is not None:
                budget[name] = getattr(self, name)
        if budget["train_val"] is not None and budget["num_val"] is not None:
            budget["train_val"] = min(budget["train_val"], budget["num_val"])
        return budget

    @property
    def evaluated_split(self) -> str:
        return splits.evaluated_split(self.real, self.eval_split)

    @property
    def select_split(self) -> str:
        return splits.select_split(self.real)

    @property
    def seed_count(self) -> int:
        return self.seeds if self.seeds is not None else DEFAULT_SEEDS["quick" if self.quick else "default"]

    @property
    def resamples(self) -> int:
        """Bootstrap resamples and permutations of every statistic of the run."""
        return QUICK_RESAMPLES if self.quick else N_RESAMPLES

    def identity(self) -> dict:
        return {**asdict(self), "seeds": self.seed_count, "budget": self.budget, "logit_add_beta": LOGIT_ADD_BETA,
                "lr_schedule": LR_SCHEDULE, "tuning": {v: [f, list(g)] for v, (f, g, _) in TUNING.items()},
                "splits": {"evaluated": self.evaluated_split, "selection": self.select_split}}


def train_config(cfg: AblationConfig, variant: str, seed: int, epochs: int = 1, progress: bool = True,
                 settings: dict | None = None) -> TrainConfig:
    """The TrainConfig of ``variant`` for ``seed`` (``epochs`` as given: see :func:`plan`), with tuned
    ``settings`` (field: value) on top; its learning curve is measured on the selection split."""
    budget = cfg.budget
    data = ({"data": cfg.data, "root": cfg.root, "classes": cfg.classes, "background": cfg.background,
             "resize": budget["resize"], "crop_size": budget["crop_size"]} if cfg.real else
            {"image_size": budget["image_size"], "scene_preset": cfg.scene_preset, "fixed_train": cfg.fixed_train})
    shared = {"model": cfg.model, "labeler": None, "generator": False, "discriminator": False, "procedure": "3step",
              "train_labels": "oracle", "tau": cfg.tau, "batch_size": budget["batch_size"],
              "num_train": budget["num_train"], "num_val": budget["train_val"], "eval_split": cfg.select_split,
              "lr_schedule": LR_SCHEDULE, "seed": cfg.seed + seed, "device": cfg.device, "progress": progress,
              **({} if cfg.lr is None else {"lr": cfg.lr}), **data}
    merged = {**shared, **VARIANTS[variant], **(settings or {})}
    if merged["labeler"]:
        merged["labeler"] = cfg.labeler_model
    return TrainConfig(**merged, epochs=epochs)


def plan(cfg: AblationConfig, variant: str, seed: int, progress: bool = True,
         settings: dict | None = None) -> TrainConfig:
    """``variant``'s TrainConfig with the epochs of its matching: ``2 x cfg.budget["epochs"]`` for a variant of
    :data:`EPOCH_MATCHED` (the baseline's epochs), else those giving every variant ``2 x budget epochs x
    iterations per epoch`` segmenter updates (the budget epochs of a variant with two updates per iteration,
    twice as many of one with one update)."""
    one_epoch = train_config(cfg, variant, seed, 1, progress, settings)
    if variant in EPOCH_MATCHED:
        return replace(one_epoch, epochs=2 * cfg.budget["epochs"])
    per_iteration = one_epoch.updates_per_iteration
    if 2 % per_iteration:
        raise ValueError(f"{variant}: {per_iteration} segmenter updates per iteration do not divide the budget")
    return replace(one_epoch, epochs=2 * cfg.budget["epochs"] // per_iteration)


def tuned_settings(choices: dict[str, float], variant: str) -> dict:
    """The TrainConfig fields ``variant`` takes from the tuning ``choices`` (swept variant: chosen value)."""
    return {field: choices[swept] for swept, (field, _, users) in TUNING.items()
            if variant in users and swept in choices}


def row_specs(variant: str) -> list[Row]:
    """The distinct evaluations (one Row each, by ``spec``) that the tables read from ``variant``."""
    found = {}
    for _, rows in TABLES.values():
        for row in rows:
            if row.variant == variant:
                found.setdefault(row.spec, row)
    return list(found.values())


def curve_name(variant: str) -> str:
    """The name of ``variant`` in the plots: its first row in the tables."""
    return next(row.name for _, rows in TABLES.values() for row in rows if row.variant == variant)


def label_source(kind: str, tcfg: TrainConfig) -> LabelSource:
    """Test labels of ``kind``; the labeler's keep the dataset's background (not an image-level class)."""
    return LabelSource(kind, tau=tcfg.tau, protected=tcfg.protected if kind == "labeler" else ())
