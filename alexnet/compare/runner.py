"""`alexnet compare`: the seeds' comparison family (LeNet-5, AlexNet, VGG, ResNet) on one data set, one budget.

Every model trains with the same budget (epochs, training subset, seeds, data pipeline) and its own family's
optimizer settings (``alexnet.compare.families``; with ``same_recipe`` the quick recipe's for all: only ``model``
differs), through the one training loop (``alexnet.train.loop.train``), at one common input size; each run is
then scored on the test split (centre view). ``compare_report`` writes the table, the JSON and the figure.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from alexnet.compare.families import FamilyRecipe, family_recipe
from alexnet.errors import NonFiniteLoss, UsageError
from alexnet.models import list_models, model_info
from alexnet.train.recipes import TrainConfig, resolve_config

# what a run reports, averaged over seeds per model
MEASURES = ("test_top1", "test_top5", "train_images_per_s", "train_seconds", "eval_seconds", "wall_seconds")


@dataclass
class Budget:
    """What every model gets alike."""
    epochs: int
    seeds: int                  # seeds 0 .. seeds-1, one training run per model and seed
    train_subset: int = 0       # 0: the whole training split
    val_subset: int = 0         # validate each epoch on the first N held-out images (0: all of them)
    batch_size: int | None = None   # None: the model's recipe's
    lr: float | None = None         # None: the model's recipe's
    same_recipe: bool = False       # every model with the quick recipe's settings, not its family's


def recipe_of(model: str, budget: Budget) -> FamilyRecipe:
    """What ``model`` trains with under ``budget``: its family's recipe, or the quick one with --same-recipe."""
    return FamilyRecipe("quick", ("*",), {}, "the quick recipe for every model (--same-recipe)") \
        if budget.same_recipe else family_recipe(model)


def parse_models(specs: list[str]) -> list[str]:
    """``["lenet5,alexnet_small", "vgg11_bn"]`` -> registered names in order, each once; unknown ones refused."""
    names = [name.strip() for spec in specs for name in spec.split(",") if name.strip()]
    if not names:
        raise UsageError("MODELS: name at least one model, e.g. lenet5,alexnet_small,vgg11_bn,resnet18")
    unknown = [name for name in names if name not in list_models()]
    if unknown:
        raise UsageError(f"MODELS: unknown model {', '.join(map(repr, unknown))}; choose from: {', '.join(list_models())}")
    return list(dict.fromkeys(names))


def _accepts(name: str, size: int) -> bool:
    info = model_info(name)
    return size in info.input_sizes if info.input_sizes else size >= info.min_input_size


def common_input_size(models: list[str], native: int) -> int | None:
    """The smallest side >= ``native`` that every model accepts (else the largest below it), or None."""
    infos = [model_info(name) for name in models]
    lower = max([native] + [info.min_input_size for info in infos if not info.input_sizes])
    candidates = sorted({size for info in infos for size in info.input_sizes} | {lower})
    accepted = [size for size in candidates if all(_accepts(name, size) for name in models)]
    above = [size for size in accepted if size >= native]
    return min(above) if above else (max(accepted) if accepted else None)


def choose_input_size(models: list[str], native: int, requested: int | None) -> int:
    """``--input-size`` (checked against every model) or, without it, ``common_input_size``."""
    if requested is not None:
        if requested < 1:
            raise UsageError(f"--input-size must be >= 1, got {requested}")
        refused = [name for name in models if not _accepts(name, requested)]
        if refused:
            works = common_input_size(models, requested)
            hint = f"--input-size {works} suits all of them" if works else "no single size suits all of them"
            needs = ", ".join(f"{name} needs {_needs(name)}" for name in refused)
            raise UsageError(f"--input-size {requested}: {needs}; {hint}")
        return requested
    size = common_input_size(models, native)
    if size is None:
        raise UsageError(f"no one input size suits all of {', '.join(models)} "
                         f"({'; '.join(f'{name}: {_needs(name)}' for name in models)}); compare them in two runs")
    return size


def _needs(name: str) -> str:
    info = model_info(name)
    return " or ".join(map(str, info.input_sizes)) + " px" if info.input_sizes else f">= {info.min_input_size} px"


def run_config(model: str, seed: int, *, data: str, data_root: str | None, input_size: int, native: int,
               out: Path, budget: Budget, device: str, quiet: bool) -> TrainConfig:
    """The quick recipe with this model's family settings (``recipe_of``), this seed, at ``input_size`` (resized
    when it is not the stored size); the budget's --batch-size and --lr win over the family's."""
    overrides = dict(recipe_of(model, budget).overrides)
    overrides.update({k: v for k, v in (("batch_size", budget.batch_size), ("lr", budget.lr)) if v is not None})
    return resolve_config("quick", **overrides, data=data, data_root=data_root, model=model,
                          out=str(out / "runs" / f"{model}-seed{seed}"), epochs=budget.epochs, seed=seed,
                          train_subset=budget.train_subset, val_subset=budget.val_subset,
                          device=device, quiet=quiet,
                          crop_size=input_size, resize_to=0 if input_size == native else input_size)


def measure_model(checkpoint: str) -> dict:
    """Parameters and multiply-adds per image of the network a checkpoint holds, at its input size."""
    from alexnet.checkpoint import load_model
    from alexnet.models.summary import layer_table
    model, ckpt = load_model(checkpoint)
    spec = ckpt.model
    rows = layer_table(model, (spec.in_channels, spec.input_size, spec.input_size))
    return {"params": sum(p.numel() for p in model.parameters()), "macs": sum(row.macs for row in rows)}


