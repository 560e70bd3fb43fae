"""A bench's --json file: its path checked before minutes of measuring, then written whole or not at all."""
from __future__ import annotations

import argparse
import json

from alexnet.util import atomic, checks
from alexnet.errors import UsageError


def check_json_path(parser: argparse.ArgumentParser, path: str | None) -> None:
    """Exit 2 through ``parser`` now when --json names a path that cannot be written (``alexnet.util.checks``)."""
    try:
        checks.writable_file(path, "--json")
    except UsageError as err:
        parser.error(str(err))


def write_json(path: str, record: dict) -> None:
    """``record`` at ``path``, atomically (``alexnet.util.atomic.write_atomically``)."""
    atomic.write_atomically(path, json.dumps(record, indent=1) + "\n")
