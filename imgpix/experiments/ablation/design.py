"""The ablations' design, as data: the variants trained per seed (:data:`VARIANTS`), the tables' rows
(:class:`Row`, :data:`TABLES`: each row declared once, with its reference and the paper's figure), the
budgets (:data:`PRESETS`) and :class:`AblationConfig`, everything that determines the results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ...config import TrainConfig
from ...data.synthetic import PRESETS as SCENE_PRESETS
from ...fusion import LOGIT_ADD_BETA
from ...labels import DEFAULT_TAU, LabelSource
from ..stats import N_RESAMPLES, QUICK_RESAMPLES

VARIANTS = {  # TrainConfig settings beyond the shared ones of train_config()
    "baseline": {"fusion": None, "train_labels": "none"},
    "label": {"fusion": "dot"},
    "generator": {"fusion": None, "train_labels": "none", "generator": True},
    "full": {"fusion": "dot", "generator": True, "labeler": "tiny"},
    "discriminator": {"fusion": None, "train_labels": "none", "discriminator": True},
    "add": {"fusion": "add"},
    "logit_add": {"fusion": "logit_add"},
}
# epochs: of the variants with two segmenter updates per iteration (the others train twice as many);
# validation/README.md shows how flat each variant's learning curve ends at the default budget
PRESETS = {
    "default": {"epochs": 32, "num_train": 512, "batch_size": 8, "image_size": 32, "num_val": 256, "train_val": 64},
    "quick": {"epochs": 2, "num_train": 32, "batch_size": 8, "image_size": 32, "num_val": 32, "train_val": 16},
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
        Row("+ image label", "label", "oracle", "baseline"),
        Row("+ generator", "generator", "none", "baseline"),
        Row("+ image label + generator", "full", "oracle", "baseline"),
        Row("+ image label + generator, labeler labels at test", "full", "labeler", "baseline"),
    )),
    "table2": ("Table 2: no image labels (train or test)", (
        Row("baseline", "baseline", "none", paper=PAPER_BASELINE),
        Row("+ discriminator", "discriminator", "none", "baseline", 60.6),
        Row("+ generator", "generator", "none", "baseline", 63.8),
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
PAPER_NOTE = ("Paper figures: FCN-32s baseline 59.4, + discriminator 60.6, + generator 63.8 (Table 2), addition 66.3 "
              "(Table 3); the paper's Table 1 rows beyond the baseline are not given here.")


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
    tau: float = DEFAULT_TAU
    model: str = "tiny"  # the segmenter of every row (imgpix's, torchvision's or a factory: see imgpix.models)
    labeler_model: str = "tiny"  # the image labeler of the rows that train one
    device: str = "cpu"

    def __post_init__(self):
        if self.seeds is not None and self.seeds < 2:
            raise ValueError(f"seeds must be >= 2 (mean ± sd and paired tests over seeds), got {self.seeds}")
        for name in ("epochs", "num_train", "num_val"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.image_size is not None and self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if self.num_train is not None and self.num_train < self.budget["batch_size"]:
            raise ValueError(f"num_train must be >= the batch size {self.budget['batch_size']}, got {self.num_train}")
        if self.scene_preset not in SCENE_PRESETS:
            raise ValueError(f"scene_preset must be one of {sorted(SCENE_PRESETS)}, got {self.scene_preset!r}")
        for variant in VARIANTS:  # every training setting checked before anything runs
            plan(self, variant, 0)

    @property
    def budget(self) -> dict:
        budget = dict(PRESETS["quick" if self.quick else "default"])
        for name in ("epochs", "num_train", "num_val", "image_size"):
            if getattr(self, name) is not None:
                budget[name] = getattr(self, name)
        budget["train_val"] = min(budget["train_val"], budget["num_val"])
        return budget

    @property
    def seed_count(self) -> int:
        return self.seeds if self.seeds is not None else DEFAULT_SEEDS["quick" if self.quick else "default"]

    @property
    def resamples(self) -> int:
        """Bootstrap resamples and permutations of every statistic of the run."""
        return QUICK_RESAMPLES if self.quick else N_RESAMPLES

    def identity(self) -> dict:
        return {**asdict(self), "seeds": self.seed_count, "budget": self.budget, "logit_add_beta": LOGIT_ADD_BETA,
                "lr_schedule": LR_SCHEDULE}


def train_config(cfg: AblationConfig, variant: str, seed: int, epochs: int = 1, progress: bool = True) -> TrainConfig:
    """The TrainConfig of ``variant`` for ``seed`` (``epochs`` as given: see :func:`plan`)."""
    budget = cfg.budget
    shared = {"model": cfg.model, "labeler": None, "generator": False, "discriminator": False, "procedure": "3step",
              "train_labels": "oracle", "tau": cfg.tau, "batch_size": budget["batch_size"],
              "num_train": budget["num_train"], "num_val": budget["train_val"], "image_size": budget["image_size"],
              "scene_preset": cfg.scene_preset, "lr_schedule": LR_SCHEDULE, "seed": seed, "device": cfg.device,
              "progress": progress}
    settings = {**shared, **VARIANTS[variant]}
    if settings["labeler"]:
        settings["labeler"] = cfg.labeler_model
    return TrainConfig(**settings, epochs=epochs)


def plan(cfg: AblationConfig, variant: str, seed: int, progress: bool = True) -> TrainConfig:
    """``variant``'s TrainConfig with the epochs that give every variant the same segmenter updates,
    ``2 x cfg.budget["epochs"] x iterations per epoch``: the budget epochs of a variant with two updates
    per iteration, twice as many epochs of one with one update."""
    one_epoch = train_config(cfg, variant, seed, 1, progress)
    per_iteration = one_epoch.updates_per_iteration
    if 2 % per_iteration:
        raise ValueError(f"{variant}: {per_iteration} segmenter updates per iteration do not divide the budget")
    return replace(one_epoch, epochs=2 * cfg.budget["epochs"] // per_iteration)


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
