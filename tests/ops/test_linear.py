"""alexnet.ops.linear: fc6-fc8 through oneDNN on the CPU, values and gradients as F.linear's."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alexnet
from alexnet.ops import linear as linear_ops
from alexnet.ops.linear import Linear, linear

needs_onednn = pytest.mark.skipif(not linear_ops._available(), reason="this PyTorch build has no oneDNN matmul")


def _values_and_grads(fn, x, weight, bias, grad):
    tensors = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, weight, bias)]
    out = fn(*tensors)
    out.backward(grad)
    return [out] + [t.grad for t in tensors if t is not None]


@needs_onednn
@pytest.mark.parametrize("shape", [(64, 9216, 4096), (3, 7, 5), (1, 4096, 10), (130, 33, 17)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_f_linear(shape, with_bias):
    batch, features, out_features = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, features, generator=gen)
    weight = torch.randn(out_features, features, generator=gen) / features ** 0.5
    bias = torch.randn(out_features, generator=gen) if with_bias else None
    grad = torch.randn(batch, out_features, generator=gen)
    ours = _values_and_grads(linear, x, weight, bias, grad)
    theirs = _values_and_grads(F.linear, x, weight, bias, grad)
    assert ours[0].grad_fn.name().endswith("_LinearFunctionBackward")   # really the oneDNN path
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@needs_onednn
def test_float64_gradcheck_reaches_the_fallback_and_frozen_weights_get_no_grad():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear, (x, weight, bias))
    layer = Linear(6, 3)
    layer.weight.requires_grad_(False)
    inp = torch.randn(4, 6, requires_grad=True)
    layer(inp).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is not None and inp.grad is not None
    torch.testing.assert_close(layer.bias.grad, torch.full((3,), 4.0))


@pytest.mark.parametrize("case", ["float64", "3-d input", "autocast", "empty batch"])
def test_other_inputs_take_f_linear(case):
    layer = Linear(8, 4)
    x = torch.randn(2, 5, 8) if case == "3-d input" else torch.randn(0 if case == "empty batch" else 3, 8)
    if case == "float64":
        layer, x = layer.double(), x.double()
    if case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        assert out.dtype == torch.bfloat16
        return
    out = layer(x)
    torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias))
    assert out.grad_fn is None or "_LinearFunction" not in out.grad_fn.name()


def test_state_dict_and_type_are_nn_linear():
    model = alexnet.create_model("alexnet_2012", num_classes=10)
    assert isinstance(model.classifier.fc6, nn.Linear) and isinstance(model.classifier.fc6, Linear)
    plain = nn.Linear(9216, 4096)
    model.classifier.fc6.load_state_dict(plain.state_dict())
    x = torch.randn(2, 9216)
    torch.testing.assert_close(model.classifier.fc6(x), plain(x), rtol=1e-4, atol=1e-4)


def test_opt_out_environment_variable():
    import subprocess
    import sys
    code = "from alexnet.ops import linear; print(linear.implementation())"
    import os
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "ALEXNET_LINEAR": "torch"})
    assert out.stdout.strip() == "torch F.linear (MKL)"
