"""A bench's --json file: its path checked before minutes of measuring, then written whole or not at all."""
from __future__ import annotations

import argparse
import json
import os

from alexnet import checks
from alexnet.errors import UsageError


def check_json_path(parser: argparse.ArgumentParser, path: str | None) -> None:
    """Exit 2 through ``parser`` now when --json names a path that cannot be written (``alexnet.checks``)."""
    try:
        checks.writable_file(path, "--json")
    except UsageError as err:
        parser.error(str(err))


def write_json(path: str, record: dict) -> None:
    """``record`` at ``path``, atomically: a temporary file next to it, then os.replace."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
