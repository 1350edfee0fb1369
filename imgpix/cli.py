"""The ``imgpix`` command: train, evaluate, theory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import theory


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", choices=["synthetic", "voc"], default=None,
                        help="dataset (default: synthetic for train, the checkpoint's for evaluate)")
    parser.add_argument("--root", help="dataset root for --data voc (VOCdevkit/ and SBD/ inside)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--tau", type=_unit_interval, default=None, help="labeler threshold in [0, 1] (default 0.25)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgpix", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the fused model (resumes from --out if it holds a checkpoint)")
    _data_args(train)
    train.add_argument("--model", choices=["fcn32s", "fcn16s", "fcn8s", "tiny"], default="tiny")
    train.add_argument("--labeler", choices=["tiny", "vgg16", "resnet18", "none"], default="tiny")
    train.add_argument("--backbone-weights", help="local torchvision VGG16 state dict for the FCN backbone")
    train.add_argument("--fusion", choices=["dot", "add", "none"], default="dot")
    train.add_argument("--generator", action=argparse.BooleanOptionalAction, default=True)
    train.add_argument("--discriminator", action="store_true", help="Table 2 ablation (implies --no-generator)")
    train.add_argument("--procedure", choices=["3step", "joint"], default="3step")
    train.add_argument("--label-source", choices=["oracle", "none"], default="oracle",
                       help="image labels fused during training")
    train.add_argument("--epochs", type=_positive, default=8)
    train.add_argument("--batch-size", type=_positive, default=16)
    train.add_argument("--lr", type=float, default=0.05)
    train.add_argument("--num-train", type=_positive, help="synthetic training images")
    train.add_argument("--num-val", type=_positive, help="synthetic validation images")
    train.add_argument("--image-size", type=_positive, default=64, help="synthetic image size")
    train.add_argument("--crop-size", type=_positive, default=320, help="VOC training crop")
    train.add_argument("--workers", type=int, default=0)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--amp", action="store_true", help="bfloat16 autocast on GPU")
    train.add_argument("--channels-last", action="store_true")
    train.add_argument("--compile", action="store_true", help="torch.compile the segmentation net")
    train.add_argument("--out", default="runs/imgpix", help="output directory (default runs/imgpix)")

    evaluate = commands.add_parser("evaluate", help="PA / MPA / FWAA / MIOU of a checkpoint")
    _data_args(evaluate)
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint.pt, or the --out directory of train")
    evaluate.add_argument("--label-source", choices=["none", "oracle", "labeler"], default=None,
                          help="image labels at test time (default: labeler if trained, else oracle)")
    evaluate.add_argument("--num-val", type=_positive, help="synthetic validation images")

    table = commands.add_parser("theory", help="Eqs. 4-14 for given N, n, m, k")
    table.add_argument("--N", type=_positive, default=21)
    table.add_argument("--n", type=_positive, default=3)
    table.add_argument("--m", type=_positive, default=2)
    table.add_argument("--k", type=_positive, default=1)
    return parser


def run_train(args) -> None:
    from . import distributed
    from .train import TrainConfig, train

    device = distributed.init_from_env(args.device)
    cfg = TrainConfig(
        data=args.data or "synthetic", root=args.root, model=args.model,
        labeler=None if args.labeler == "none" else args.labeler, backbone_weights=args.backbone_weights,
        fusion=None if args.fusion == "none" else args.fusion,
        generator=args.generator and not args.discriminator, discriminator=args.discriminator,
        procedure=args.procedure, train_labels=args.label_source,
        tau=0.25 if args.tau is None else args.tau, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        num_train=args.num_train, num_val=args.num_val, image_size=args.image_size, crop_size=args.crop_size,
        seed=args.seed, device=device, workers=args.workers, amp=args.amp, channels_last=args.channels_last,
        compile=args.compile)
    try:
        train(cfg, args.out)
        if distributed.is_main():
            print(f"wrote {Path(args.out) / 'checkpoint.pt'} and {Path(args.out) / 'metrics.csv'}")
    finally:
        distributed.shutdown()


def run_evaluate(args) -> None:
    from .train import METRIC_NAMES, build_loader, evaluate, load_checkpoint

    path = Path(args.checkpoint)
    model, cfg, _ = load_checkpoint(path / "checkpoint.pt" if path.is_dir() else path, args.device)
    cfg.device, cfg.data = args.device, args.data or cfg.data
    cfg.root, cfg.num_val = args.root or cfg.root, args.num_val or cfg.num_val
    if args.tau is not None:
        model.tau = args.tau
    if model.fusion is None and args.label_source not in (None, "none"):
        raise ValueError("this checkpoint was trained with --fusion none: it ignores image labels")
    source = args.label_source or ("none" if model.fusion is None else "labeler" if model.labeler else "oracle")
    if source == "labeler" and model.labeler is None:
        raise ValueError("--label-source labeler needs a checkpoint trained with a labeler")
    result = evaluate(model, build_loader(cfg, "val", shuffle=False), source, args.device, progress=True)
    print(f"| labels | {' | '.join(METRIC_NAMES)} |")
    print(f"|---|{'---|' * len(METRIC_NAMES)}")
    print(f"| {source} | " + " | ".join(f"{100 * result[k]:.2f}" for k in METRIC_NAMES) + " |")


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
    print(f"N={N} n={n} m={m} k={k} (nats)")
    for name, value in rows:
        try:
            print(f"{name:34s} {value():.4f}")
        except ValueError as error:
            print(f"{name:34s} undefined ({error})")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and (args.data or "synthetic") == "voc" and not args.root:
        parser.error("--data voc needs --root DIR")
    try:
        {"train": run_train, "evaluate": run_evaluate, "theory": run_theory}[args.command](args)
    except (FileNotFoundError, ValueError) as error:
        print(f"imgpix {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
