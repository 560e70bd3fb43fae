"""``alexnet study``: the paper's claims [3-7] as paired, seeded ablations, trained with the one training loop.

Each (settings, seed, budget, data) run lives in ``DIR/runs/<hash of its resolved config>/`` and is reused
when complete, so the baseline run of one seed serves every study that contains it. A study writes
``DIR/<study>/results.json``, ``table.md`` and ``<study>.png`` (see ``docs/studies.md``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

from alexnet.study import stats as study_stats
from alexnet.errors import NonFiniteLoss, UsageError
from alexnet.train.recipes import NEUTRAL, resolve_config
from alexnet.study.studies import BASE, BUDGETS, FIG1_BASE, STUDIES, Arm, Study
from alexnet.study.metrics import errors, measure, write_json
from alexnet.study.plots import plot_study
from alexnet.train.loop import train

RECORD_KEYS = ("config", "history", "curve", "diverged", "seconds")     # what ensure_run writes
DESCRIPTIVE = ("params", "lrn_divisor_init", "lrn_divisor_end", "train_top1_error", "final_train_error")


def layer_lists(model: str, model_kwargs: dict) -> dict:
    """The conv layers' widths, kernels, strides, paddings and groups, and which layers have a norm or a pool."""
    import torch
    from alexnet.models import create_model
    with torch.device("meta"):
        net = create_model(model, num_classes=10, **model_kwargs)
    convs = [m for name, m in net.features.named_children() if name.startswith("conv")]
    names = [name for name, _ in net.features.named_children()]
    return {"widths": [c.out_channels for c in convs], "kernels": [c.kernel_size[0] for c in convs],
            "strides": [c.stride[0] for c in convs], "paddings": [c.padding[0] for c in convs],
            "groups": [c.groups for c in convs],
            "norm_layers": [i for i in range(1, len(convs) + 1) if f"norm{i}" in names],
            "pool_layers": [i for i in range(1, len(convs) + 1) if f"pool{i}" in names]}


def arm_settings(study: Study, arm: Arm, options: dict) -> dict:
    """The config overrides of one arm: the study base, the budget, the user's flags, then the arm's choice."""
    base = dict(FIG1_BASE if study.kind == "fig1" else BASE)
    base.update(options["budget"]["fig1" if study.kind == "fig1" else "train"])
    base.update({k: v for k, v in options["user"].items() if v is not None and not (study.kind == "fig1" and k == "model")})
    change = arm.overrides(layer_lists(base["model"], base["model_kwargs"])) if callable(arm.overrides) \
        else arm.overrides
    change = json.loads(json.dumps(change))                     # tuples -> lists, as results.json shows them
    settings = dict(base, **{k: v for k, v in change.items() if k != "model_kwargs"})
    settings["model_kwargs"] = {**base["model_kwargs"], **change.get("model_kwargs", {})}
    return settings


def run_config(settings: dict, seed: int, runs: Path):
    """The resolved TrainConfig of one run, its folder named by the hash of everything that shapes it."""
    cfg = resolve_config("quick", **{**NEUTRAL, **settings}, seed=seed, quiet=True, out="-")
    cfg = dataclasses.replace(cfg, model_kwargs=dict(settings["model_kwargs"]))   # the study's, not the recipe's
    shaping = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "quiet", "device")
               and not (k in NEUTRAL and v == NEUTRAL[k])}      # the cache keys of runs made before these fields
    key = hashlib.sha1(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]
    cfg.out = str(runs / key)
    return cfg


