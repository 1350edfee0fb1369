"""The ``imgpix`` command: train, evaluate, theory.

Nothing heavy is imported at module level: help and ``imgpix theory`` answer without torch, and Ctrl-C
during the imports of ``train`` / ``evaluate`` is caught like any other (exit 130, one line).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import theory

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
COMMANDS = {"train": "train the fused model (resumes from --out if it holds a checkpoint)",
            "evaluate": "PA / MPA / FWAA / MIOU of a checkpoint, in percent",
            "theory": "Eqs. 4-14 for given N, n, m, k"}


class OneLineErrors(argparse.ArgumentParser):
    """An argument error is one line naming the problem and the help flag, exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _checked(convert, check, what: str):
    """An argparse type: ``convert`` the text, then ``check`` it (a ValueError names the problem)."""
    def parse(text: str):
        try:
            value = convert(text)
            if check(value):
                return value
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    parse.__name__ = what
    return parse


_positive = _checked(int, lambda v: v >= 1, "an integer >= 1")
_count = _checked(int, lambda v: v >= 0, "an integer >= 0")
_rate = _checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
_unit = _checked(float, lambda v: math.isfinite(v) and 0 <= v <= 1, "a number in [0, 1]")
SOURCE_HELP = {"none": "unfused = no image labels", "oracle": "oracle = the true image labels (from the masks)",
               "labeler": "labeler@tau = the classes the checkpoint's image labeler scores >= tau",
               "noisy": "noisy(m,k) = the true labels, m outlier classes added, k true classes kept"}


def _label_source(text: str) -> str:
    """An argparse type: a label-source text whose syntax and ranges are checked now (tau, N come later)."""
    from .labels import LabelSource

    try:
        LabelSource.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _quiet_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--no-progress", dest="progress", action="store_false",
                        help="no progress bars (results and errors are still printed)")


def _device(text: str) -> str:
    """An argparse type: a device this machine has (:func:`imgpix.device.check_device`)."""
    from .device import check_device

    try:
        return check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--device ")) from None


def _common_args(parser: argparse.ArgumentParser, data_default: str | None, DEFAULTS: dict) -> None:
    from .data.build import DATASETS

    parser.add_argument("--data", choices=DATASETS, default=data_default,
                        help="dataset (default: " + (data_default or "the checkpoint's") + ")")
    parser.add_argument("--root", help="dataset folder for --data voc (VOCdevkit/, optional SBD/) or --data folder "
                                       "(JPEGImages/, SegmentationClass/, ImageSets/Segmentation/, a class list)")
    parser.add_argument("--classes", help="class-list file of --data folder (default: labelmap.txt or "
                                          "class_names.txt in --root)")
    parser.add_argument("--background", default=None,
                        help="class that fusion always keeps: auto (a class named background), none, a name or an id")
    parser.add_argument("--skip-bad-files", action="store_true", default=None,
                        help="train/evaluate without the images whose files are broken (listed as a warning)")
    parser.add_argument("--device", type=_device, default=DEFAULTS["device"],
                        help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    parser.add_argument("--tau", type=_unit, default=None,
                        help=f"labeler threshold in [0, 1] (default: {DEFAULTS['tau']}, or the checkpoint's)")
    _quiet_arg(parser)


def _defaults() -> dict:
    from dataclasses import fields

    from .config import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig)}


def _train_parser(commands) -> None:
    from .config import LABELERS, LR_SCHEDULES, MODELS, PROCEDURES
    from .data.synthetic import PRESETS as SCENE_PRESETS
    from .models.fused import FUSIONS

    DEFAULTS = _defaults()
    train = commands.add_parser("train", help=COMMANDS["train"])
    _common_args(train, DEFAULTS["data"], DEFAULTS)
    add = train.add_argument
    add("--model", choices=MODELS, default=DEFAULTS["model"])
    add("--labeler", choices=(*LABELERS, "none"), default=DEFAULTS["labeler"])
    add("--backbone-weights", help="local torchvision VGG16 state dict for the FCN backbone")
    add("--fusion", choices=[*(f for f in FUSIONS if f), "none"], default=DEFAULTS["fusion"],
        help="how labels are fused; 'none' trains the plain FCN (labels can still be fused after training)")
    add("--generator", action=argparse.BooleanOptionalAction, default=DEFAULTS["generator"])
    add("--discriminator", action="store_true", help="Table 2 ablation (implies --no-generator)")
    add("--procedure", choices=PROCEDURES, default=DEFAULTS["procedure"])
    add("--train-labels", type=_label_source, default=DEFAULTS["train_labels"], metavar="SOURCE",
        help="labels fused during training: oracle, labeler, noisy:m=M,k=K or none (default: %(default)s)")
    for name, kind in (("epochs", _positive), ("batch_size", _positive), ("lr", _rate), ("labeler_lr", _rate),
                       ("seed", _count), ("image_size", _positive), ("crop_size", _positive), ("workers", _count)):
        add("--" + name.replace("_", "-"), type=kind, default=DEFAULTS[name], help="default: %(default)s")
    add("--lr-schedule", choices=LR_SCHEDULES, default=DEFAULTS["lr_schedule"],
        help="the segmenter's learning rate: constant, or cosine from --lr to 0 over all updates "
             "(default: %(default)s)")
    add("--num-train", type=_positive, help="synthetic training images per epoch (drawn afresh each epoch)")
    add("--fixed-train", action="store_true", help="the same synthetic training images every epoch")
    add("--num-val", type=_positive, help="synthetic validation images")
    add("--scene-preset", choices=SCENE_PRESETS, default=DEFAULTS["scene_preset"],
        help="synthetic scene statistics: 'voc' matches PASCAL VOC's label statistics (default: %(default)s)")
    add("--ambiguity", type=_unit, default=DEFAULTS["ambiguity"],
        help="1: members of a family look alike locally; 0: every class has its own look (default: %(default)s)")
    add("--family-size", type=_positive, default=DEFAULTS["family_size"], help="default: %(default)s")
    add("--co-occurrence", action="store_true", help="two members of one family may share an image")
    add("--amp", action="store_true", help="bfloat16 autocast on GPU")
    add("--channels-last", action="store_true")
    add("--compile", action="store_true", help="torch.compile the segmentation net")
    add("--train-split", default=None, help="training split (default: voc trainaug with SBD, else train)")
    add("--out", default="runs/imgpix", help="output directory (default: %(default)s)")


