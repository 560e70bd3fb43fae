"""``alexnet study``: the sub-command's parser and handler (light: heavy modules load inside the handler)."""
from __future__ import annotations

import argparse
import sys

from alexnet.cli import flags
from alexnet.errors import UsageError


def add_parsers(sub) -> None:
    """Add ``alexnet study`` to the CLI's sub-parsers."""
    p = sub.add_parser("study", help="reproduce a claim of the paper with paired, seeded ablations (--list)")
    p.add_argument("name", nargs="?", help="a study (see --list), or all")
    p.add_argument("--list", action="store_true", help="list the studies with the paper's claim and section")
    flags.data(p, "dataset (default: fashion-mnist at 24 px crops of 28)")
    p.add_argument("--model", help="model of the non-Fig.-1 studies (default: alexnet_small)")
    flags.seeds(p, "seeds per arm (quick: 2, full: 3)")
    flags.epochs(p, None, shown="the budget's")
    p.add_argument("--budget", default="quick", choices=("quick", "full"),
                   help="quick: a test-sized run; full: `study all` at 3 seeds in about an hour on 2 CPU cores")
    p.add_argument("--out", help="output folder (default: studies/<name>; all: studies/, one folder per study)")
    p.set_defaults(func=_study)


def list_text() -> str:
    from alexnet.study.studies import STUDIES
    rows = [("study", "section", "paper's numbers", "claim")]
    for s in STUDIES.values():
        numbers = ", ".join(f"{k} {v:+g}" if k.startswith("top") else f"{k} {v:g}x" for k, v in s.paper.items()) or "—"
        rows.append((s.name, f"[{s.section}]", numbers, s.claim))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows)


def _study(args: argparse.Namespace) -> int:
    from alexnet.study.studies import ALL_ORDER, STUDIES
    if args.list:
        print(list_text())
        return 0
    names = ", ".join(STUDIES)
    if not args.name:
        raise UsageError(f"alexnet study needs a study name: one of {names}, or all (alexnet study --list)")
    if args.name != "all" and args.name not in STUDIES:
        raise UsageError(f"unknown study {args.name!r}; choose one of {names}, or all")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    from alexnet.util import checks
    from alexnet.errors import Terminated, TrainingInterrupted
    from alexnet.study.runner import run_study, study_options
    root = args.out or ("studies" if args.name == "all" else f"studies/{args.name}")
    checks.writable_folder(root, "--out")
    options = study_options(seeds=args.seeds, budget=args.budget, epochs=args.epochs, data=args.data,
                            model=args.model, out=root)
    failed = []
    for name in (ALL_ORDER if args.name == "all" else [args.name]):
        if args.name == "all":
            options["out"] = f"{root}/{name}"
        try:
            results = run_study(name, options)
        except TrainingInterrupted as stop:   # a signal stops all of them; complete runs are reused next time
            raise TrainingInterrupted(stop.signum, f"during {name}: complete runs in {options['runs']} are reused "
                                                   f"by the next call") from None
        except (UsageError, KeyboardInterrupt, Terminated):
            raise
        except Exception as err:          # all: one study's failure does not lose the others
            if args.name != "all":
                raise
            print(f"alexnet study: {name} failed: {type(err).__name__}: {err}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"{name}: {results['verdict']} (effect {_effect(results['effect'])}) -> {options['out']}")
    if failed:
        print(f"alexnet study: {len(failed)} studies failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _effect(effect: dict) -> str:
    if effect["mean"] is None:
        return "none"
    interval = f" [{effect['low']:.2f}, {effect['high']:.2f}]" if effect["low"] is not None else ""
    return f"{effect['mean']:+.2f}{interval} {effect['metric']}"
