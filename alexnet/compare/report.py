"""What `alexnet compare` writes: ``compare.json`` (everything), ``compare.md`` (the table), ``compare.png``
(test top-1 against parameters and against training speed). Every file is written atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path

from matplotlib.ticker import NullFormatter

from alexnet.util.atomic import write_atomically
from alexnet.util.plots import new_figure, save_figure


def _mean(row: dict, key: str, fmt: str) -> str:
    std = row.get(f"{key}_std")
    return format(row[key], fmt) + (f" ± {format(std, fmt)}" if std is not None else "")


def _count(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def headline(result: dict) -> str:
    """One sentence: the data, the input size, the budget and the test set."""
    budget, test = result["budget"], result["test"]
    size = (f"{result['input_size']} px (resized from {result['stored_size']})" if result["resized"]
            else f"{result['input_size']} px")
    seeds = budget["seeds"]
    val = f", validation on {budget['val_subset']:,} held-out images per epoch" if budget.get("val_subset") else ""
    seeds_text = f"{len(seeds)} seed" + ("s (mean ± std)" if len(seeds) > 1 else f" ({seeds[0]})")
    same = budget.get("recipe", "quick") == "quick"
    recipe = "the quick recipe's training for every model" if same else "each model with its family's recipe"
    common = "".join(f", {name} {format(budget[key], fmt)}" for key, name, fmt in (("batch_size", "batch", "d"),
                                                                                  ("lr", "lr", "g"))
                     if budget.get(key) is not None)
    return (f"{result['data']}, input {size}, {recipe}: {budget['epochs']} epoch(s) on {budget['train_images']:,} "
            f"training images{common}, {seeds_text}{val}; test top-1/top-5 on the {test['images']:,} test images, "
            f"{test['views']} view.")


def _trained_with(row: dict) -> str:
    recipe = row.get("recipe")
    if not recipe:
        return ""
    return f"{recipe['family']}: batch {recipe['batch_size']}, lr {recipe['lr']:g}, momentum {recipe['momentum']:g}, " \
           f"wd {recipe['weight_decay']:g}, {recipe['schedule']}"


def markdown_table(result: dict) -> str:
    """The table (Markdown, readable as plain text too), one row per model."""
    header = ["model", "test top-1", "test top-5", "parameters", "multiply-adds", "train img/s", "wall time",
              "trained with"]
    rows = [[f"`{r['model']}`", _mean(r, "test_top1", ".4f"), _mean(r, "test_top5", ".4f"), f"{r['params']:,}",
             _count(r["macs"]), _mean(r, "train_images_per_s", ",.0f"), _mean(r, "wall_seconds", ".0f") + " s",
             _trained_with(r)]
            if "failed" not in r else [f"`{r['model']}`", "diverged"] + [""] * 5 + [_trained_with(r)]
            for r in result["models"]]
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]

    text = (0, len(header) - 1)                   # left-aligned; the numbers between are right-aligned

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i in text else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 2) if i in text else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def markdown(result: dict) -> str:
    """compare.md: the headline, the table, and how it was made."""
    sources = {r["recipe"]["family"]: r["recipe"]["source"] for r in result["models"] if r.get("recipe")}
    recipes = "".join(f"- {family}: {source}\n" for family, source in sources.items())
    return (f"{headline(result)}\n\n{markdown_table(result)}\n\n" + (f"Recipes:\n{recipes}\n" if recipes else "") +
            f"Multiply-adds per image at the input size (conv and fc layers, as `alexnet summary` counts them); "
            f"train img/s: the mean over epochs of the training images per second (validation excluded); wall "
            f"time: training (data loading and per-epoch validation included) plus the test evaluation.\n\n"
            f"Command: `{result['command']}`  \nMachine: {result['machine']}; load average after the runs: "
            f"{result['load_average_after']}\n")


def plot_compare(result: dict, path: str | os.PathLike) -> None:
    """Test top-1 against parameters (log) and against training images per second (log), one labelled point
    per model, with error bars when there are several seeds."""
    fig = new_figure((12, 4.8))
    axes = fig.subplots(1, 2)
    panels = (("params", "parameters (log scale)"), ("train_images_per_s", "training images per second (log scale)"))
    for ax, (key, label) in zip(axes, panels):
        for row in (r for r in result["models"] if "failed" not in r):
            ax.errorbar(row[key], row["test_top1"], yerr=row["test_top1_std"], xerr=row.get(f"{key}_std"),
                        fmt="o", capsize=3)
            ax.annotate(row["model"], (row[key], row["test_top1"]), textcoords="offset points", xytext=(6, 4),
                        fontsize=9)
        if result.get("classes"):
            ax.axhline(1 / result["classes"], color="grey", linestyle="--", linewidth=1, label="chance (1 / classes)")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())    # only the powers of ten labelled
        ax.set_xlabel(label)
        ax.set_ylabel("test top-1 accuracy")
        ax.grid(alpha=0.3, which="both")
        ax.margins(x=0.3, y=0.15)
    axes[0].set_title("accuracy vs size")
    axes[1].set_title("accuracy vs training speed")
    budget = result["budget"]
    fig.suptitle(f"{result['data']} at {result['input_size']} px: {budget['epochs']} epoch(s), "
                 f"{budget['train_images']:,} training images, {len(budget['seeds'])} seed(s)")
    save_figure(fig, path)


def write_outputs(result: dict, out: str | os.PathLike) -> dict[str, str]:
    """compare.json, compare.md and compare.png in ``out``; returns their paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "md": out / "compare.md", "png": out / "compare.png"}
    write_atomically(paths["json"], json.dumps(result, indent=2) + "\n")
    write_atomically(paths["md"], markdown(result))
    plot_compare(result, paths["png"])
    return {kind: str(path) for kind, path in paths.items()}