def ensure_run(cfg, block: int, log) -> dict:
    """Train ``cfg`` unless its folder holds a complete run; returns its record (history, curve, seconds)."""
    out = Path(cfg.out)
    done = out / "study_run.json"
    record = complete_record(out, log)
    if record is not None:
        return record
    log(f"  training {out.name}: seed {cfg.seed}, {cfg.model} {json.dumps(cfg.model_kwargs)} ...")
    curve = {"step": [], "epoch": [], "seconds": [], "error": [], "loss": []}
    acc = {"hits": 0, "n": 0, "loss": 0.0, "steps": 0}
    steps_per_epoch = max(cfg.train_subset or 1, cfg.batch_size) // cfg.batch_size
    started = time.perf_counter()

    def after_step(step: int, loss, hits, n: int) -> None:   # step: steps done; the error of each block of steps
        acc["hits"] += int(hits)
        acc["n"] += n
        acc["loss"] += float(loss)
        acc["steps"] += 1
        if acc["steps"] == block:
            curve["step"].append(step)
            curve["epoch"].append(step / steps_per_epoch)
            curve["seconds"].append(time.perf_counter() - started)
            curve["error"].append(100 * (1 - acc["hits"] / acc["n"]))
            curve["loss"].append(acc["loss"] / acc["steps"])
            acc.update(hits=0, n=0, loss=0.0, steps=0)

    record = {"config": cfg.to_dict()}
    try:
        result = train(cfg, force=True, after_step=after_step)
        record.update(history=result["history"], curve=curve, diverged=False)
    except NonFiniteLoss as err:
        record.update(history=[], curve=curve, diverged=True, error=str(err))
    record["seconds"] = time.perf_counter() - started
    write_json(record, done)
    return record


def complete_record(out: Path, log) -> dict | None:
    """The record (``study_run.json``) of the complete run in ``out``, or None: none there, or one damaged from
    outside (not JSON, keys missing, its last.pt gone), which is said and then treated as missing."""
    done = out / "study_run.json"
    if not done.exists():
        return None
    try:
        record = json.loads(done.read_text())
        whole = isinstance(record, dict) and all(key in record for key in RECORD_KEYS) \
            and isinstance(record["curve"], dict) and (record["diverged"] or (out / "last.pt").is_file())
    except (OSError, ValueError):           # ValueError: JSONDecodeError, UnicodeDecodeError
        whole = False
    if whole:
        return record
    log(f"  {done} is damaged (not the record of a complete run): treating the run as missing, training it again")
    return None


def run_values(record: dict, run_dir: Path, names: list[str], options: dict, evaluation: dict) -> dict:
    """One seed's entry of an arm's ``runs``: the required numbers plus the study's own metrics."""
    row = {"seed": record["config"]["seed"], "run": run_dir.name, "seconds": record["seconds"],
           "diverged": record["diverged"],
           "train_loss_curve": [round(v, 4) for v in record["curve"]["loss"]],
           "final_train_top1": record["history"][-1]["train_top1"] if record["history"] else None}
    wanted = list(dict.fromkeys(["test_top1_error", "test_top5_error", *names]))
    if record["diverged"]:
        return dict(row, **{name: None for name in wanted})
    return dict(row, **measure(run_dir, record, wanted, options["budget"], evaluation))


def _fig1_lr(study: Study, arm: Arm, options: dict, log) -> tuple[float, list]:
    """[3.1] 'each arm at its best lr': one seed per lr, the lr with the fewest epochs to 25% training error."""
    sweep = []
    for lr in options["budget"]["fig1_lrs"]:
        settings = dict(arm_settings(study, arm, options), lr=lr)
        cfg = run_config(settings, 0, options["runs"])
        values = run_values(ensure_run(cfg, options["budget"]["curve_block"], log), Path(cfg.out),
                            ["epochs_to_25", "final_train_error"], options, {})
        sweep.append({"lr": lr, "epochs_to_25": values["epochs_to_25"],
                      "final_train_error": values["final_train_error"]})
    best = min(sweep, key=lambda s: (s["epochs_to_25"] is None, s["epochs_to_25"] or 0))
    return best["lr"], sweep


