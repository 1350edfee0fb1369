"""Measure the synthetic scenes: appearance ambiguity, label statistics, the labeler's mAP, the segmenter.

Four sections, each a Markdown table:

* ``appearance`` -- a per-pixel Gaussian classifier (one full-covariance Gaussian per class, class
  priors from pixel counts, ``argmax_c log p(x | c) + log p(c)``) on colour + 7x7 texture features
  (RGB; 7x7 mean and standard deviation of RGB; the 7x7 structure tensor of the luminance as log
  energy and double-angle orientation; log Laplacian-to-gradient energy, a stripe-period cue), fitted
  on train images and scored on val object pixels: accuracy over all classes, over the image's
  true classes only (what exact image labels leave), and of the family, per ``ambiguity``.
* ``presets`` -- per-image label statistics of each preset beside PASCAL VOC 2012's.
* ``labeler`` -- the tiny labeler trained by :class:`imgpix.train.Trainer`'s labeler step (its optimiser,
  one-cycle schedule, seeding and fresh images per epoch); mAP over object classes on val, micro
  precision / recall at ``tau``.
* ``segmenter`` -- tiny FCNs trained by :class:`imgpix.train.Trainer` (no generator): without fusion,
  scored unfused and with oracle labels fused at test time, and with oracle fusion; per ``ambiguity``,
  plus a variant whose dilated top sees twice the largest object (:func:`wide_tiny_fcn`). Receptive
  fields are printed beside the object sizes.

The training settings printed with each table are read from the TrainConfig that trained it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from tqdm import tqdm

from ..config import TrainConfig
from ..data import IGNORE_INDEX, NUM_CLASSES, SyntheticScenes
from ..data.loaders import build_loader, build_split
from ..data.synthetic import PRESETS, family_of
from ..evaluate import Evaluator
from ..labels import DEFAULT_TAU, LabelSource, from_masks
from ..models import ImgPixNet, build_segmenter
from ..train import Trainer
from .report import markdown_rows

SECTIONS = ("appearance", "presets", "labeler", "segmenter")
# PASCAL VOC 2012 label maps (issue 11): val (1,449 images) and trainaug (10,582 images)
VOC = {
    "VOC 2012 val": {"objects": (64.0, 25.8, 8.4, 1.6, 0.2), "mean_n": 2.48, "background": 99.6,
                     "object_fraction": 0.27, "ignored": 5.5},
    "VOC 2012 trainaug": {"objects": (63.7, 27.4, 7.3, 1.3, 0.3), "mean_n": 2.47, "background": None,
                          "object_fraction": 0.31, "ignored": None},
}


@dataclass(frozen=True)
class Sizes:
    """How much each section measures (:meth:`quick` for the smoke test)."""

    ambiguities: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    appearance_images: int = 256
    preset_images: int = 2000
    val_images: int = 256
    labeler_images: int = 1024  # fresh images per epoch
    labeler_runs: tuple[tuple[float, int], ...] = ((1.0, 12), (1.0, 10), (0.0, 12))  # (ambiguity, epochs)
    seg_ambiguities: tuple[float, ...] = (0.0, 1.0)
    seg_images: int = 1024
    seg_epochs: int = 12
    tau: float = DEFAULT_TAU
    progress: bool = True  # the training runs' progress bars (not a size: it changes no number)

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(ambiguities=(0.0, 1.0), appearance_images=16, preset_images=100, val_images=32,
                   labeler_images=32, labeler_runs=((1.0, 1),), seg_images=32, seg_epochs=1)


# -- appearance -------------------------------------------------------------------------------------


def pixel_features(rgb: np.ndarray) -> np.ndarray:
    """[H*W, 13] colour + 7x7 texture features of an RGB image in [0, 1] (float [3,H,W])."""
    def box(a):
        return uniform_filter(a, size=7, mode="reflect")

    mean = np.stack([box(ch) for ch in rgb])
    std = np.sqrt(np.maximum(np.stack([box(ch * ch) for ch in rgb]) - mean**2, 0.0))
    gy, gx = np.gradient(rgb.mean(0))
    jxx, jyy, jxy = box(gx * gx), box(gy * gy), box(gx * gy)
    energy = jxx + jyy + 1e-6
    laplace = box((np.gradient(gx, axis=1) + np.gradient(gy, axis=0)) ** 2)
    planes = [*rgb, *mean, *std, np.log(energy), (jxx - jyy) / energy, 2 * jxy / energy,
              np.log((laplace + 1e-8) / energy)]
    return np.stack(planes).reshape(len(planes), -1).T


def labelled_pixels(ds: SyntheticScenes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and image index of every labelled pixel of ``ds``."""
    feats, labels, image = [], [], []
    for i in range(len(ds)):
        rgb, mask = ds.render(i)
        keep = mask.reshape(-1) != IGNORE_INDEX
        feats.append(pixel_features(rgb)[keep])
        labels.append(mask.reshape(-1)[keep])
        image.append(np.full(int(keep.sum()), i))
    return np.concatenate(feats), np.concatenate(labels), np.concatenate(image)


