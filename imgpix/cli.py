"""The ``imgpix`` command: train, evaluate, theory.

Nothing heavy is imported at module level: help and ``imgpix theory`` answer without torch, and Ctrl-C
during the imports of ``train`` / ``evaluate`` is caught like any other (exit 130, one line).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

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
_side = _checked(int, lambda v: v >= 8, "an integer >= 8 (pixels)")
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
    parser.add_argument("--threads", type=_positive, default=None,
                        help="torch threads of this process (default: every core; 1 for the tiny net on the CPU when "
                             "the machine is busy, load average >= 1)")
    parser.add_argument("--tau", type=_unit, default=None,
                        help=f"labeler threshold in [0, 1] (default: {DEFAULTS['tau']}, or the checkpoint's)")
    _quiet_arg(parser)


def _defaults() -> dict:
    from dataclasses import fields

    from .config import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig)}


def _train_parser(commands) -> None:
    from .config import LR_SCHEDULES, PROCEDURES
    from .data.synthetic import PRESETS as SCENE_PRESETS
    from .models.fused import FUSIONS

    DEFAULTS = _defaults()
    train = commands.add_parser("train", help=COMMANDS["train"])
    _common_args(train, DEFAULTS["data"], DEFAULTS)
    add = train.add_argument
    _network_args(train, DEFAULTS)
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
    add("--eval-split", default=DEFAULTS["eval_split"],
        help="the split scored after each epoch, e.g. test once settings are chosen (default: %(default)s)")
    add("--out", default="runs/imgpix", help="output directory (default: %(default)s)")


def _network_args(parser: argparse.ArgumentParser, DEFAULTS: dict) -> None:
    """--model / --labeler by name (or a factory) and their local weights."""
    from .models.build import FACTORY_HELP, check_labeler_name, check_segmenter_name

    parser.add_argument("--model", type=_named(check_segmenter_name), default=DEFAULTS["model"],
                        help="segmenter: tiny, fcn32s, fcn16s, fcn8s, a torchvision segmentation architecture "
                             f"(e.g. lraspp_mobilenet_v3_large, deeplabv3_resnet50), {FACTORY_HELP} "
                             "(default: %(default)s)")
    parser.add_argument("--weights", help="local state dict of the whole segmenter (nothing is downloaded)")
    parser.add_argument("--labeler", type=_named(check_labeler_name, allow_none=True), default=DEFAULTS["labeler"],
                        help="image labeler: tiny, vgg16, resnet18, any torchvision classifier, or none "
                             "(default: %(default)s)")
    parser.add_argument("--labeler-weights", help="local state dict of the labeler")
    parser.add_argument("--resize", type=_side,
                        help="real data: scale images and labels (nearest neighbour) so that the longer side has "
                             "this many pixels, for training and evaluation")


def _named(check, allow_none: bool = False):
    """An argparse type that accepts what ``check`` accepts (its ValueError is the message)."""
    def parse(text: str):
        if allow_none and text == "none":
            return None
        try:
            return check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse


def _evaluate_parser(commands) -> None:
    from .models.build import check_labeler_name, check_segmenter_name

    DEFAULTS = _defaults()
    evaluate = commands.add_parser("evaluate", help=COMMANDS["evaluate"])
    _common_args(evaluate, None, DEFAULTS)
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint.pt, or the --out directory of train")
    source.add_argument("--model", type=_named(check_segmenter_name),
                        help="evaluate a network that imgpix did not train: a torchvision segmentation "
                             "architecture or package.module:factory, with --weights (post-hoc fusion)")
    evaluate.add_argument("--weights", help="local state dict of --model")
    evaluate.add_argument("--labeler", type=_named(check_labeler_name),
                          help="with --model: the image labeler behind labeler@tau, with --labeler-weights")
    evaluate.add_argument("--labeler-weights", help="local state dict of --labeler")
    evaluate.add_argument("--resize", type=_side, help="real data: longer side in pixels (default: the "
                                                           "checkpoint's, or the files' resolution)")
    evaluate.add_argument("--eval-split", help="the split to evaluate (default: the checkpoint's, else val)")
    evaluate.add_argument("--label-source", type=_label_source, action="append", metavar="SOURCE",
                          help="labels fused at test time: none, oracle, labeler[@tau], noisy:m=M,k=K; repeat "
                               "for several rows (default: none, oracle and, with a labeler, labeler@tau)")
    evaluate.add_argument("--num-val", type=_positive, help="images of the evaluated split (default: all)")
    evaluate.add_argument("--image-size", type=_positive, help="synthetic image side (default: the checkpoint's, "
                                                               f"else {DEFAULTS['image_size']})")


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
    from .runtime import cpu_worker, default_threads
    from .train import train

    DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}
    _check_root(args.data, args.root)
    device = distributed.init_from_env(args.device)
    cpu_worker(args.threads or default_threads(args.model, device))
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


def run_evaluate(args) -> None:
    import torch

    from .config import TrainConfig
    from .evaluate import evaluate_checkpoint, evaluate_module
    from .models import build

    given = {name: getattr(args, name) for name in ("data", "root", "classes", "background", "skip_bad_files",
                                                      "num_val", "resize", "eval_split", "tau", "image_size")
             if getattr(args, name) is not None}
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        if args.weights or args.labeler:
            raise ValueError("--weights and --labeler go with --model; a checkpoint holds its own networks")
        path = _checkpoint_file(args.checkpoint)
        if "data" in given or "root" in given:
            _check_root(given.get("data", "folder" if "root" in given else None), given.get("root"))
        evaluation = evaluate_checkpoint(path, args.label_source, progress=args.progress, log=log,
                                         device=args.device, **given)
    else:
        _check_root(args.data or "synthetic", args.root)
        cfg = TrainConfig(**{**given, "data": args.data or "synthetic", "device": args.device, "fusion": None,
                             "train_labels": "none", "generator": False, "labeler": args.labeler})
        n = cfg.info.num_classes
        net = build.segmenter(args.model, n, weights=args.weights, image_size=cfg.image_size)
        label_net = build.labeler(args.labeler, n, weights=args.labeler_weights) if args.labeler else None
        evaluation = evaluate_module(net, cfg, args.label_source, labeler=label_net, progress=args.progress, log=log)
        evaluation.where = f"{args.model}{' with ' + args.weights if args.weights else ' (random weights)'} on " \
                           f"{evaluation.where}"
    print(f"{evaluation.where}; scores in percent, nats removed per pixel (mean over images)")
    print(evaluation.markdown())
    print("labels: " + "; ".join(SOURCE_HELP[kind] for kind in dict.fromkeys(s.kind for s in evaluation.sources)))
    quality = evaluation.labeler
    if quality is not None:
        print(f"image labeler: mAP {100 * quality['mAP']:.2f} over {quality['classes']} object classes with a "
              f"positive image; at tau {quality['tau']:g} precision {100 * quality['precision']:.2f}, recall "
              f"{100 * quality['recall']:.2f}")


def run_theory(args) -> None:
    from . import theory

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
