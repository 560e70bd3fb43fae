"""alexnet.ops.lrn.relu_lrn_max_pool, relu -> LRN -> max pool as one fused CPU operation: exactly the three modules'
values and gradients."""
import copy

import pytest
import torch
import torch.nn.functional as F

import alexnet
from alexnet.ops import lrn as lrn_ops
from alexnet.ops.lrn import local_response_norm, relu_lrn_max_pool

needs_kernel = pytest.mark.skipif(lrn_ops._kernel() is None, reason="no compiled LRN kernel (no C++ compiler?)")


def _unfused(z, size, alpha, beta, k, kernel, stride):
    return F.max_pool2d(local_response_norm(F.relu(z), size, alpha, beta, k), kernel, stride)


def _input(shape, dtype, seed=0):
    z = 3 * torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    z[:, :, :2, :2] = 0.0         # ReLU ties: windows of equal maxima, where the first one must win
    z[0, 0, 3:6, 3:6] = -1.0      # a window that is all zeros after ReLU
    return z.contiguous(memory_format=torch.channels_last)


def _both(z, grad, *args):
    results = []
    for fn in (relu_lrn_max_pool, _unfused):
        x = z.detach().clone().requires_grad_(True)
        y = fn(x, *args)
        y.backward(grad)
        results.append((y, x.grad, y.grad_fn.name()))
    return results


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(2, 7, 9, 11), (3, 96, 15, 15), (1, 3, 6, 5)])
@pytest.mark.parametrize("lrn", [(5, 1e-1, 0.75, 2.0), (4, 1e-1, 0.6, 1.0), (3, 2e-2, 0.75, 2.0)])
@pytest.mark.parametrize("pool", [(3, 2), (2, 2), (3, 1)])
def test_fused_equals_the_three_operations(dtype, shape, lrn, pool):
    z = _input(shape, dtype)
    grad = torch.randn(_unfused(z, *lrn, *pool).shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    (y, gz, fn), (y_ref, gz_ref, _) = _both(z, grad, *lrn, *pool)
    assert fn == "_ReLULRNMaxPoolFunctionBackward"          # really the fused path
    assert y.is_contiguous(memory_format=torch.channels_last) and y.shape == y_ref.shape
    tol = dict(rtol=0, atol=0) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(gz, gz_ref, **tol)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape, groups", [((2, 12, 9, 11), 2), ((2, 12, 9, 11), 3), ((2, 12, 7, 7), 12),
                                           ((2, 96, 15, 15), 2)])
@pytest.mark.parametrize("pool", [(3, 2), (2, 2)])
@pytest.mark.parametrize("lrn", [(5, 1e-1, 0.75, 2.0), (4, 1e-1, 0.6, 1.0)])
def test_grouped_fused_equals_each_block_unfused(dtype, shape, groups, pool, lrn):
    """[3.2] relu -> grouped LRN -> pool fused = the three operations on each block of C/groups channels."""
    z = _input(shape, dtype)
    grad = torch.randn(_unfused(z, *lrn, *pool).shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    x = z.detach().clone().requires_grad_(True)
    y = relu_lrn_max_pool(x, *lrn, *pool, groups=groups)
    y.backward(grad)
    assert y.grad_fn.name() == "_ReLULRNMaxPoolFunctionBackward"
    x_ref = z.detach().clone().requires_grad_(True)
    y_ref = torch.cat([_unfused(block, *lrn, *pool) for block in x_ref.chunk(groups, 1)], 1)
    y_ref.backward(grad)
    tol = dict(rtol=0, atol=0) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(x.grad, x_ref.grad, **tol)
    x_grouped = z.detach().clone().requires_grad_(True)    # and bit for bit the grouped LRN module's path
    y_grouped = F.max_pool2d(local_response_norm(F.relu(x_grouped), *lrn, groups=groups), *pool)
    y_grouped.backward(grad)
    assert torch.equal(y, y_grouped) and torch.equal(x.grad, x_grouped.grad)


@pytest.mark.parametrize("case", ["fused", "NCHW", "no kernel"])
def test_grouped_on_every_path(case, monkeypatch):
    z = _input((2, 8, 7, 7), torch.float64)
    if case == "NCHW":
        z = z.contiguous()
    elif case == "no kernel":
        monkeypatch.setitem(lrn_ops._kernel_state, "library", None)
    elif lrn_ops._kernel() is None:
        pytest.skip("no compiled LRN kernel")
    x = z.detach().clone().requires_grad_(True)
    y = relu_lrn_max_pool(x, 5, 0.1, 0.75, 2.0, 3, 2, groups=2)
    y.sum().backward()
    x_ref = z.detach().clone().requires_grad_(True)
    y_ref = torch.cat([_unfused(b, 5, 0.1, 0.75, 2.0, 3, 2) for b in x_ref.chunk(2, 1)], 1)
    y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="groups=3"):
        relu_lrn_max_pool(z, 5, 0.1, 0.75, 2.0, 3, 2, groups=3)