class GaussianClassifier:
    """``argmax_c log N(x; mu_c, Sigma_c) + log prior_c`` with per-class mean and full covariance."""

    def __init__(self, x: np.ndarray, y: np.ndarray, num_classes: int, ridge: float = 1e-4):
        self.params = []  # None for a class without training pixels (never predicted)
        for c in range(num_classes):
            xc = x[y == c]
            if len(xc) <= x.shape[1]:
                self.params.append(None)
                continue
            chol = np.linalg.cholesky(np.cov(xc.T) + ridge * np.eye(x.shape[1]))
            self.params.append((xc.mean(0), chol, math.log(len(xc) / len(x)) - np.log(np.diag(chol)).sum()))

    def log_posterior(self, x: np.ndarray) -> np.ndarray:
        """Unnormalised log posteriors [P, N]."""
        out = np.full((len(x), len(self.params)), -np.inf)
        for c, fitted in enumerate(self.params):
            if fitted is None:
                continue
            mu, chol, const = fitted
            z = np.linalg.solve(chol, (x - mu).T)
            out[:, c] = const - 0.5 * (z * z).sum(0)
        return out


def appearance_row(preset: str, ambiguity: float, num_train: int, num_val: int) -> list:
    kwargs = {"preset": preset, "ambiguity": ambiguity}
    x, y, _ = labelled_pixels(SyntheticScenes("train", num_train, **kwargs))
    classifier = GaussianClassifier(x, y, NUM_CLASSES)
    val = SyntheticScenes("val", num_val, **kwargs)
    x, y, image = labelled_pixels(val)
    scores = classifier.log_posterior(x)
    present = from_masks(torch.stack([torch.from_numpy(val.mask(i)) for i in range(num_val)]), NUM_CLASSES).numpy()
    obj = y > 0
    guess = scores.argmax(1)[obj]
    restricted = np.where(present[image], scores, -np.inf).argmax(1)[obj]
    same_family = [family_of(int(g), val.family_size) == family_of(int(t), val.family_size) if g > 0 else False
                   for g, t in zip(guess, y[obj])]
    return [preset, ambiguity, float((guess == y[obj]).mean()), float((restricted == y[obj]).mean()),
            float(np.mean(same_family))]