def _arm_runs(study: Study, arm: Arm, options: dict, log) -> dict:
    """Train (or reuse) the arm's runs and measure them, one entry per seed."""
    seeds, names = options["seeds"], [study.metric, *study.extra_metrics]
    settings, entry = arm_settings(study, arm, options), {"name": arm.name}
    if study.kind == "fig1":
        settings["lr"], entry["lr_sweep"] = _fig1_lr(study, arm, options, log)
    entry["settings"] = dict(settings, evaluation=arm.evaluation)
    block = options["budget"]["curve_block"]
    ensemble = arm.evaluation.get("ensemble", 1)
    configs = [run_config(settings, seed, options["runs"]) for seed in range(seeds + ensemble - 1)]
    records = [ensure_run(cfg, block, log) for cfg in configs]
    entry["settings"].setdefault("data", configs[0].data)
    runs = []
    for s in range(seeds):
        row = run_values(records[s], Path(configs[s].out), names, options, arm.evaluation)
        if ensemble > 1:                        # [6] the softmax average of nets s .. s + ensemble - 1
            found = errors([str(Path(c.out) / "last.pt") for c in configs[s:s + ensemble]], "test",
                           options["budget"]["test_subset"])
            row.update(test_top1_error=found["top1_error"], test_top5_error=found["top5_error"],
                       members=[Path(c.out).name for c in configs[s:s + ensemble]])
        runs.append(row)
    entry["runs"] = runs
    if study.kind == "fig1":                    # Fig. 1's curves: training error per block of steps
        entry["curves"] = [{"seed": r["config"]["seed"], "epoch": r["curve"]["epoch"], "error": r["curve"]["error"]}
                           for r in records[:seeds]]
    metrics = [k for k in runs[0] if k not in ("seed", "run", "diverged", "train_loss_curve", "members")]
    summary = {m: study_stats.mean_std([r[m] for r in runs]) for m in metrics}
    entry["mean"] = {m: s["mean"] for m, s in summary.items()}
    entry["std"] = {m: s["std"] for m, s in summary.items()}
    return entry


def _effects(study: Study, arms: list[dict]) -> list[dict]:
    """Each non-reference arm against the reference, paired by seed, on every measured metric."""
    reference, rows = arms[0], []
    metrics = list(dict.fromkeys([study.metric, "test_top1_error", "test_top5_error", *study.extra_metrics]))
    for entry in arms[1:]:
        arm = study.arm(entry["name"])
        for metric in metrics:
            effect = study_stats.paired_effect([r[metric] for r in entry["runs"]],
                                               [r[metric] for r in reference["runs"]])
            if effect["n"] == 0 and metric != study.metric:   # e.g. LRN's divisor against a net without LRN
                continue
            claimed = metric not in DESCRIPTIVE and (study.kind != "fig1" or metric.endswith("_to_25"))
            expected = arm.expected if claimed else None       # Fig. 1 claims speed, not test error
            paper_key = {"test_top1_error": "top1", "test_top5_error": "top5"}.get(metric)
            rows.append({"arm": entry["name"], "reference": reference["name"], "metric": metric,
                         **{k: effect[k] for k in ("mean", "low", "high", "n", "std")},
                         "expected_sign": expected,
                         "paper": study.paper.get(paper_key) if entry["name"] == study.about else None,
                         "verdict": study_stats.verdict(effect, expected) if expected else None})
    return rows