@needs_kernel
def test_gradcheck_float64():
    z = _input((2, 6, 7, 7), torch.float64).detach().requires_grad_(True)
    z = (z + 0.05 * torch.sign(z)).detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: relu_lrn_max_pool(t, 5, 0.3, 0.75, 2.0, 3, 2), (z,))


@needs_kernel
def test_nan_propagates_like_relu():
    z = _input((1, 4, 5, 5), torch.float32)
    z[0, 1, 2, 2] = float("nan")
    y, y_ref = relu_lrn_max_pool(z, 5, 1e-4, 0.75, 2.0), _unfused(z, 5, 1e-4, 0.75, 2.0, 3, 2)
    assert torch.isnan(y).any() and torch.equal(torch.isnan(y), torch.isnan(y_ref))


@pytest.mark.parametrize("case", ["NCHW", "no kernel", "window larger than the map"])
def test_other_inputs_take_the_unfused_path(case, monkeypatch):
    z = _input((2, 5, 7, 7), torch.float32)
    if case == "NCHW":
        z = z.contiguous()
    elif case == "no kernel":
        monkeypatch.setitem(lrn_ops._kernel_state, "library", None)
    kernel = 9 if case == "window larger than the map" else 3
    if kernel > 7:
        with pytest.raises(RuntimeError):       # torch's own error for an impossible pool, not a crash in C++
            relu_lrn_max_pool(z.requires_grad_(True), 5, 1e-4, 0.75, 2.0, kernel, 2)
        return
    (y, gz, fn), (y_ref, gz_ref, _) = _both(z, torch.ones(2, 5, 3, 3), 5, 1e-4, 0.75, 2.0, kernel, 2)
    assert fn != "_ReLULRNMaxPoolFunctionBackward"
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gz, gz_ref)


@needs_kernel
@pytest.mark.parametrize("name", ["alexnet_2012", "alexnet_caffe", "caffenet", "alexnet_2012_one_gpu"])
def test_models_give_the_same_outputs_and_gradients_fused_or_not(name):
    torch.manual_seed(0)
    fused = alexnet.create_model(name, num_classes=10).to(memory_format=torch.channels_last)
    plain = copy.deepcopy(fused)
    plain.fuse = False
    size = fused.input_size
    x = torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last)
    fused.eval(), plain.eval()
    for model in (fused, plain):
        model(x).square().sum().backward()
    torch.testing.assert_close(fused(x), plain(x), rtol=0, atol=0)
    for (key, a), b in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=key)


@needs_kernel
def test_a_hook_on_a_fused_module_sees_its_output():
    model = alexnet.create_model("alexnet_2012", num_classes=10).to(memory_format=torch.channels_last)
    seen = {}
    model.features.norm1.register_forward_hook(lambda module, args, out: seen.update(norm1=out.shape))
    model(torch.randn(1, 3, 224, 224).contiguous(memory_format=torch.channels_last))
    assert seen == {"norm1": torch.Size([1, 96, 55, 55])}


@needs_kernel
def test_the_paper_model_uses_the_fused_path_for_both_lrn_blocks(monkeypatch):
    calls = []
    original = lrn_ops._ReLULRNMaxPoolFunction.forward
    monkeypatch.setattr(lrn_ops._ReLULRNMaxPoolFunction, "forward",
                        staticmethod(lambda ctx, z, *a: calls.append((tuple(z.shape), a[-1])) or original(ctx, z, *a)))
    model = alexnet.create_model("alexnet_2012", num_classes=10).to(memory_format=torch.channels_last)
    model(torch.randn(2, 3, 224, 224).contiguous(memory_format=torch.channels_last))
    assert calls == [((2, 96, 55, 55), 2), ((2, 256, 27, 27), 2)]   # LRN groups 2: each tower's maps [3.2]


def test_torch_export_records_plain_operations_and_matches_eager():
    """torch.export (and so ONNX export and torch.compile) sees torch operations, not the ctypes kernels."""
    model = alexnet.create_model("alexnet_2012", num_classes=10).eval()
    x = torch.randn(2, 3, 224, 224)
    exported = torch.export.export(model, (x,))
    assert "PythonOp" not in str(exported.graph) and "relu_lrn" not in str(exported.graph)
    other = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(other), model(other), rtol=1e-4, atol=1e-5)
