"""The command line: argparse sub-commands, parsing and dispatch only.

Exit codes: 0 ok, 2 bad usage or bad input, 1 runtime failure, 130/143 interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from alexnet.util import atomic, checks
from alexnet.cli import compare as cli_compare
from alexnet.cli import convert as cli_convert
from alexnet.cli import export as cli_export
from alexnet.cli import flags
from alexnet.cli import serve as cli_serve
from alexnet.cli import show as cli_show
from alexnet.cli import study as cli_study
from alexnet.util import memory
from alexnet.errors import UsageError


def _models(args: argparse.Namespace) -> int:
    from alexnet.models.summary import models_text
    print(models_text())
    return 0


def _summary(args: argparse.Namespace) -> int:
    from alexnet.models.summary import summary_text
    for value, flag in ((args.in_channels, "--in-channels"), (args.num_classes, "--num-classes")):
        if value is not None:
            checks.at_least(value, 1, flag)
    checks.input_size(args.input_size or 0, args.in_channels or 3)
    try:
        text = summary_text(args.model, input_size=args.input_size, in_channels=args.in_channels,
                            num_classes=args.num_classes)
    except (RuntimeError, MemoryError) as err:
        if "alloc" not in str(err) and not isinstance(err, MemoryError):
            raise
        raise UsageError(f"{args.model} at --input-size {args.input_size or 'its own'}, --in-channels "
                         f"{args.in_channels or 'its own'} and --num-classes {args.num_classes} does not fit in "
                         f"memory ({str(err).splitlines()[0] if str(err) else 'out of memory'})") from None
    print(text)
    return 0


def _train(args: argparse.Namespace) -> int:
    from alexnet.train import finetune
    from alexnet.train.recipes import resolve_config
    from alexnet.train.run_folder import default_out, resume_config
    overrides = {name: getattr(args, name) for name in _config_fields() if getattr(args, name) is not None}
    if "model_kwargs" in overrides:
        overrides["model_kwargs"] = _json_object(overrides["model_kwargs"], "--model-kwargs")
    recipe = overrides.pop("recipe", None)
    if args.resume and args.force:
        raise UsageError("--resume continues the run in --out and --force starts it over; give one of them")
    if args.resume:        # the run's stored config, with what this command line changes on top (a recipe too)
        out = overrides.pop("out", None) or default_out(recipe)
        cfg = resume_config(out, dict(overrides, recipe=recipe))
    else:
        cfg = resolve_config(recipe or "quick", **overrides)
        cfg = finetune.adopt_init_model_kwargs(cfg, given="model_kwargs" in overrides)
    checks.writable_folder(cfg.out, "--out")
    checks.model_kwargs(cfg.model, cfg.model_kwargs)
    finetune.check_flags(cfg, resume=args.resume)    # --init exists, --freeze names a layer
    return _run_training(cfg, resume=args.resume, force=args.force)


def _demo(args: argparse.Namespace) -> int:
    """The embedded default: the quick recipe on Fashion-MNIST, then eval and predict; again: continue it."""
    from alexnet.train.recipes import resolve_config
    from alexnet.train.run_folder import resume_config
    cfg = resolve_config("quick")
    resume = (Path(cfg.out) / "last.pt").exists()
    if resume:
        print(f"{cfg.out} holds an earlier demo run: continuing it (delete the folder to train from scratch)")
        cfg = resume_config(cfg.out)
    code = _run_training(cfg, resume=resume, force=False)
    if code == 0:
        from alexnet.cli.demo import after_training
        after_training(cfg.out)
    return code


def _run_training(cfg, *, resume: bool, force: bool) -> int:
    from alexnet.train.distributed import world
    from alexnet.train.loop import train
    from alexnet.train.parts import resolve_device
    device = resolve_device(cfg.device)                 # --device, resolved once, here at the edge
    result = train(cfg, resume=resume, force=force, device=device)   # its failures carry their exit codes to main()
    if "stopped_at" not in result and world()[0] == 0:   # under torchrun, rank 0 alone reports
        print(f"run folder: {result['out']} (config.json, metrics.jsonl, curves.png, last.pt, best.pt, "
              "TensorBoard events)")
        print(f"best val top-1 {result['best']['val_top1']:.4f} at epoch {result['best']['epoch']}")
        if result["history"]:
            from alexnet.train.run_folder import time_to_accuracy_line
            print(time_to_accuracy_line(result["history"]))
    return 0


def _config_fields() -> dict:
    from alexnet.train.recipes import TrainConfig
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, its help from the field: --batch-size, --flip/--no-flip, ..."""
    from alexnet.train.recipes import resolve_config
    types = {"int": int, "float": float, "str": str, "str | None": str, "dict": str}
    quick = resolve_config("quick")
    for name, f in _config_fields().items():
        meta = dict(f.metadata)
        if f.type == "bool":
            meta["action"] = argparse.BooleanOptionalAction
        else:
            meta["type"] = types[f.type]
            meta.setdefault("metavar", None if "choices" in meta else name.split("_")[-1].upper())
        if name not in ("recipe", "out"):
            meta["help"] += f" (default: the recipe's; quick: {getattr(quick, name)})"
        p.add_argument("--" + name.replace("_", "-"), default=None, **meta)


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
        atomic.write_atomically(target, text + "\n")


