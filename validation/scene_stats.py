"""Measure the synthetic scenes: appearance ambiguity, label statistics, the labeler's mAP, the segmenter.

Four sections, each a Markdown table (stdout, and ``--out FILE``):

* ``appearance`` -- a per-pixel Gaussian classifier (one full-covariance Gaussian per class, class
  priors from pixel counts, ``argmax_c log p(x | c) + log p(c)``) on colour + 7x7 texture features
  (RGB; 7x7 mean and standard deviation of RGB; the 7x7 structure tensor of the luminance as log
  energy and double-angle orientation; log Laplacian-to-gradient energy, a stripe-period cue), fitted
  on train images and scored on val object pixels: accuracy over all classes, over the image's
  true classes only (what exact image labels leave), and of the family, per ``ambiguity``.
* ``presets`` -- per-image label statistics of each preset beside PASCAL VOC 2012's.
* ``labeler`` -- the tiny labeler trained on fresh samples with ``LABELER_RECIPE`` (Adam under a
  one-cycle schedule, BCE on mask-derived labels, one step per batch of 16 as inside
  ``imgpix.train.Trainer``); mAP over object classes on val, micro precision / recall at ``tau``.
* ``segmenter`` -- tiny FCNs trained by ``imgpix.train.Trainer`` on fresh samples (no generator):
  without fusion, scored unfused and with oracle labels fused at test time, and with oracle fusion;
  per ``ambiguity``, plus a variant whose dilated top sees twice the largest object
  (``wide_tiny_fcn``). Receptive fields are printed beside the object sizes.

Usage::

    python validation/scene_stats.py --out validation/scene_stats.md       # all sections
    python validation/scene_stats.py --sections appearance,presets --quick  # seconds
    python validation/scene_stats.py --update-docs                          # rewrite validation/README.md's tables
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter

from imgpix.data import NUM_CLASSES, SyntheticScenes
from imgpix.data.synthetic import PRESETS, family_of
from imgpix.evaluate import Evaluator
from imgpix.experiments.report import splice
from imgpix.labels import DEFAULT_TAU, LabelSource, from_masks
from imgpix.metrics import labeler_scores
from imgpix.models import ImgPixNet, build_labeler, build_segmenter
from imgpix.train import Trainer
from imgpix.config import TrainConfig
from imgpix.data.loaders import build_split, make_loader

SECTIONS = ("appearance", "presets", "labeler", "segmenter")
IGNORE = 255
# PASCAL VOC 2012 label maps (issue 11): val (1,449 images) and trainaug (10,582 images)
VOC = {
    "VOC 2012 val": {"objects": (64.0, 25.8, 8.4, 1.6, 0.2), "mean_n": 2.48, "background": 99.6,
                     "object_fraction": 0.27, "ignored": 5.5},
    "VOC 2012 trainaug": {"objects": (63.7, 27.4, 7.3, 1.3, 0.3), "mean_n": 2.47, "background": None,
                          "object_fraction": 0.31, "ignored": None},
}
LABELER_RECIPE = {"max_lr": 3e-3, "epochs": 12, "images_per_epoch": 1024, "batch_size": 16}  # Adam, OneCycleLR


def markdown(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


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
        keep = mask.reshape(-1) != IGNORE
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


def appearance_section(args) -> str:
    rows = [appearance_row("voc", a, args.appearance_images, args.appearance_images // 2)
            for a in args.ambiguities]
    header = ["preset", "ambiguity", "object-pixel accuracy", "within true classes", "family accuracy"]
    return (f"Per-pixel Gaussian classifier, {args.appearance_images} train / {args.appearance_images // 2} "
            "val images (chance within a family of 4: 0.25)\n\n" + markdown(header, rows))


# -- presets ------------------------------------------------------------------------------------------


def label_statistics(ds: SyntheticScenes) -> dict:
    """Objects-per-image distribution (%), mean n with background, background %, object and ignored fractions."""
    counts = np.zeros(6)
    classes = background = object_pixels = labelled = ignored = pairs = 0
    for i in range(len(ds)):
        mask = ds.mask(i)
        present = set(np.unique(mask).tolist()) - {IGNORE}
        objects = present - {0}
        counts[min(len(objects), 5)] += 1
        classes += len(present)
        background += 0 in present
        families = [family_of(c, ds.family_size) for c in objects]
        pairs += len(families) != len(set(families))
        valid = mask != IGNORE
        object_pixels += int((mask[valid] > 0).sum())
        labelled += int(valid.sum())
        ignored += int((~valid).sum())
    n = len(ds)
    return {"objects": tuple(100 * counts[1:] / n), "none": 100 * counts[0] / n, "mean_n": classes / n,
            "background": 100 * background / n, "object_fraction": object_pixels / labelled,
            "ignored": 100 * ignored / (labelled + ignored), "pairs": 100 * pairs / n}


def presets_section(args) -> str:
    header = ["labels", "objects 1/2/3/4/5 (%)", "mean n", "background (%)", "object px / labelled",
              "255 px (%)", "same-family pairs (%)"]
    rows = []
    for name, stats in VOC.items():
        rows.append([name, " / ".join(f"{v:.1f}" for v in stats["objects"]), stats["mean_n"],
                     _maybe(stats["background"], ".1f"), stats["object_fraction"], _maybe(stats["ignored"], ".1f"),
                     ""])
    for preset in PRESETS:
        for co in (False, True):
            ds = SyntheticScenes("train", args.preset_images, preset=preset, co_occurrence=co)
            s = label_statistics(ds)
            rows.append([f"{preset}{', co_occurrence' if co else ''}", " / ".join(f"{v:.1f}" for v in s["objects"]),
                         s["mean_n"], f"{s['background']:.1f}", s["object_fraction"], f"{s['ignored']:.1f}",
                         f"{s['pairs']:.1f}"])
    return (f"Label statistics of {args.preset_images} generated masks per row (64x64, ignore_border 1)\n\n"
            + markdown(header, rows))


def _maybe(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


# -- labeler -----------------------------------------------------------------------------------------


def labeler_run(ambiguity: float, epochs: int, args) -> list:
    """Train the tiny labeler on fresh voc-preset samples (``LABELER_RECIPE``); score it on val."""
    recipe = args.recipe
    torch.manual_seed(0)
    net = build_labeler("tiny", NUM_CLASSES)
    steps_per_epoch = recipe["images_per_epoch"] // recipe["batch_size"]
    opt = torch.optim.Adam(net.parameters(), lr=recipe["max_lr"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["max_lr"], total_steps=epochs * steps_per_epoch)
    kwargs = {"preset": "voc", "ambiguity": ambiguity}
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        data = SyntheticScenes("train", recipe["images_per_epoch"], epoch=epoch, **kwargs)
        loader = torch.utils.data.DataLoader(data, batch_size=recipe["batch_size"], shuffle=True, drop_last=True,
                                             generator=torch.Generator().manual_seed(epoch))
        for image, mask in loader:
            loss = F.binary_cross_entropy_with_logits(net(image), from_masks(mask, NUM_CLASSES).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    seconds = time.perf_counter() - start
    net.eval()
    val = torch.utils.data.DataLoader(SyntheticScenes("val", args.val_images, **kwargs), batch_size=64)
    with torch.no_grad():
        batches = [(net.scores(image), from_masks(mask, NUM_CLASSES)) for image, mask in val]
    scores, present = (torch.cat(t) for t in zip(*batches))
    result = labeler_scores(scores, present, args.tau, classes=range(1, NUM_CLASSES))
    return [ambiguity, epochs, epochs * steps_per_epoch, result["mAP"], result["precision"], result["recall"],
            f"{seconds:.0f}"]


def labeler_section(args) -> str:
    rows = [labeler_run(a, epochs, args) for a, epochs in args.labeler_runs]
    header = ["ambiguity", "epochs", "steps", "mAP (object classes)", f"precision @ tau {args.tau}",
              f"recall @ tau {args.tau}", "train seconds (incl. generation)"]
    r = args.recipe
    return (f"Tiny labeler (imgpix.models.labeler.TinyClassifier), voc preset, {r['images_per_epoch']} fresh images "
            f"per epoch, batch {r['batch_size']}, Adam with OneCycleLR (max lr {r['max_lr']:g}, torch defaults) "
            f"over all steps, BCE on mask-derived labels; {args.val_images} val images; "
            f"{torch.get_num_threads()} thread(s)\n\n" + markdown(header, rows))


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


def segmenter_run(ambiguity: float, fusion: str | None, wide: bool, epochs: int, args) -> list:
    """Train a tiny FCN as ``imgpix.train.train`` does (no generator); MIOU unfused and with oracle labels."""
    cfg = TrainConfig(model="tiny", labeler=None, fusion=fusion, generator=False,
                      train_labels="oracle" if fusion else "none", scene_preset="voc", ambiguity=ambiguity,
                      num_train=args.seg_images, num_val=args.val_images, epochs=epochs, progress=False)
    torch.manual_seed(cfg.seed)
    seg = wide_tiny_fcn() if wide else build_segmenter("tiny")
    trainer = Trainer(cfg, ImgPixNet(seg, fusion=fusion))
    train_set = build_split(cfg, "train")
    start = time.perf_counter()
    while trainer.epoch < cfg.epochs:
        torch.manual_seed(cfg.seed + 1000 * (trainer.epoch + 1))
        trainer.train_epoch(make_loader(cfg, train_set, shuffle=True, epoch=trainer.epoch + 1))
        trainer.epoch += 1
    seconds = time.perf_counter() - start
    evaluator = Evaluator(trainer.model, make_loader(cfg, build_split(cfg, "val"), shuffle=False))
    result = evaluator.run([LabelSource("none"), LabelSource("oracle")])
    return [ambiguity, f"{top_receptive_field(seg)} px", "oracle fusion" if fusion else "none (baseline)", epochs,
            100 * result["unfused"].scores["MIOU"], 100 * result["oracle"].scores["MIOU"], f"{seconds:.0f}"]


def segmenter_section(args) -> str:
    lo, hi = PRESETS["voc"].radius
    header = ["ambiguity", "receptive field", "trained with", "epochs", "MIOU unfused", "MIOU + oracle labels",
              "train seconds"]
    runs = [(a, fusion, False, args.seg_epochs) for a in args.seg_ambiguities for fusion in (None, "dot")]
    runs += [(a, None, True, args.seg_epochs) for a in args.seg_ambiguities if a > 0]
    runs += [(a, None, wide, 3 * args.seg_epochs) for a in args.seg_ambiguities for wide in (False, True)]  # long
    rows = [segmenter_run(a, fusion, wide, epochs, args) for a, fusion, wide, epochs in runs]
    return (f"Tiny FCN (and a variant with a dilated top, see wide_tiny_fcn); voc objects at size 64: radius "
            f"{lo * 64:.1f}-{hi * 64:.1f} px, diameter up to {2 * hi * 64:.0f} px. {args.seg_images} fresh images "
            f"per epoch, batch 16, SGD lr 0.05, no generator; {args.val_images} val images\n\n"
            + markdown(header, rows))


# -- driver -------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--update-docs", action="store_true",
                        help="also rewrite the scene_stats section of validation/README.md")
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    if unknown := sorted(set(args.sections) - set(SECTIONS)):
        parser.error(f"unknown sections {unknown}; valid: {', '.join(SECTIONS)}")
    args.ambiguities = (0.0, 1.0) if args.quick else (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    args.appearance_images = 16 if args.quick else 256
    args.preset_images = 100 if args.quick else 2000
    args.val_images = 32 if args.quick else 256
    args.tau = DEFAULT_TAU
    args.recipe = {**LABELER_RECIPE, **({"epochs": 1, "images_per_epoch": 32} if args.quick else {})}
    args.labeler_runs = ((1.0, 1),) if args.quick else ((1.0, 12), (1.0, 10), (0.0, 12))
    args.seg_ambiguities = (0.0, 1.0)
    args.seg_images, args.seg_epochs = (32, 1) if args.quick else (1024, 12)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    builders = {"appearance": appearance_section, "presets": presets_section, "labeler": labeler_section,
                "segmenter": segmenter_section}
    parts = []
    for name in args.sections:
        start = time.perf_counter()
        body = builders[name](args)
        parts.append(f"## {name}\n\n{body}\n\n({time.perf_counter() - start:.0f} s)\n")
        print(parts[-1], flush=True)
    report = "\n".join(parts)
    if args.out:
        args.out.write_text(report)
    if args.update_docs:
        command = " ".join(["python validation/scene_stats.py", *(argv if argv is not None else sys.argv[1:])])
        header = (f"Measured by `{command}` ({args.threads} thread(s), {platform.platform()}, torch "
                  f"{torch.__version__}); section times in parentheses.\n\n")
        splice(Path(__file__).resolve().parent / "README.md", "scene_stats", header + report.replace("## ", "### "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
