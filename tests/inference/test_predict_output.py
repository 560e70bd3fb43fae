"""Issue 23: predict's output can be trusted as text and as JSON whatever the file names and the model give:
control characters in names are escaped (no spoofed lines), non-finite probabilities are null (valid JSON)."""
from __future__ import annotations

import json

import numpy as np
import torch

from alexnet.checkpoint import Checkpoint
from alexnet.cli.main import main
from alexnet.inference.predict import format_predictions
from data_fixtures import save


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_control_characters_in_file_names_are_escaped_in_text_output(tmp_path, tiny_checkpoint, capsys):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", classes=("Trouser", "b", "c"))
    name = "evil\nfake.png: Trouser 0.999\r\x1b[2J.png"
    save(tmp_path / "images" / name, np.zeros((28, 28), np.uint8))
    assert main(["predict", ckpt, str(tmp_path / "images"), "--device", "cpu", "--topk", "1"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path / "images" / "evil\\nfake.png: Trouser 0.999\\r\\x1b"))
    assert "\x1b" not in out and "\r" not in out
    assert format_predictions([{"path": "a\tb", "topk": [{"label": "x\ny", "index": 0, "prob": 0.5}]}]) == \
        "a\\tb: x\\ny 0.500"


def test_non_finite_probabilities_are_null_in_json_and_said_in_text(tmp_path, tiny_checkpoint, capsys):
    path = tiny_checkpoint(tmp_path / "tiny.pt")
    ckpt = Checkpoint.load(path)
    key = next(k for k in ckpt.state_dict if k.endswith("weight"))
    ckpt.state_dict[key] = torch.full_like(ckpt.state_dict[key], float("nan"))
    ckpt.save(path)
    save(tmp_path / "images" / "0.png", np.zeros((28, 28), np.uint8))
    argv = ["predict", path, str(tmp_path / "images"), "--device", "cpu", "--topk", "2"]
    assert main(argv + ["--json", "-"]) == 0
    captured = capsys.readouterr()
    results = strict_json(captured.out)
    assert [t["prob"] for t in results[0]["topk"]] == [None, None]
    assert "not finite" in captured.err and "Traceback" not in captured.err
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "nan" not in captured.out.lower() and "n/a" in captured.out and "not finite" in captured.err