def appearance_section(sizes: Sizes) -> str:
    rows = [appearance_row("voc", a, sizes.appearance_images, sizes.appearance_images // 2)
            for a in sizes.ambiguities]
    header = ["preset", "ambiguity", "object-pixel accuracy", "within true classes", "family accuracy"]
    return (f"Per-pixel Gaussian classifier, {sizes.appearance_images} train / {sizes.appearance_images // 2} "
            "val images (chance within a family of 4: 0.25)\n\n" + markdown_rows(header, rows))


# -- presets ------------------------------------------------------------------------------------------


def label_statistics(ds: SyntheticScenes) -> dict:
    """Objects-per-image distribution (%), mean n with background, background %, object and ignored fractions."""
    counts = np.zeros(6)
    classes = background = object_pixels = labelled = ignored = pairs = 0
    for i in range(len(ds)):
        mask = ds.mask(i)
        present = set(np.unique(mask).tolist()) - {IGNORE_INDEX}
        objects = present - {0}
        counts[min(len(objects), 5)] += 1
        classes += len(present)
        background += 0 in present
        families = [family_of(c, ds.family_size) for c in objects]
        pairs += len(families) != len(set(families))
        valid = mask != IGNORE_INDEX
        object_pixels += int((mask[valid] > 0).sum())
        labelled += int(valid.sum())
        ignored += int((~valid).sum())
    n = len(ds)
    return {"objects": tuple(100 * counts[1:] / n), "none": 100 * counts[0] / n, "mean_n": classes / n,
            "background": 100 * background / n, "object_fraction": object_pixels / labelled,
            "ignored": 100 * ignored / (labelled + ignored), "pairs": 100 * pairs / n}


def _percent(value) -> str:
    return "" if value is None else f"{value:.1f}"


def presets_section(sizes: Sizes) -> str:
    header = ["labels", "objects 1/2/3/4/5 (%)", "mean n", "background (%)", "object px / labelled",
              "255 px (%)", "same-family pairs (%)"]
    rows = [[name, " / ".join(f"{v:.1f}" for v in s["objects"]), s["mean_n"], _percent(s["background"]),
             s["object_fraction"], _percent(s["ignored"]), ""] for name, s in VOC.items()]
    for preset in PRESETS:
        for co in (False, True):
            s = label_statistics(SyntheticScenes("train", sizes.preset_images, preset=preset, co_occurrence=co))
            rows.append([f"{preset}{', co_occurrence' if co else ''}", " / ".join(f"{v:.1f}" for v in s["objects"]),
                         s["mean_n"], _percent(s["background"]), s["object_fraction"], _percent(s["ignored"]),
                         _percent(s["pairs"])])
    return (f"Label statistics of {sizes.preset_images} generated masks per row (64x64, ignore_border 1)\n\n"
            + markdown_rows(header, rows))


# -- labeler -----------------------------------------------------------------------------------------


def labeler_config(ambiguity: float, epochs: int, sizes: Sizes) -> TrainConfig:
    """The labeler's training run: the voc preset, fresh images each epoch, no segmenter step taken."""
    return TrainConfig(model="tiny", labeler="tiny", fusion=None, train_labels="none", generator=False,
                       scene_preset="voc", ambiguity=ambiguity, num_train=sizes.labeler_images,
                       num_val=sizes.val_images, epochs=epochs, tau=sizes.tau, progress=sizes.progress)


def labeler_run(ambiguity: float, epochs: int, sizes: Sizes) -> list:
    """Train the tiny labeler with the Trainer's labeler step (its seeding, schedule and epochs); score it on val."""
    cfg = labeler_config(ambiguity, epochs, sizes)
    trainer = Trainer(cfg)
    train_set = build_split(cfg, "train")
    start, steps = time.perf_counter(), 0
    while trainer.epoch < cfg.epochs:
        loader = trainer.start_epoch(train_set)
        if trainer.labeler_schedule is None:
            trainer.start_labeler_schedule(len(loader))
        trainer.model.labeler.train()
        for image, mask in tqdm(loader, desc=f"labeler epoch {trainer.epoch + 1}/{cfg.epochs}", leave=False,
                                disable=not cfg.progress):
            trainer.labeler_iteration(*trainer.to_device(image, mask))
            steps += 1
        trainer.epoch += 1
    seconds = time.perf_counter() - start
    evaluator = Evaluator(trainer.model, build_loader(cfg, "val"), cfg.device)
    result = evaluator.labeler(cfg.tau, objects=range(1, NUM_CLASSES))
    return [ambiguity, epochs, steps, result["mAP"], result["precision"], result["recall"], f"{seconds:.0f}"]


def labeler_section(sizes: Sizes) -> str:
    rows = [labeler_run(a, epochs, sizes) for a, epochs in sizes.labeler_runs]
    cfg = labeler_config(1.0, 1, sizes)
    header = ["ambiguity", "epochs", "steps", "mAP (object classes)", f"precision @ tau {cfg.tau:g}",
              f"recall @ tau {cfg.tau:g}", "train seconds (incl. generation)"]
    return (f"Tiny labeler ({cfg.labeler}), voc preset, {cfg.num_train} fresh images per epoch, batch "
            f"{cfg.batch_size}, the Trainer's labeler step: Adam under a one-cycle schedule peaking at "
            f"{cfg.labeler_lr:g}, BCE on mask-derived labels; {cfg.num_val} val images; "
            f"{torch.get_num_threads()} thread(s)\n\n" + markdown_rows(header, rows))


# -- segmenter ---------------------------------------------------------------------------------------


def receptive_field(modules) -> int:
    """Receptive field (px) of a chain of convolutions and pools: ``1 + sum (k - 1) d * jump``."""
    field, jump = 1, 1
    for m in modules:
        if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
            k, s, d = (v if isinstance(v, int) else v[0]
                       for v in (m.kernel_size, m.stride, getattr(m, "dilation", 1)))
            field += (k - 1) * d * jump
            jump *= s
    return field


def wide_tiny_fcn() -> torch.nn.Module:
    """The tiny FCN with two more 3x3 conv-bn-relu at its top level (stride 8), dilated 2 and 4.

    Padding equal to the dilation keeps the grid, so the FCN's crop offsets stay valid.
    """
    seg = build_segmenter("tiny")
    top = seg.backbone.stages[-1]
    for dilation in (2, 4):
        top.extend([torch.nn.Conv2d(128, 128, 3, padding=dilation, dilation=dilation, bias=False),
                    torch.nn.BatchNorm2d(128), torch.nn.ReLU(inplace=True)])
    return seg


def top_receptive_field(seg: torch.nn.Module) -> int:
    return receptive_field(m for stage in seg.backbone.stages for m in stage.modules())


def segmenter_config(ambiguity: float, fusion: str | None, epochs: int, sizes: Sizes) -> TrainConfig:
    return TrainConfig(model="tiny", labeler=None, fusion=fusion, generator=False,
                       train_labels="oracle" if fusion else "none", scene_preset="voc", ambiguity=ambiguity,
                       num_train=sizes.seg_images, num_val=sizes.val_images, epochs=epochs,
                       progress=sizes.progress)


def segmenter_run(ambiguity: float, fusion: str | None, wide: bool, epochs: int, sizes: Sizes) -> list:
    """Train a tiny FCN with the Trainer (no generator); MIOU unfused and with oracle labels."""
    cfg = segmenter_config(ambiguity, fusion, epochs, sizes)
    torch.manual_seed(cfg.seed)
    seg = wide_tiny_fcn() if wide else build_segmenter("tiny")
    trainer = Trainer(cfg, ImgPixNet(seg, fusion=fusion))
    train_set = build_split(cfg, "train")
    start = time.perf_counter()
    while trainer.epoch < cfg.epochs:
        trainer.train_epoch(trainer.start_epoch(train_set))
        trainer.epoch += 1
    seconds = time.perf_counter() - start
    result = Evaluator(trainer.model, build_loader(cfg, "val"), cfg.device).run([LabelSource("none"),
                                                                                  LabelSource("oracle")])
    return [ambiguity, f"{top_receptive_field(seg)} px", "oracle fusion" if fusion else "none (baseline)", epochs,
            100 * result["unfused"].scores["MIOU"], 100 * result["oracle"].scores["MIOU"], f"{seconds:.0f}"]


def segmenter_section(sizes: Sizes) -> str:
    lo, hi = PRESETS["voc"].radius
    header = ["ambiguity", "receptive field", "trained with", "epochs", "MIOU unfused", "MIOU + oracle labels",
              "train seconds"]
    runs = [(a, fusion, False, sizes.seg_epochs) for a in sizes.seg_ambiguities for fusion in (None, "dot")]
    runs += [(a, None, True, sizes.seg_epochs) for a in sizes.seg_ambiguities if a > 0]
    runs += [(a, None, wide, 3 * sizes.seg_epochs) for a in sizes.seg_ambiguities for wide in (False, True)]  # long
    rows = [segmenter_run(a, fusion, wide, epochs, sizes) for a, fusion, wide, epochs in runs]
    cfg = segmenter_config(1.0, None, sizes.seg_epochs, sizes)
    size = cfg.image_size
    return (f"Tiny FCN (and a variant with a dilated top, see wide_tiny_fcn); voc objects at size {size}: radius "
            f"{lo * size:.1f}-{hi * size:.1f} px, diameter up to {2 * hi * size:.0f} px. {cfg.num_train} fresh "
            f"images per epoch, batch {cfg.batch_size}, SGD lr {cfg.lr:g} (momentum {cfg.momentum:g}, "
            f"{cfg.lr_schedule} schedule), no generator; {cfg.num_val} val images\n\n" + markdown_rows(header, rows))


BUILDERS = {"appearance": appearance_section, "presets": presets_section, "labeler": labeler_section,
            "segmenter": segmenter_section}


def report(sections=SECTIONS, sizes: Sizes | None = None, log: Callable[[str], None] = print) -> str:
    """The Markdown report of ``sections`` (each logged when done, with its time in seconds)."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections {unknown}; valid: {', '.join(SECTIONS)}")
    sizes = sizes or Sizes()
    parts = []
    for name in sections:
        start = time.perf_counter()
        body = BUILDERS[name](sizes)
        parts.append(f"## {name}\n\n{body}\n({time.perf_counter() - start:.0f} s)\n")
        log(parts[-1])
    return "\n".join(parts)
