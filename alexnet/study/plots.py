"""The figure of each ``alexnet study``: Fig. 1's training-error curves [3.1], or each arm's test error per seed."""
from __future__ import annotations

import os

from alexnet.util.plots import new_figure, save_figure


def plot_study(results: dict, path: str | os.PathLike) -> None:
    """Fig. 1 (training error against epochs, ReLU solid, tanh dashed, the 25% line) for ``relu-vs-tanh``;
    otherwise each arm's mean test error with its seeds as dots, top-1 and top-5 side by side."""
    if results["study"] == "relu-vs-tanh":
        _plot_fig1(results, path)
        return
    fig = new_figure((4 + 1.6 * len(results["arms"]), 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("test_top1_error", "test_top5_error")):
        for x, arm in enumerate(results["arms"]):
            values = [r[metric] for r in arm["runs"] if r[metric] is not None]
            if values:
                ax.bar(x, sum(values) / len(values), color="C0" if x else "C7", alpha=0.6)
                ax.plot([x] * len(values), values, "k.", markersize=6)
        ax.set_xticks(range(len(results["arms"])), [a["name"] for a in results["arms"]], rotation=20, ha="right")
        ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{results['study']} [{results['claim']['section']}]: verdict {results['verdict']} "
                 f"(dots: seeds; grey: reference)")
    save_figure(fig, path)


def _plot_fig1(results: dict, path: str | os.PathLike) -> None:
    fig = new_figure((6, 4.5))
    ax = fig.subplots()
    for arm in results["arms"]:
        style = "-" if arm["name"] == "relu" else "--"
        for i, run in enumerate(arm.get("curves", [])):
            ax.plot(run["epoch"], run["error"], style, color="C0" if arm["name"] == "relu" else "C3",
                    alpha=0.8, label=f"{arm['name']} (lr {arm['settings']['lr']:g})" if i == 0 else None)
    ax.axhline(25, color="k", linewidth=0.8, linestyle=":", label="25% training error")
    ax.set_xlabel("epochs")
    ax.set_ylabel("training error rate (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title("Fig. 1 [3.1]: ReLU (solid) vs tanh (dashed), each seed a line")
    save_figure(fig, path)