def _eval(args: argparse.Namespace) -> int:
    import os
    from alexnet.inference.evaluate import evaluate_checkpoints, format_accuracy
    png = args.confusion or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"confusion_{args.split}.png")
    checks.at_least(args.batch_size, 1, "--batch-size")
    checks.writable_file(args.json, "--json")       # before evaluating: a finished evaluation is not thrown away
    checks.figure_file(png, "--confusion", (".png",))   # plot_confusion writes PNG
    report = evaluate_checkpoints([args.checkpoint] + (args.ensemble or []), data=args.data, split=args.split,
                                  ten_crop=args.ten_crop, flip_view=args.flip_view, device=args.device,
                                  batch_size=args.batch_size,
                                  data_root=args.data_root, confusion_png=png, progress=args.json != "-",
                                  backend=args.backend)
    if args.json:
        _write_json(report, args.json)
    if args.json != "-":
        print(format_accuracy(report))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from alexnet.inference.predict import format_predictions, predict
    checks.at_least(args.topk, 1, "--topk")
    checks.writable_file(args.json, "--json")
    results, skipped = predict(args.checkpoint, args.inputs, topk=args.topk, ten_crop=args.ten_crop,
                               flip_view=args.flip_view, device=args.device,
                               backend=args.backend)
    if args.json:
        _write_json(results + [{"path": path, "skipped": reason} for path, reason in skipped], args.json)
    if args.json != "-":
        print(format_predictions(results))
        if skipped:
            print(f"{len(skipped)} file(s) skipped (unreadable); see the messages above")
    if not results:
        raise UsageError(f"no image to predict: {len(skipped)} file(s) skipped as unreadable" if skipped else
                         f"no image files found in {' '.join(args.inputs)}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from alexnet.data import prepare
    checks.at_least(args.seed, 0, "--seed")
    checks.input_size(args.size, args.channels or 3, "--image-size")
    checks.writable_folder(args.out, "--out")
    # SIGTERM (main's terminated_as_exception): the staging folder and the decoding processes go, exit 143
    report = prepare(args.data, args.out, size=args.size, workers=args.workers, strict=args.strict,
                     channels=args.channels, seed=args.seed, data_root=args.data_root,
                     image_column=args.image_column, label_column=args.label_column, store=args.store,
                     quality=args.quality)
    print(report.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from alexnet import __version__
    parser = argparse.ArgumentParser(prog="alexnet", description="AlexNet (NIPS 2012), reproduced faithfully.")
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list registered models with parameters and input size")
    p.set_defaults(func=_models)

    p = sub.add_parser("summary", help="layer-by-layer table: output shapes, parameters, multiply-adds")
    p.add_argument("model")
    flags.input_size(p, "input side in pixels (default: the model's)")
    p.add_argument("--in-channels", type=int, default=None, help="input channels (default: the model's)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.set_defaults(func=_summary)

    p = sub.add_parser("prepare", help="decode a dataset once into a fast packed cache (+ mean image, PCA)")
    p.add_argument("data", metavar="DATA", help="builtin name, image folder, CSV file, idx or CIFAR folder, ILSVRC-2012 folder")
    p.add_argument("--out", required=True, metavar="CACHE", help="folder to write the cache to")
    p.add_argument("--image-size", "--size", dest="size", type=int, default=256,
                   help="short side rescaled to SIZE, then the central SIZExSIZE crop (paper: 256)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all CPU cores)")
    p.add_argument("--strict", action="store_true", help="stop on any bad image instead of skipping it")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="force 1 (grey) or 3 (RGB) channels (default: 1 only if every image is grey)")
    flags.seed(p, "the held-out validation order")
    p.add_argument("--store", choices=("auto", "raw", "jpeg"), default="auto",
                   help="raw: uint8 arrays, nothing to decode while training (196 KB per 256x256 colour image); "
                        "jpeg: each square as JPEG bytes, about 10x smaller, decoded by the loader (default auto: "
                        "jpeg for ILSVRC-2012 and for photo sources whose raw store would exceed 8 GiB, else raw)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of --store jpeg (default 90)")
    flags.data_root(p)
    p.add_argument("--image-column", default=None, help="CSV column of image paths or ids")
    p.add_argument("--label-column", default=None, help="CSV column of labels")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="train a model (every flag overrides the recipe's defaults)")
    _add_config_flags(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.set_defaults(func=_train)

    p = sub.add_parser("demo", help="the quick recipe on Fashion-MNIST, then eval and predict (again: continue it)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint, or an .onnx or .safetensors file from alexnet export")
    flags.data(p, "data to evaluate on (default: the checkpoint's training data)")
    flags.data_root(p)
    flags.split(p)
    flags.ten_crop(p)
    flags.flip_view(p)
    p.add_argument("--ensemble", nargs="+", metavar="CKPT", help="more checkpoints whose softmax is averaged [6]")
    flags.json_output(p, "report")
    p.add_argument("--confusion", metavar="PNG", help="confusion-matrix image (default: next to the checkpoint)")
    flags.batch_size(p)
    flags.device(p)
    flags.backend(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="top-k classes for image files or folders")
    p.add_argument("checkpoint", help="a checkpoint, or an .onnx or .safetensors file from alexnet export")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    flags.topk(p, "classes listed for each image (default: 5)")
    flags.ten_crop(p)
    flags.flip_view(p)
    flags.json_output(p, "predictions")
    flags.device(p)
    flags.backend(p, "auto", auto="onnxruntime for an .onnx export, torch (our eager path, the faster for files, "
                                  "docs/inference/) for a checkpoint")
    p.set_defaults(func=_predict)
    cli_compare.add_parsers(sub)
    cli_show.add_parsers(sub)
    cli_convert.add_parsers(sub)
    cli_study.add_parsers(sub)
    cli_export.add_parsers(sub)
    cli_serve.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    memory.configure()   # first, before torch's first allocation (this module imports no torch): see alexnet.util.memory
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:                 # bare `alexnet`: the commands, on stderr, and usage's exit status
        parser.print_help(sys.stderr)
        return 2
    from alexnet.errors import Failure, Terminated, terminated_as_exception
    try:
        with terminated_as_exception():   # SIGTERM anywhere (an implicit prepare too): cleanups run, exit 143
            return args.func(args)        # (training's loop takes SIGTERM over to save a resumable last.pt)
    except Failure as err:                # the one place errors become exit codes (alexnet.errors)
        print(f"alexnet {args.command}: {err.report()}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except Terminated as err:
        print(f"alexnet {args.command}: terminated", file=sys.stderr)
        return err.exit_code
