"""alexnet.inference.predict: parallel decoding (input order, bad files skipped with the reason) and the default
backend (``--backend auto``: the faster engine, the same top-k as torch)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from alexnet.inference import backends
from alexnet.cli.main import main
from alexnet.inference.predict import Predictor, expand_paths, predict
from data_fixtures import save, truncated_jpeg


@pytest.fixture
def folder(tmp_path, tiny_checkpoint):
    """18 grey images with three bad files among them, a checkpoint that reads them."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for i in range(18):
        save(root / f"{i:02d}.png", rng.integers(0, 256, (int(rng.integers(20, 40)), 30), dtype=np.uint8))
    (root / "03b.jpg").write_bytes(b"")                               # empty
    truncated_jpeg(root / "07b.jpg")                                  # truncated
    (root / "11b.png").write_text("not an image\n")                   # not an image
    return tmp_path, tiny_checkpoint(tmp_path / "tiny.pt", classes=tuple("abcde"))


def serial(ckpt: str, paths: list[str], k: int) -> list:
    """One file at a time, as predict ran before it decoded in parallel."""
    predictor, out = Predictor(ckpt, device="cpu", backend="torch"), []
    for path in paths:
        image = predictor.decode_or_reason(path)
        out.append((path, None, image) if isinstance(image, str) else (path, predictor.topk([image], k)[0], None))
    return out


@pytest.mark.parametrize("threads,batch_size,ahead", [(1, 64, 1), (3, 4, 1), (2, 5, 0), (4, 1, 2)])
def test_parallel_decoding_keeps_input_order_and_skips_bad_files(folder, threads, batch_size, ahead):
    tmp_path, ckpt = folder
    paths = expand_paths([str(tmp_path / "images")])
    want = serial(ckpt, paths, 3)
    got = list(Predictor(ckpt, device="cpu", backend="torch", batch_size=batch_size)
               .predict_paths(paths, 3, threads=threads, ahead=ahead))
    assert [g[0] for g in got] == paths
    assert [g[2] for g in got] == [w[2] for w in want]
    assert [r[2] for r in got if r[2]][0] == "empty file (0 bytes)"
    for (_, top, _), (_, expected, _) in zip(got, want):
        assert (top is None) == (expected is None)
        if top is not None:
            assert [t["index"] for t in top] == [t["index"] for t in expected]
            np.testing.assert_allclose([t["prob"] for t in top], [t["prob"] for t in expected], atol=1e-6)


def test_predict_names_skipped_files_in_input_order(folder, capsys):
    tmp_path, ckpt = folder
    results, skipped = predict(ckpt, [str(tmp_path / "images")], topk=2, device="cpu", threads=2, batch_size=4)
    assert [p.rsplit("/", 1)[1] for p, _ in skipped] == ["03b.jpg", "07b.jpg", "11b.png"]
    assert len(results) == 18 and [r["path"] for r in results] == sorted(r["path"] for r in results)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped ")]
    assert [line.split(":")[0].rsplit("/", 1)[1] for line in lines] == ["03b.jpg", "07b.jpg", "11b.png"]


def test_auto_backend_rules(tmp_path, monkeypatch, tiny_checkpoint):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    assert backends.auto_backend(tmp_path / "m.onnx") == "onnxruntime"
    assert backends.auto_backend(tmp_path / "m.safetensors", "cpu") == "torch"
    assert backends.auto_backend(ckpt, "cpu") == "torch"                       # alexnet_small: not measured faster
    monkeypatch.setattr(backends, "onnxruntime_installed", lambda: True)
    assert backends.auto_backend("any.pt", "cpu", model="alexnet_2012") == "torch"   # our eager path is faster
    assert backends.auto_backend("any.pt", "cpu", model="alexnet_owt") == "onnxruntime"   # one image at a time
    assert backends.auto_backend("any.pt", "cpu", 1, model="alexnet_owt") == "torch"      # files: torch, even one
    assert backends.auto_backend("any.pt", "cpu", 5000, model="alexnet_owt") == "torch"
    monkeypatch.setattr(backends, "onnxruntime_installed", lambda: False)
    assert backends.auto_backend("any.pt", "cpu", model="alexnet_owt") == "torch"   # not installed: torch
    monkeypatch.setattr(backends, "onnxruntime_installed", lambda: True)
    monkeypatch.setattr(backends, "resolve_device", lambda name: torch.device("cuda"))
    assert backends.auto_backend("any.pt", "auto", model="alexnet_owt") == "torch"   # a GPU: always torch


def test_auto_on_onnxruntime_gives_torch_topk(folder, monkeypatch, capsys):
    """Where auto picks onnxruntime (a stream, here for the tiny model), the top-k is torch's, probabilities to 1e-5;
    predict's default (auto, files: torch), --backend torch and --backend onnxruntime give the same top-k."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    tmp_path, ckpt = folder
    monkeypatch.setattr(backends, "ONNXRUNTIME_FASTER", frozenset({"alexnet_small"}))
    stream = Predictor(ckpt, device="cpu", backend="auto")
    assert stream.loaded.backend == "onnxruntime"
    assert Predictor(ckpt, device="cpu", backend="auto", images=3).loaded.backend == "torch"
    paths = expand_paths([str(tmp_path / "images")])
    want = serial(ckpt, paths, 5)
    got = list(stream.predict_paths(paths, 5, threads=2))
    assert [(p, r) for p, _, r in got] == [(p, r) for p, _, r in want]
    images = str(tmp_path / "images")
    runs = {}
    for name, extra in (("auto", []), ("torch", ["--backend", "torch"]), ("onnxruntime", ["--backend", "onnxruntime"])):
        assert main(["predict", ckpt, images, "--topk", "5", "--json", "-", *extra]) == 0
        runs[name] = [r["topk"] for r in json.loads(capsys.readouterr().out) if "topk" in r]
    runs["stream"] = [top for _, top, reason in got if reason is None]
    runs["serial"] = [top for _, top, reason in want if reason is None]
    for name, tops in runs.items():
        assert len(tops) == 18, name
        for a, b in zip(tops, runs["torch"]):
            assert [t["index"] for t in a] == [t["index"] for t in b], name
            torch.testing.assert_close(torch.tensor([t["prob"] for t in a]), torch.tensor([t["prob"] for t in b]),
                                       rtol=0, atol=1e-5)


def test_predict_progress_for_large_folders(folder, capsys):
    tmp_path, ckpt = folder
    predict(ckpt, [str(tmp_path / "images")], device="cpu", batch_size=4, progress=True)
    assert "predict 6/6" in capsys.readouterr().err


def test_torch_backend_runs_plain_linear_layers_on_onednn():
    """torchvision's class (alexnet_owt) gets fc layers on oneDNN: the same state dict, the same values."""
    from alexnet.ops.linear import Linear
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5)).eval()
    fast = backends.onednn_linear(copy.deepcopy(plain))
    assert all(type(m) is Linear for m in (fast[0], fast[2])) and fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(7, 64)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
