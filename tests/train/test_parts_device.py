"""alexnet.train.parts.resolve_device: a device type this build or machine lacks (mps, xpu, ...) is a sentence, exit 2."""
import pytest
import torch

from alexnet.cli.main import main
from alexnet.errors import UsageError
from alexnet.train.parts import resolve_device


@pytest.mark.parametrize("name", ["mps", "xpu", "meta"])
def test_a_device_this_build_lacks_is_a_usage_error(name):
    backend = getattr(torch.backends, name, None) or getattr(torch, name, None)
    if getattr(backend, "is_available", lambda: False)():
        pytest.skip(f"this machine has {name}")
    with pytest.raises(UsageError, match=f"no {name} device"):
        resolve_device(name)


def test_train_device_mps_without_mps_exits_2(tmp_path, capsys):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert main(["train", "--device", "mps", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--device mps" in err and "Traceback" not in err
    assert resolve_device("cpu") == torch.device("cpu")