def _evaluate_parser(commands) -> None:
    evaluate = commands.add_parser("evaluate", help=COMMANDS["evaluate"])
    _common_args(evaluate, None, _defaults())
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint.pt, or the --out directory of train")
    evaluate.add_argument("--label-source", type=_label_source, action="append", metavar="SOURCE",
                          help="labels fused at test time: none, oracle, labeler[@tau], noisy:m=M,k=K; repeat "
                               "for several rows (default: labeler if trained with one, else oracle; none for "
                               "a model trained unfused)")
    evaluate.add_argument("--num-val", type=_positive, help="synthetic validation images")


def _theory_parser(commands) -> None:
    table = commands.add_parser("theory", help=COMMANDS["theory"])
    table.add_argument("--N", type=_positive, default=21)
    table.add_argument("--n", type=_positive, default=3)
    table.add_argument("--m", type=_positive, default=2)
    table.add_argument("--k", type=_positive, default=1)
    _quiet_arg(table)  # theory draws no bars; accepted so that one switch works on every command


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s subparser is built in full (all of them when None), so that help and
    ``theory`` never import torch."""
    parser = OneLineErrors(prog="imgpix", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    builders = {"train": _train_parser, "evaluate": _evaluate_parser, "theory": _theory_parser}
    for name, build in builders.items():
        if command in (None, name) or name == "theory":
            build(commands)
        else:
            commands.add_parser(name, help=COMMANDS[name])
    return parser


def run_train(args) -> None:
    from dataclasses import fields

    from . import distributed
    from .config import TrainConfig
    from .runtime import keep_freed_memory
    from .train import train

    DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}
    _check_root(args.data, args.root)
    device = distributed.init_from_env(args.device)
    keep_freed_memory()
    given = {name: value for name, value in vars(args).items() if name in DEFAULTS and value is not None}
    cfg = TrainConfig(**{
        **given, "device": device, "labeler": None if args.labeler == "none" else args.labeler,
        "fusion": None if args.fusion == "none" else args.fusion,
        "generator": args.generator and not args.discriminator,
        "train_labels": "none" if args.fusion == "none" else args.train_labels,
        "tau": DEFAULTS["tau"] if args.tau is None else args.tau})
    try:
        train(cfg, args.out)
    finally:
        distributed.shutdown()


def _check_root(data: str, root: str | None) -> None:
    """voc and folder data need an existing --root; synthetic data has none (a given one would be ignored)."""
    if data in ("voc", "folder") and not root:
        raise ValueError(f"--data {data} needs --root DIR (the dataset folder)")
    if data == "synthetic" and root:
        raise ValueError(f"--root is for --data voc or folder; the synthetic data has no folder (got --root {root})")
    if root and not Path(root).is_dir():
        raise FileNotFoundError(f"--root {root} is not an existing directory")


def _checkpoint_file(text: str) -> Path:
    """``--checkpoint``: a checkpoint file, or a train --out directory holding one."""
    from .checkpoint import CHECKPOINT

    path = Path(text)
    if path.is_dir() and not (path / CHECKPOINT).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} holds no {CHECKPOINT} (train writes one into its "
                                "--out directory after each epoch)")
    return path / CHECKPOINT if path.is_dir() else path


def default_sources(model, tau: float, protected: tuple[int, ...] = ()) -> list:
    """What ``evaluate`` fuses when not told: the labeler if the model has one, else the oracle; none if unfused."""
    from .labels import LabelSource

    if model.fusion is None:
        return [LabelSource("none")]
    if model.labeler is None:
        return [LabelSource("oracle")]
    return [LabelSource("labeler", tau=tau, protected=protected)]


def run_evaluate(args) -> None:
    from dataclasses import replace

    from .checkpoint import load_checkpoint
    from .data.loaders import checked_split, make_loader
    from .evaluate import Evaluator
    from .labels import LabelSource
    from .metrics import METRIC_NAMES

    path = _checkpoint_file(args.checkpoint)
    model, cfg, state = load_checkpoint(path, args.device)
    given = {name: getattr(args, name) for name in ("data", "root", "classes", "background", "skip_bad_files",
                                                      "num_val") if getattr(args, name) is not None}
    cfg = replace(cfg, device=args.device, progress=args.progress, **given)
    _check_root(cfg.data, cfg.root)
    if cfg.info.num_classes != model.num_classes:
        where = f" in {cfg.root}" if cfg.root else ""
        raise ValueError(f"{path} was trained on {model.num_classes} classes, but the {cfg.data} data{where} has "
                         f"{cfg.info.num_classes}: evaluate it on data with the classes it was trained on")
    tau = cfg.tau if args.tau is None else args.tau
    sources = ([LabelSource.parse(text, tau=tau, protected=cfg.protected) for text in args.label_source]
               if args.label_source else default_sources(model, tau, cfg.protected))
    if any(s.kind == "labeler" for s in sources) and model.labeler is None:
        raise ValueError("label source 'labeler' needs a checkpoint trained with a labeler")
    loader = make_loader(cfg, checked_split(cfg, "val", lambda text: print(text, file=sys.stderr)), shuffle=False)
    evaluator = Evaluator(model, loader, args.device, progress=args.progress, keep=model.labeler is not None)
    results = evaluator.run(sources)
    trained = "unfused" if model.fusion is None else f"{model.fusion}-fused"
    print(f"{path} (epoch {state['epoch']}, trained {trained}) on {len(loader.dataset)} {cfg.data} val images; "
          "scores in percent")
    print(f"| labels | {' | '.join(METRIC_NAMES)} |")
    print(f"|---|{'---|' * len(METRIC_NAMES)}")
    for name, result in results.items():
        posthoc = " (post-hoc)" if model.fusion is None and result.source.fused else ""
        values = " | ".join(f"{100 * result.scores[k]:.2f}" for k in METRIC_NAMES)
        print(f"| {name}{posthoc} | {values} |")
    print("labels: " + "; ".join(SOURCE_HELP[kind] for kind in dict.fromkeys(s.kind for s in sources)))
    if model.labeler is not None:
        objects = [c for c in range(model.num_classes) if c not in cfg.protected]
        quality = evaluator.labeler(tau, objects)
        print(f"image labeler: mAP {100 * quality['mAP']:.2f} over {quality['classes']} object classes with a positive "
              f"image; at tau {tau:g} precision {100 * quality['precision']:.2f}, recall {100 * quality['recall']:.2f}")


def run_theory(args) -> None:
    N, n, m, k = args.N, args.n, args.m, args.k
    rows = [("Eq. 4 self_information(N)", lambda: theory.self_information(N)),
            ("Eq. 5 valid_information(n)", lambda: theory.valid_information(n)),
            ("Eq. 6 removed_information(N, n)", lambda: theory.removed_information(N, n)),
            ("Eq. 9 case1_learned(n, m)", lambda: theory.case1_learned(n, m)),
            ("Eq. 10 case1_removed(N, n, m)", lambda: theory.case1_removed(N, n, m)),
            ("Eq. 11 case2_learned(k)", lambda: theory.case2_learned(k)),
            ("Eq. 12 case2_lost(n, k)", lambda: theory.case2_lost(n, k)),
            ("Eq. 13 case3_learned(m, k)", lambda: theory.case3_learned(m, k)),
            ("Eq. 14 case3_outlier(m, k)", lambda: theory.case3_outlier(m, k))]
    values = [(name, value()) for name, value in rows]  # any out-of-domain argument raises before printing
    print(f"N={N} n={n} m={m} k={k} (nats)")
    for name, value in values:
        print(f"{name:34s} {value:.4f}")


def _resume_hint(args) -> str:
    from .checkpoint import CHECKPOINT

    checkpoint = Path(args.out) / CHECKPOINT
    if checkpoint.is_file():
        return f"; {checkpoint} holds the last finished epoch: rerun the same command to resume from it"
    return " before the first epoch finished (nothing kept): rerun the same command to start again"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        args = build_parser(command or "theory").parse_args(argv)  # no command yet: help or an error, no torch
        run = {"train": run_train, "evaluate": run_evaluate, "theory": run_theory}[args.command]
        run(args)
    except KeyboardInterrupt:
        hint = " while starting; nothing was written" if "args" not in locals() else (
            _resume_hint(args) if command == "train" else "")
        print(f"imgpix{' ' + command if command else ''}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError) as error:
        print(f"imgpix {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
