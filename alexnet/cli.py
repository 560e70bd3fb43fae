"""The command line: argparse sub-commands, parsing and dispatch only.

Exit codes: 0 ok, 2 bad usage or bad input, 1 runtime failure, 130/143 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alexnet import memory
from alexnet.errors import UsageError


def _models(args: argparse.Namespace) -> int:
    from alexnet.summary import models_text
    print(models_text())
    return 0


def _summary(args: argparse.Namespace) -> int:
    from alexnet.summary import summary_text
    print(summary_text(args.model, input_size=args.input_size, in_channels=args.in_channels,
                       num_classes=args.num_classes))
    return 0


TRAIN_FLAGS = ("data", "data_root", "model", "epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule",
               "out", "device", "seed", "workers", "max_steps", "train_subset", "pca_std", "label_smoothing",
               "image_size", "crop_size", "val_fraction", "padding", "val_subset", "towers",
               "loader_threads", "diagnose", "bias_lr_mult")


def _train(args: argparse.Namespace) -> int:
    from alexnet.recipes import resolve_config
    from alexnet.train import NonFiniteLoss, TrainingInterrupted, train
    overrides = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
    if args.model_kwargs is not None:
        overrides["model_kwargs"] = _json_object(args.model_kwargs, "--model-kwargs")
    for flag in ("compile", "quiet"):
        if getattr(args, flag):
            overrides[flag] = True
    if args.no_ten_crop:
        overrides["ten_crop"] = False
    if args.no_flip:
        overrides["flip"] = False
    if args.no_channels_last:
        overrides["channels_last"] = False
    demo = args.demo
    cfg = resolve_config(args.recipe or "quick", **overrides)
    resume = args.resume
    if demo and (Path(cfg.out) / "last.pt").exists():   # make demo again: continue (or just re-report) the run
        print(f"{cfg.out} holds an earlier demo run: continuing it (delete the folder to train from scratch)")
        resume = True
    try:
        result = train(cfg, resume=resume, force=args.force, overrides=overrides)
    except TrainingInterrupted as stop:
        print(f"alexnet train: interrupted; {stop}", file=sys.stderr)
        return stop.exit_code
    except NonFiniteLoss as err:
        print(f"alexnet train: stopped: {err}. The last good checkpoint (if any) is untouched. "
              "Try a lower --lr, or check the data for broken images or labels.", file=sys.stderr)
        return 1
    if "stopped_at" in result:
        return 0
    print(f"run folder: {result['out']} (config.json, metrics.jsonl, curves.png, last.pt, best.pt, TensorBoard events)")
    print(f"best val top-1 {result['best']['val_top1']:.4f} at epoch {result['best']['epoch']}")
    if demo:
        from alexnet.demo import after_training
        after_training(result["out"])
    return 0


def _json_object(text: str, flag: str) -> dict:
    import json
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{flag} must be a JSON object like '{{\"norm\": \"lrn\"}}': {err}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object, got {text!r}")
    return value


def _write_json(obj, target: str) -> None:
    import json
    text = json.dumps(obj, indent=2)
    if target == "-":
        print(text)
    else:
        with open(target, "w") as f:
            f.write(text + "\n")


def _eval(args: argparse.Namespace) -> int:
    import os
    from alexnet.evaluate import evaluate_checkpoints, format_report
    png = args.confusion or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"confusion_{args.split}.png")
    report = evaluate_checkpoints([args.checkpoint] + (args.ensemble or []), data=args.data, split=args.split,
                                  ten_crop=args.ten_crop, device=args.device, batch_size=args.batch_size,
                                  data_root=args.data_root, confusion_png=png, progress=args.json != "-")
    if args.json:
        _write_json(report, args.json)
    if args.json != "-":
        print(format_report(report))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from alexnet.predict import format_predictions, predict
    results, skipped = predict(args.checkpoint, args.inputs, topk=args.topk, ten_crop=args.ten_crop, device=args.device)
    if args.json:
        _write_json(results, args.json)
    if args.json != "-":
        print(format_predictions(results))
        if skipped:
            print(f"{len(skipped)} file(s) skipped (unreadable); see the messages above")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from alexnet.data import prepare
    report = prepare(args.data, args.out, size=args.size, workers=args.workers, strict=args.strict,
                     channels=args.channels, seed=args.seed, data_root=args.data_root,
                     image_column=args.image_column, label_column=args.label_column)
    print(report.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alexnet", description="AlexNet (NIPS 2012), reproduced faithfully.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list registered models with parameters and input size")
    p.set_defaults(func=_models)

    p = sub.add_parser("summary", help="layer-by-layer table: output shapes, parameters, multiply-adds")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, default=None, help="input side in pixels (default: the model's)")
    p.add_argument("--in-channels", type=int, default=None, help="input channels (default: the model's)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.set_defaults(func=_summary)

    p = sub.add_parser("prepare", help="decode a dataset once into a fast packed cache (+ mean image, PCA)")
    p.add_argument("data", metavar="DATA", help="builtin name, image folder, CSV file, idx or CIFAR folder")
    p.add_argument("--out", required=True, metavar="CACHE", help="folder to write the cache to")
    p.add_argument("--size", type=int, default=256,
                   help="short side rescaled to SIZE, then the central SIZExSIZE crop (paper: 256)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all CPU cores)")
    p.add_argument("--strict", action="store_true", help="stop on any bad image instead of skipping it")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="force 1 (grey) or 3 (RGB) channels (default: 1 only if every image is grey)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out validation order")
    p.add_argument("--data-root", default=None, help="folder holding builtin datasets (searched first)")
    p.add_argument("--image-column", default=None, help="CSV column of image paths or ids")
    p.add_argument("--label-column", default=None, help="CSV column of labels")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="train a model (no arguments: the quick recipe on Fashion-MNIST, then eval and predict)")
    p.add_argument("--recipe", choices=["quick", "paper", "paper-literal", "d2l"], default=None, help="named defaults (default: quick)")
    p.add_argument("--data", help="fashion-mnist, mnist, a class-folder tree, a CSV file, idx or CIFAR folder, or a prepared cache")
    p.add_argument("--data-root", help="folder holding builtin datasets (searched first)")
    p.add_argument("--model", help="a registered model (see `alexnet models`)")
    p.add_argument("--model-kwargs", help='JSON object of model arguments, e.g. \'{"norm": "lrn"}\'')
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch (split across torchrun processes)")
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["plateau", "onecycle", "cosine", "constant"])
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--pca-std", type=float, help="fancy-PCA lighting strength [4.1]; 0 turns it off")
    p.add_argument("--image-size", type=int, help="short side stored when preparing photo folders (paper: 256)")
    p.add_argument("--crop-size", type=int, help="training/eval crop (paper: 224)")
    p.add_argument("--padding", type=int, help="zero padding before random crops (small images)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--val-fraction", type=float, help="held-out fraction of train when the data has no val split")
    p.add_argument("--out", help="run folder (default: runs/<recipe>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--towers", metavar="DEV0,DEV1",
                   help="alexnet_2012's two towers on two devices, e.g. cuda:0,cuda:1 [3.2] (inputs on the first)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="decode workers when a photo folder is prepared")
    p.add_argument("--max-steps", type=int, help="stop (resumably) after this many optimizer steps")
    p.add_argument("--train-subset", type=int, help="train on the first N images only (smoke tests)")
    p.add_argument("--val-subset", type=int, help="validate on the first N held-out images only")
    p.add_argument("--loader-threads", type=int, help="threads making augmented batches (default 1)")
    p.add_argument("--bias-lr-mult", type=float,
                   help="biases learn at this multiple of --lr (paper recipe: 2, as Krizhevsky's code and Caffe)")
    p.add_argument("--diagnose", type=int, nargs="?", const=10, metavar="N",
                   help="record per-layer statistics every N steps (default 10): diagnose.jsonl, TensorBoard "
                        "scalars and histograms, a table after each epoch")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-ten-crop", action="store_true")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=_train, demo=False)

    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="data to evaluate on (default: the checkpoint's training data)")
    p.add_argument("--data-root")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--ten-crop", action=argparse.BooleanOptionalAction, default=None,
                   help="average the softmax over the paper's 10 views [4] (default: as the checkpoint's recipe)")
    p.add_argument("--ensemble", nargs="+", metavar="CKPT", help="more checkpoints whose softmax is averaged [6]")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON (- for stdout)")
    p.add_argument("--confusion", metavar="PNG", help="confusion-matrix image (default: next to the checkpoint)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="top-k classes for image files or folders")
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--ten-crop", action="store_true")
    p.add_argument("--json", metavar="FILE", help="write the predictions as JSON (- for stdout)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    memory.configure()   # first, before torch's first allocation (this module imports no torch): see alexnet.memory
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if argv == ["train"]:   # the embedded default: quick recipe, then eval and predict
        args.demo = True
    try:
        return args.func(args)
    except UsageError as err:
        print(f"alexnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
