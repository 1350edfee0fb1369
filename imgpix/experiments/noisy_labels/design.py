"""The noisy-label experiment's design, as data: the models trained per seed (:data:`MODELS`), the conditions
each model is evaluated under (:class:`Condition`, each with its role), the claims (:class:`Claim`), the
budgets (:data:`PRESETS`) and :class:`NoiseConfig`, everything that determines the results.

A condition's ``name`` is only displayed (table rows, CSV, plots); code selects conditions by ``role``
and ``main``, never by parsing a name.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace

from ...config import TrainConfig
from ...data.synthetic import PRESETS as SCENE_PRESETS
from ...labels import DEFAULT_TAU, LabelSource, check_tau
from .. import splits
from ..stats import N_RESAMPLES, QUICK_RESAMPLES

TAUS = tuple(round(0.05 * i, 2) for i in range(21))
THEORY_MS = (1, 2, 3, 5)  # Case 1 outlier counts of the Eq. 10 regression
AMBIGUITIES = tuple(i / 4 for i in range(5))  # 0 to 1 in quarters
MODELS = {  # labeler: trained inside this model; the others borrow the unfused model's (one per seed)
    "unfused": {"fusion": None, "train_labels": "none", "labeler": "tiny"},
    "fused": {"fusion": "dot", "train_labels": "oracle", "labeler": None},
    "fused-labeler": {"fusion": "dot", "train_labels": "labeler", "labeler": "tiny"},
    "fused-noisy": {"fusion": "dot", "train_labels": "noisy", "labeler": None},
}
BASELINE = "unfused"  # the model trained without labels: the fair baseline
# images per epoch x epochs at batch_size: the budget of every model (segmenter updates); the labeler, a
# separate network, trains in the first labeler_epochs epochs only. validation/README.md shows how flat
# each model's learning curve ends at the default budget.
# Real photographs (any folder dataset): every training image each epoch, scaled so that the longer side is
# ``resize`` pixels, random ``crop_size`` crops; num_val / train_val None: every image of the split.
PRESETS = {
    "default": {"num_train": 1024, "epochs": 48, "labeler_epochs": 12, "batch_size": 16, "num_val": 256,
                "train_val": 64, "image_size": 64},
    "quick": {"num_train": 128, "epochs": 2, "labeler_epochs": 2, "batch_size": 16, "num_val": 64, "train_val": 16,
              "image_size": 64},
    "real-default": {"num_train": None, "epochs": 60, "labeler_epochs": 15, "batch_size": 16, "num_val": None,
                     "train_val": None, "resize": 96, "crop_size": 64},
    "real-quick": {"num_train": 48, "epochs": 2, "labeler_epochs": 2, "batch_size": 16, "num_val": 24,
                   "train_val": 16, "resize": 64, "crop_size": 48},
}
BUDGET_FACTOR = 2  # the convergence check's budget, in multiples of the run's epochs
LR_SCHEDULE = "cosine"  # the segmenter's, in every model: each run ends on its budget's plateau, not mid-swing
ROLES = ("none", "oracle", "case1", "case2", "case3", "labeler", "confusable", "distant")


@dataclass(frozen=True)
class Condition:
    """The labels a model is evaluated with: its display ``name``, its ``role`` (one of :data:`ROLES`: what
    the claims and the theory tests read it as), its label ``source``, and whether it is a row of the
    results table (``main``; the others serve the theory tests)."""

    name: str
    role: str
    source: LabelSource
    main: bool = False


@dataclass(frozen=True)
class Claim:
    """Condition B against A on the same images, each a (model, main condition's role); ``sign`` +1 claims
    B > A, -1 claims B < A."""

    name: str
    a: tuple[str, str]
    b: tuple[str, str]
    sign: int

    @property
    def expected(self) -> str:
        return "b > a" if self.sign > 0 else "b < a"


COMPARISONS = (
    Claim("oracle_beats_baseline", (BASELINE, "none"), ("fused", "oracle"), +1),
    Claim("posthoc_oracle_beats_baseline", (BASELINE, "none"), (BASELINE, "oracle"), +1),
    Claim("labeler_beats_baseline", (BASELINE, "none"), ("fused", "labeler"), +1),
    Claim("labeler_trained_beats_baseline", (BASELINE, "none"), ("fused-labeler", "labeler"), +1),  # the paper's Fig. 4
    Claim("posthoc_labeler_beats_baseline", (BASELINE, "none"), (BASELINE, "labeler"), +1),
    Claim("case1_below_oracle", ("fused", "oracle"), ("fused", "case1"), -1),
    Claim("case2_below_oracle", ("fused", "oracle"), ("fused", "case2"), -1),
    Claim("case3_below_case2", ("fused", "case2"), ("fused", "case3"), -1),
)
CLAIMS = tuple(claim.name for claim in COMPARISONS)
HEADLINE = ("labeler_trained_beats_baseline", "labeler_beats_baseline", "posthoc_labeler_beats_baseline",
            "oracle_beats_baseline")


@dataclass(frozen=True)
class NoiseConfig:
    """Everything that determines the results (output paths, progress and --force do not)."""

    m: int = 3
    k: int = 1
    tau: float = DEFAULT_TAU
    seeds: int = 3
    quick: bool = False
    models: tuple[str, ...] = ("unfused", "fused", "fused-labeler")  # fused-labeler: the paper's protocol
    data: str = "synthetic"
    root: str | None = None
    classes: str | None = None
    background: str | None = "auto"
    scene_preset: str = "voc"
    ambiguity: float = 1.0
    ambiguity_sweep: bool = False
    protect_background: bool = True
    generator: bool = False
    model: str = "tiny"  # the segmenter of every model (imgpix's, torchvision's or a factory: see imgpix.models)
    labeler_model: str = "tiny"  # the image labeler, where a model trains one
    epochs: int | None = None
    num_train: int | None = None
    num_val: int | None = None
    image_size: int | None = None
    resize: int | None = None
    eval_split: str | None = None  # None: test on real data, val on synthetic scenes
    budget_check: bool = False  # also train seed 0 of every model at BUDGET_FACTOR x the epochs
    batch_size: int | None = None
    lr: float | None = None  # the segmenter's peak SGD learning rate (None: TrainConfig's)
    seed: int = 0  # the base seed: seed i of the run trains with seed + i
    device: str = "cpu"

    def __post_init__(self):
        if self.data != "synthetic" and not self.root:
            raise ValueError(f"--data {self.data} needs --root DIR (the dataset folder)")
        if self.scene_preset not in SCENE_PRESETS:
            raise ValueError(f"scene_preset must be one of {sorted(SCENE_PRESETS)}, got {self.scene_preset!r}")
        n = self.num_classes
        if not 0 <= self.m <= n - 2:
            raise ValueError(f"m must satisfy 0 <= m <= {n - 2} (object classes an image can lack), got {self.m}")
        if not 1 <= self.k <= n - 1:
            raise ValueError(f"k must satisfy 1 <= k <= {n - 1} (object classes), got {self.k}")
        self._check_case2()
        check_tau(self.tau)
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        unknown = set(self.models) - set(MODELS)
        if unknown or BASELINE not in self.models:
            raise ValueError(f"models must include {BASELINE!r} (the baseline) and come from {list(MODELS)}, "
                             f"got {list(self.models)}")
        if not 0 <= self.ambiguity <= 1:
            raise ValueError(f"ambiguity must lie in [0, 1], got {self.ambiguity}")
        for name in ("epochs", "num_train", "num_val"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size is not None and self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if self.real and self.image_size is not None:
            raise ValueError("--image-size is the synthetic scenes' side; real images are scaled with --resize")
        if not self.real and self.resize is not None:
            raise ValueError("--resize scales real images; the synthetic scenes' side is --image-size")
        splits.check_disjoint(self.real, self.eval_split)
        if self.resize is not None and self.resize < 16:
            raise ValueError(f"resize must be >= 16, got {self.resize}")
        if (self.budget["num_train"] or self.budget["batch_size"]) < self.budget["batch_size"]:
            raise ValueError(f"num_train must be >= the batch size {self.budget['batch_size']}, "
                             f"got {self.budget['num_train']}")
        for model in self.models:  # every training setting checked before anything runs
            train_config(self, model, 0, self.ambiguity)

    def _check_case2(self) -> None:
        """Refuse a k at which Case 2 keeps every true label of every synthetic image (it would be the oracle)."""
        if self.data != "synthetic":
            return
        most = len(SCENE_PRESETS[self.scene_preset].counts) + (0 if self.protect_background else 1)
        if self.k >= most:
            counted = "object classes" if self.protect_background else "classes, background included"
            raise ValueError(f"k = {self.k}: the {self.scene_preset!r} scenes hold at most {most} {counted}, so "
                             f"Case 2 would keep every true label of every image and equal the oracle; "
                             f"choose k < {most}")

    @property
    def real(self) -> bool:
        return self.data != "synthetic"

    @property
    def budget(self) -> dict:
        name = "quick" if self.quick else "default"
        preset = dict(PRESETS[f"real-{name}" if self.real else name])
        for name in ("epochs", "num_train", "num_val", "image_size", "resize", "batch_size"):
            if getattr(self, name) is not None:
                preset[name] = getattr(self, name)
        return preset

    @property
    def evaluated_split(self) -> str:
        """The split every reported number comes from (by default ``test`` on real data)."""
        return splits.evaluated_split(self.real, self.eval_split)

    @property
    def select_split(self) -> str:
        """The split of the learning curves and every choice: never the evaluated one."""
        return splits.select_split(self.real)

    @property
    def resamples(self) -> int:
        """Bootstrap resamples and permutations of every statistic of the run."""
        return QUICK_RESAMPLES if self.quick else N_RESAMPLES

    @property
    def num_classes(self) -> int:
        return self.base_config().info.num_classes

    @property
    def protected(self) -> tuple[int, ...]:
        """The dataset's background class, when it has one and it is protected."""
        return self.base_config().protected if self.protect_background else ()

    def base_config(self) -> TrainConfig:
        """The data settings every model of this run shares."""
        return TrainConfig(data=self.data, root=self.root, classes=self.classes, background=self.background)

    def identity(self) -> dict:
        return {**asdict(self), "models": list(self.models), "budget": self.budget, "lr_schedule": LR_SCHEDULE}


def train_config(cfg: NoiseConfig, model: str, seed: int, ambiguity: float) -> TrainConfig:
    """The TrainConfig of ``model`` for ``seed``: every model gets the same budget and scenes.

    channels_last: faster convolutions on CPU (``benchmarks/cpu_settings.py``); a runtime setting, so it is
    not part of the model cache key."""
    budget = cfg.budget
    labels = MODELS[model]["train_labels"]
    if labels == "noisy":
        labels = f"noisy:m={cfg.m},k={cfg.k}"
    data = ({"resize": budget["resize"], "crop_size": budget["crop_size"]} if cfg.real else
            {"image_size": budget["image_size"], "scene_preset": cfg.scene_preset, "ambiguity": ambiguity})
    labeler = cfg.labeler_model if MODELS[model]["labeler"] else None
    if cfg.lr is not None:
        data["lr"] = cfg.lr
    return replace(cfg.base_config(), model=cfg.model, fusion=MODELS[model]["fusion"], labeler=labeler,
                   train_labels=labels, tau=cfg.tau,
                   generator=cfg.generator, epochs=budget["epochs"], labeler_epochs=budget["labeler_epochs"],
                   lr_schedule=LR_SCHEDULE, batch_size=budget["batch_size"], num_train=budget["num_train"],
                   num_val=budget["train_val"], eval_split=cfg.select_split, seed=cfg.seed + seed, device=cfg.device,
                   channels_last=True, progress=False, **data)


def ambiguities(cfg: NoiseConfig) -> list[float]:
    """The scene ambiguities models are trained at: the run's, and with the sweep :data:`AMBIGUITIES` too."""
    return sorted({*AMBIGUITIES, cfg.ambiguity}) if cfg.ambiguity_sweep else [cfg.ambiguity]


def _noise_seed(seed: int, *parts) -> int:
    digest = hashlib.sha256(f"imgpix-noise:{seed}:{parts}".encode()).hexdigest()
    return int(digest[:15], 16)


def conditions(cfg: NoiseConfig, seed: int) -> tuple[Condition, ...]:
    """Every condition of ``seed``, the results table's first. Noise depends on (seed, k) only: every model
    sees the same labels, a larger m adds outliers to a smaller m's, and Case 3 adds outliers to Case 2's
    kept classes."""
    def noisy(m: int, k: int | None, tag: str = "") -> LabelSource:  # one stream per k: case3 = case2 + outliers
        return LabelSource("noisy", m=m, k=k, seed=_noise_seed(cfg.seed + seed, k, tag), protected=cfg.protected,
                           tag=tag)

    found = [Condition("unfused", "none", LabelSource("none"), True),
             Condition("oracle", "oracle", LabelSource("oracle"), True),
             Condition(f"case1 (m={cfg.m})", "case1", noisy(cfg.m, None), True),
             Condition(f"case2 (k={cfg.k})", "case2", noisy(0, cfg.k), True),
             Condition(f"case3 (m={cfg.m}, k={cfg.k})", "case3", noisy(cfg.m, cfg.k), True),
             Condition(f"labeler@{cfg.tau:g}", "labeler", LabelSource("labeler", tau=cfg.tau, protected=cfg.protected),
                       True)]
    found += [Condition(f"case1 (m={m})", "case1", noisy(m, None)) for m in THEORY_MS if m != cfg.m]
    m = max(cfg.m, 1)
    found += [Condition(f"case1 (m={m}) {tag}", tag, noisy(m, None, tag)) for tag in ("confusable", "distant")]
    return tuple(found)


def main_condition(cfg: NoiseConfig, role: str) -> Condition:
    """The results table's condition of ``role``."""
    return next(c for c in conditions(cfg, 0) if c.main and c.role == role)


def condition_names(cfg: NoiseConfig, role: str | None = None, main: bool | None = None) -> list[str]:
    """Names of the conditions of ``role`` (any role when None), of the results table or not (either when None)."""
    return [c.name for c in conditions(cfg, 0)
            if (role is None or c.role == role) and (main is None or c.main == main)]


def scaled(cfg: NoiseConfig, factor: int) -> NoiseConfig:
    """``cfg`` at ``factor`` times its epochs, one seed, no further check."""
    return replace(cfg, epochs=factor * cfg.budget["epochs"], seeds=1, budget_check=False)