def recipe_row(cfg: TrainConfig, recipe: FamilyRecipe) -> dict:
    """What a run trained with: the family, its settings in words, their source, and the batch and lr used."""
    return {"family": recipe.family, "settings": recipe.describe(), "source": recipe.source,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
            "schedule": cfg.schedule}


def run_one(cfg: TrainConfig, recipe: FamilyRecipe | None = None) -> dict:
    """Train one model and seed, then score its best checkpoint on the test split (centre view)."""
    from alexnet.inference.evaluate import evaluate_checkpoints
    from alexnet.train.loop import train
    started = time.perf_counter()
    result = train(cfg, force=True)
    trained = time.perf_counter()
    best = str(Path(result["out"]) / "best.pt")
    report = evaluate_checkpoints([best], split="test", ten_crop=False, device=cfg.device, progress=False)
    finished = time.perf_counter()
    history = result["history"]
    return {"model": cfg.model, "seed": cfg.seed, "out": result["out"], "epochs": len(history),
            "recipe": recipe_row(cfg, recipe or family_recipe(cfg.model)),
            "test_top1": report["top1"], "test_top5": report["top5"], "test_images": report["n"],
            "best_val_top1": result["best"]["val_top1"], "best_epoch": result["best"]["epoch"],
            **measure_model(best),
            "train_images_per_s": statistics.fmean(row["images_per_s"] for row in history),
            "train_seconds": trained - started, "eval_seconds": finished - trained, "wall_seconds": finished - started,
            "history": [{k: row[k] for k in ("epoch", "train_loss", "train_top1", "val_top1", "images_per_s", "seconds")}
                        for row in history]}


def summarise(runs: list[dict], models: list[str]) -> list[dict]:
    """Per model: the mean of each measure over its seeds, and the standard deviation when there are several."""
    rows = []
    for name in models:
        mine = [run for run in runs if run["model"] == name and "failed" not in run]
        if not mine:                       # every seed diverged: the row says so instead of a number
            failed = next(run for run in runs if run["model"] == name)
            rows.append({"model": name, "seeds": 0, "failed": failed["failed"], "recipe": failed.get("recipe")})
            continue
        row = {"model": name, "seeds": len(mine), "params": mine[0]["params"], "macs": mine[0]["macs"],
               "recipe": mine[0].get("recipe")}
        for key in MEASURES:
            values = [run[key] for run in mine]
            row[key] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    return rows


def compare(models: list[str], *, data: str = "fashion-mnist", data_root: str | None = None, out: str = "runs/compare",
            budget: Budget, input_size: int | None = None, device: str = "auto", quiet: bool = False,
            command: str = "", log=print) -> dict:
    """Train every model once per seed on ``data`` with one budget; return the comparison (see compare_report)."""
    from alexnet.data import open_dataset
    from alexnet.util.machine import load_average, machine
    if budget.seeds < 1:
        raise UsageError(f"--seeds must be >= 1 (the number of seeds per model), got {budget.seeds}")
    # the budget's flags, and a size some model refuses, are checked before any data is opened
    resolve_config("quick", epochs=budget.epochs, train_subset=budget.train_subset, val_subset=budget.val_subset,
                   batch_size=budget.batch_size, lr=budget.lr, device=device)
    if input_size is not None:
        choose_input_size(models, input_size, input_size)
    out_path = Path(out)
    train_set = open_dataset(data, "train", data_root=data_root, progress=not quiet)
    native, channels = train_set.images.shape[1], train_set.images.shape[-1]
    size = choose_input_size(models, native, input_size)
    configs = [run_config(name, seed, data=data, data_root=data_root, input_size=size, native=native, out=out_path,
                          budget=budget, device=device, quiet=quiet)
               for seed in range(budget.seeds) for name in models]   # every config checked before any training
    runs, started = [], time.perf_counter()
    for i, cfg in enumerate(configs, 1):
        log(f"[{i}/{len(configs)}] {cfg.model} seed {cfg.seed}: training {cfg.epochs} epoch(s) into {cfg.out}")
        try:
            runs.append(run_one(cfg, recipe_of(cfg.model, budget)))
        except NonFiniteLoss as err:   # one model diverging loses neither the other runs nor the report
            runs.append({"model": cfg.model, "seed": cfg.seed, "out": cfg.out, "failed": f"diverged: {err}",
                         "recipe": recipe_row(cfg, recipe_of(cfg.model, budget))})
            log(f"[{i}/{len(configs)}] {cfg.model} seed {cfg.seed}: {runs[-1]['failed']}; going on with the rest")
            continue
        log(f"[{i}/{len(configs)}] {cfg.model} seed {cfg.seed}: test top-1 {runs[-1]['test_top1']:.4f} "
            f"({runs[-1]['wall_seconds']:.0f} s)")
    if all("failed" in run for run in runs):
        raise NonFiniteLoss("every run diverged; try a lower --lr")
    first = configs[0]
    return {"command": command, "machine": machine(), "load_average_after": load_average(),
            "data": first.data, "classes": len(train_set.classes), "channels": channels,
            "stored_size": native, "input_size": size, "resized": size != native,
            "budget": {**asdict(budget), "recipe": "quick" if budget.same_recipe else "each family's own",
                       "batch_size": _common(c.batch_size for c in configs), "lr": _common(c.lr for c in configs),
                       "seeds": list(range(budget.seeds)),
                       "train_images": min(budget.train_subset or len(train_set.labels), len(train_set.labels))},
            "test": {"split": "test", "views": "centre",
                     "images": next(run["test_images"] for run in runs if "failed" not in run)},
            "total_seconds": time.perf_counter() - started, "models": summarise(runs, models), "runs": runs}


def _common(values) -> object:
    """The one value every run used, or None when they differ (each row then says its own)."""
    values = set(values)
    return values.pop() if len(values) == 1 else None
