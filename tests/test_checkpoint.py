"""Checkpoints: atomic writes survive kill -9, loads never run pickled code, shape errors name layers."""
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import alexnet
from alexnet.checkpoint import FORMAT, atomic_save, load_checkpoint
from alexnet.weights import load_checked as load_state_dict_checked
from alexnet.errors import UsageError


def test_atomic_save_round_trip(tmp_path):
    state = {"format": FORMAT, "w": torch.arange(10.0), "nested": {"a": [1, 2.5, "x"]}}
    atomic_save(state, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(loaded["w"], state["w"]) and loaded["nested"] == state["nested"]
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]   # no temp files left behind


def test_kill_9_during_checkpoint_write_keeps_previous_file(tmp_path):
    target = tmp_path / "last.pt"
    atomic_save({"format": FORMAT, "generation": 0, "w": torch.zeros(4)}, target)
    writer = textwrap.dedent(f"""
        import sys, torch
        from alexnet.checkpoint import atomic_save, FORMAT
        big = torch.randn(20_000_000)        # 80 MB: the write takes a while
        print("ready", flush=True)
        generation = 1
        while True:
            atomic_save({{"format": FORMAT, "generation": generation, "w": big}}, {str(target)!r})
            generation += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.6)                      # well inside some write
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    loaded = load_checkpoint(target)         # the final name always holds a complete checkpoint
    assert loaded["format"] == FORMAT and "generation" in loaded
    assert loaded["w"].numel() in (4, 20_000_000)
    for name in os.listdir(tmp_path):       # anything else is a temp file, never the final name
        assert name == "last.pt" or (name.startswith(".last.pt.") and name.endswith(".tmp"))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "state_dict": _Exploit(str(marker))}, evil)
    assert not marker.exists()
    with pytest.raises(UsageError, match="refusing to load"):
        load_checkpoint(evil)
    assert not marker.exists()
    # and a raw pickle, not even a torch zip file
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(UsageError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    atomic_save({"format": FORMAT, "w": torch.randn(1000)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(UsageError, match="not an alexnet checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(UsageError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_ten_class_checkpoint_into_thousand_class_model_names_layer_and_shapes():
    ten = alexnet.create_model("alexnet_small", num_classes=10).state_dict()
    thousand = alexnet.create_model("alexnet_small", num_classes=1000)
    with pytest.raises(UsageError, match=r"classifier\.fc8\.weight.*\(10, 256\).*\(1000, 256\)"):
        load_state_dict_checked(thousand, ten)


def test_an_export_given_as_a_checkpoint_is_named_as_such(tmp_path):
    """Issue 23: features/show (load_checkpoint) given an export say it is one, not 'would run code'."""
    import pytest
    import torch
    from safetensors.torch import save_file
    from alexnet.checkpoint import load_checkpoint
    from alexnet.errors import UsageError
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "m.safetensors"))
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), str(tmp_path / "m.torchscript.pt"))
    for name, kind in (("m.onnx", "ONNX"), ("m.safetensors", "safetensors"), ("m.torchscript.pt", "TorchScript")):
        with pytest.raises(UsageError) as refused:
            load_checkpoint(tmp_path / name)
        assert f"is an {kind} export" in str(refused.value) and "has no layers to read" in str(refused.value)