def run_study(name: str, options: dict, log=None) -> dict:
    """Run one study (``options``: seeds, budget (a BUDGETS entry), user overrides, out, runs); returns results."""
    log = log or (lambda *a: print(*a, file=sys.stderr, flush=True))
    study = STUDIES[name] if isinstance(name, str) else name
    out = Path(options["out"])
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log(f"study {study.name}: {len(study.arms)} arms x {options['seeds']} seeds")
    arms = [_arm_runs(study, arm, options, log) for arm in study.arms]
    effects = _effects(study, arms)
    main = next(e for e in effects if e["arm"] == study.about and e["metric"] == study.metric)
    results = {"study": study.name,
               "claim": {"text": study.claim, "section": study.section, "paper": study.paper, "notes": study.notes},
               "data": arms[0]["settings"]["data"], "budget": options["budget_name"], "seeds": options["seeds"],
               "metric": study.metric, "reference": study.reference.name, "about": study.about,
               "sign_convention": "effect = arm - reference, paired by seed; errors in percentage points "
                                  "(negative: the arm lowers the error); 95% t interval over seeds",
               "arms": arms, "effects": effects,
               "effect": {k: main[k] for k in ("arm", "metric", "mean", "low", "high", "n")},
               "verdict": main["verdict"], "seconds": None}
    if study.kind == "fig1":
        means = {a["name"]: a["mean"]["epochs_to_25"] for a in arms}
        results["speed_up"] = (means["tanh"] / means["relu"]) if means["tanh"] and means["relu"] else None
    results["seconds"] = time.perf_counter() - started
    write_json(results, out / "results.json")
    write_text(out / "table.md", table(results))
    plot_study(results, out / f"{study.name}.png")
    log(f"study {study.name}: verdict {results['verdict']} ({results['seconds']:.0f}s)")
    return results


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _num(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(results: dict) -> str:
    """The study as Markdown: the claim, each arm's means, each effect with its interval and verdict."""
    claim = results["claim"]
    metrics = [m for m in results["arms"][0]["mean"] if m not in ("final_train_top1",)]
    lines = [f"# {results['study']} [{claim['section']}]", "", f"Paper: {claim['text']}. "
             f"Paper's numbers: {json.dumps(claim['paper']) if claim['paper'] else 'none given'}.", "",
             f"Data: {results['data']}, budget {results['budget']}, {results['seeds']} seeds. {claim['notes']}", "",
             "| arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for arm in results["arms"]:
        lines.append(f"| {arm['name']} | " + " | ".join(
            f"{_num(arm['mean'][m])} ± {_num(arm['std'][m])}" for m in metrics) + " |")
    lines += ["", f"Effects: {results['sign_convention']}.", "",
              "| arm vs reference | metric | effect | 95% interval | paper | verdict |", "|---|---|---|---|---|---|"]
    for e in results["effects"]:
        interval = f"[{_num(e['low'])}, {_num(e['high'])}]" if e["low"] is not None else "—"
        lines.append(f"| {e['arm']} vs {e['reference']} | {e['metric']} | {_num(e['mean'])} | {interval} | "
                     f"{_num(e['paper'])} | {e['verdict'] or '—'} |")
    if results.get("speed_up") is not None:
        lines += ["", f"Speed-up (tanh epochs to 25% / relu epochs to 25%): {results['speed_up']:.2f} (paper: 6)"]
    lines += ["", f"Verdict ({results['about']}, {results['metric']}): **{results['verdict']}**", ""]
    return "\n".join(lines)


def study_options(*, seeds: int | None, budget: str, epochs: int | None, data: str | None, model: str | None,
                  out: str) -> dict:
    """The options ``run_study`` takes, from the command line's flags."""
    if budget not in BUDGETS:
        raise UsageError(f"--budget must be quick or full, got {budget!r}")
    spec = json.loads(json.dumps(BUDGETS[budget]))
    seeds = spec["seeds"] if seeds is None else seeds
    if seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {seeds}")
    user = {"epochs": epochs, "data": data, "model": model}
    if data is not None and data not in ("fashion-mnist", "mnist"):   # photos: the paper's 224 of 256 [4]
        user.update(image_size=256, crop_size=224)
        if budget == "full":                # someone else's data at full budget: all of it
            spec["train"].update(train_subset=0, val_subset=0)
            spec["fig1"].update(train_subset=0)
    if model is not None:
        try:
            layer_lists(model, BASE["model_kwargs"])
        except (TypeError, AttributeError):
            raise UsageError(f"--model {model} does not take the studies' AlexNet arguments (norm, lrn, dropout, "
                             "layer lists); choose an AlexNet-family model, e.g. alexnet_small or alexnet_2012") from None
    return {"seeds": seeds, "budget": spec, "budget_name": budget, "user": user, "out": out,
            "runs": Path(out) / "runs"}
