"""LRN [3.3]: the fused operation against the paper's formula written as a loop, and against PyTorch's."""
import copy
import importlib.resources
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import alexnet
from alexnet.ops import _lrn_cpu
from alexnet.ops import lrn as lrn_ops
from alexnet.ops.lrn import LocalResponseNorm, local_response_norm
from alexnet.models.summary import describe


def paper_lrn(a: torch.Tensor, n: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2) ** beta, channel by channel.

    For even n the window is torch's: n//2 channels before i and (n-1)//2 after."""
    channels = a.shape[1]
    out = []
    for i in range(channels):
        first, last = max(0, i - n // 2), min(channels - 1, i + (n - 1) // 2)
        scale = k + alpha * (a[:, first:last + 1] ** 2).sum(1)
        out.append(a[:, i] / scale ** beta)
    return torch.stack(out, 1)


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors on one thread: on a busy machine a thread team costs more than these tests' work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["kernel", "pytorch"])
def implementation(request, monkeypatch):
    """Run a test once with the compiled CPU kernel and once with the pure-PyTorch path."""
    if request.param == "kernel":
        if lrn_ops._kernel() is None:
            pytest.skip("no compiled LRN kernel on this machine (no C++ compiler?)")
    else:
        monkeypatch.setitem(lrn_ops._kernel_state, "library", None)
    return request.param


def _input(shape, channels_last=False, dtype=torch.float64, seed=0):
    x = 3 * torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))  # negatives too
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(True)


def _values_and_grads(fn, x, grad):
    y = fn(x)
    (dx,) = torch.autograd.grad(y, x, grad)
    return y, dx


@pytest.mark.parametrize("channels", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_paper_formula(implementation, channels, n, channels_last):
    x = _input((2, channels, 3, 4), channels_last)
    grad = torch.randn(x.shape, dtype=x.dtype)
    for beta in (0.75, 0.5, 1.3):
        args = (n, 0.1, beta, 1.5)   # alpha large enough that the window term matters
        y, dx = _values_and_grads(lambda t: local_response_norm(t, *args), x, grad)
        y_ref, dx_ref = _values_and_grads(lambda t: paper_lrn(t, *args), x, grad)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)
        assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("n, beta, channels_last", [(5, 0.75, True), (5, 0.75, False), (4, 0.75, True),
                                                     (3, 0.6, False), (6, 1.0, True), (2, 0.75, False)])
def test_gradcheck_float64(implementation, n, beta, channels_last):
    x = _input((2, 6, 3, 3), channels_last)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, n, 0.2, beta, 1.0), (x,))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("n, beta", [(5, 0.75), (4, 0.75), (5, 0.6)])
def test_float32_within_1e5_of_float64(implementation, channels_last, n, beta):
    x64 = _input((4, 24, 7, 7), channels_last)
    grad = torch.randn(x64.shape, dtype=torch.float64)
    x32 = x64.detach().float().requires_grad_(True)
    args = (n, 0.05, beta, 2.0)
    y64, dx64 = _values_and_grads(lambda t: paper_lrn(t, *args), x64, grad)
    y32, dx32 = _values_and_grads(lambda t: local_response_norm(t, *args), x32, grad.float())
    assert y32.dtype == dx32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-5, atol=1e-5 * y64.abs().max().item())
    torch.testing.assert_close(dx32.double(), dx64, rtol=1e-5, atol=1e-5 * dx64.abs().max().item())


@pytest.mark.parametrize("shape", [(8, 96, 13, 13), (4, 256, 6, 6), (3, 10, 17), (2, 9, 3, 4, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_torch_local_response_norm(implementation, shape, channels_last):
    channels_last = channels_last and len(shape) == 4
    x = _input(shape, channels_last, dtype=torch.float32).detach().relu().requires_grad_(True)
    grad = torch.randn(x.shape)
    for n, alpha, beta, k in ((5, 1e-4, 0.75, 2.0), (4, 1e-3, 0.75, 1.0), (3, 2e-4, 0.5, 1.0)):
        ours = _values_and_grads(lambda t: local_response_norm(t, n, alpha, beta, k), x, grad)
        theirs = _values_and_grads(nn.LocalResponseNorm(n, alpha * n, beta, k), x, grad)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_non_contiguous_and_other_dtypes(implementation):
    base = _input((2, 8, 6, 10), dtype=torch.float32)
    x = base.detach()[:, :, :, ::2].requires_grad_(True)      # strided view
    torch.testing.assert_close(local_response_norm(x, 5, 1e-2, 0.75, 2.0),
                               nn.LocalResponseNorm(5, 5e-2, 0.75, 2.0)(x))
    xb = base.detach().bfloat16()
    torch.testing.assert_close(local_response_norm(xb, 5, 1e-2, 0.75, 2.0).float(),
                               nn.LocalResponseNorm(5, 5e-2, 0.75, 2.0)(xb.float()), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("channels_last", [False, True])
def test_outputs_keep_the_input_layout(implementation, channels_last):
    x = _input((4, 16, 9, 9), channels_last, dtype=torch.float32).detach().relu().requires_grad_(True)
    grad = torch.randn(x.shape)
    ours = _values_and_grads(lambda t: local_response_norm(t, 5, 1e-2, 0.75, 2.0), x, grad)
    theirs = _values_and_grads(nn.LocalResponseNorm(5, 5e-2, 0.75, 2.0), x, grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert a.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_empty_batch(implementation):
    x = torch.zeros(0, 8, 5, 5, requires_grad=True)
    y = local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape


@pytest.mark.parametrize("shape, groups", [((2, 12, 5, 6), 2), ((2, 12, 5, 6), 3), ((2, 12, 5, 6), 12),
                                           ((3, 96, 4, 4), 2), ((2, 8, 7), 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_groups_normalise_each_block_of_channels_alone(implementation, shape, groups, channels_last):
    """[3.2] grouped LRN = the ungrouped LRN of each contiguous block of C/groups channels, values and gradients."""
    channels_last = channels_last and len(shape) == 4
    x = _input(shape, channels_last)
    grad = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(3))
    for args in ((5, 0.1, 0.75, 1.5), (4, 0.2, 0.6, 1.0), (3, 0.1, 1.3, 2.0)):
        y, dx = _values_and_grads(lambda t: local_response_norm(t, *args, groups=groups), x, grad)
        y_ref, dx_ref = _values_and_grads(
            lambda t: torch.cat([paper_lrn(block, *args) for block in t.chunk(groups, 1)], 1), x, grad)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)
        assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if groups < shape[1]:   # a window that would cross a block's edge: the ungrouped LRN differs there
        assert not torch.allclose(y, local_response_norm(x, *args))


def test_groups_one_is_the_ungrouped_lrn_bit_for_bit(implementation):
    x = _input((2, 16, 5, 5), channels_last=True, dtype=torch.float32)
    grad = torch.randn(x.shape)
    a = _values_and_grads(lambda t: local_response_norm(t, 5, 1e-2, 0.75, 2.0), x, grad)
    b = _values_and_grads(LocalResponseNorm(5, 1e-2, 0.75, 2.0, groups=1), x, grad)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_grouped_gradcheck_and_float32(implementation):
    x = _input((2, 8, 3, 3), channels_last=True)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, 5, 0.2, 0.75, 1.0, groups=2), (x,))
    x32 = _input((2, 96, 6, 6), channels_last=True, dtype=torch.float32).detach().relu().requires_grad_(True)
    grad = torch.randn(x32.shape)
    ours = _values_and_grads(lambda t: local_response_norm(t, 5, 1e-4, 0.75, 2.0, groups=2), x32, grad)
    torch_lrn = nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)
    theirs = _values_and_grads(lambda t: torch.cat([torch_lrn(b) for b in t.chunk(2, 1)], 1), x32, grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_groups_are_checked_and_shown():
    with pytest.raises(ValueError, match="groups=5 must divide the input's 12 channels"):
        local_response_norm(torch.ones(2, 12, 3, 3), 5, 1e-4, 0.75, 2.0, groups=5)
    with pytest.raises(ValueError, match="groups must be an integer >= 1"):
        LocalResponseNorm(groups=0)
    grouped, plain = LocalResponseNorm(groups=2), LocalResponseNorm()
    assert "groups=2" in repr(grouped) and "groups" not in repr(plain)
    assert describe(grouped).endswith(", groups 2") and "groups" not in describe(plain)


def test_only_the_two_tower_model_groups_its_lrn():
    """alexnet_2012 models the two towers (cuda-convnet2's rnorm1a/rnorm1b: 48 maps each); Caffe and the
    one-GPU net normalise across all maps. An explicit lrn= keeps working, and may set its own groups."""
    groups = {name: [m.groups for m in alexnet.create_model(name).modules() if isinstance(m, LocalResponseNorm)]
              for name in ("alexnet_2012", "alexnet_2012_one_gpu", "alexnet_caffe", "caffenet")}
    assert groups == {"alexnet_2012": [2, 2], "alexnet_2012_one_gpu": [1, 1], "alexnet_caffe": [1, 1],
                      "caffenet": [1, 1]}
    custom = alexnet.create_model("alexnet_2012", lrn=dict(size=3, alpha=1e-3, beta=0.5, k=1.0))
    assert (custom.features.norm1.size, custom.features.norm1.groups) == (3, 2)
    assert alexnet.create_model("alexnet_2012", lrn=dict(size=5, groups=1)).features.norm2.groups == 1
    assert any("rnorm1a" in note for note in alexnet.model_info("alexnet_2012").notes)


def test_alpha_conventions():
    paper = LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    caffe = LocalResponseNorm(5, 1e-4, 0.75, 1.0, alpha_on="mean")
    assert paper.alpha_sum == 1e-4 and caffe.alpha_sum == pytest.approx(2e-5)
    assert "on the sum" in repr(paper) and "on the mean" in repr(caffe)
    x = _input((2, 12, 5, 5), dtype=torch.float32)
    torch.testing.assert_close(caffe(x), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)(x))
    torch.testing.assert_close(paper(x), nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)(x))
    with pytest.raises(ValueError, match="alpha_on"):
        LocalResponseNorm(alpha_on="median")
    with pytest.raises(ValueError, match="3 or more"):
        local_response_norm(torch.ones(2, 3), 5, 1e-4, 0.75, 2.0)


def test_saves_only_its_input():
    x = _input((2, 8, 4, 4), dtype=torch.float32).detach().relu().requires_grad_(True)
    y = local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 1 and saved[0].data_ptr() == x.data_ptr()


def test_threads_give_identical_results(implementation):
    x = _input((4, 64, 20, 20), channels_last=True, dtype=torch.float32)   # big enough for a thread team
    grad = torch.randn(x.shape)
    results = []
    for threads, layout in ((1, torch.channels_last), (2, torch.channels_last), (1, torch.contiguous_format),
                            (2, torch.contiguous_format)):
        torch.set_num_threads(threads)
        xl = x.detach().contiguous(memory_format=layout).requires_grad_(True)
        results.append(_values_and_grads(lambda t: local_response_norm(t, 5, 1e-2, 0.75, 2.0), xl, grad))
    for y, dx in results[1:]:
        torch.testing.assert_close(y, results[0][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(dx, results[0][1], rtol=1e-6, atol=1e-7)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[2][1], results[3][1])


class _TorchLRNPerTower(nn.Module):
    """torch's LRN over each tower's half of the channels (alexnet_2012's LRN groups=2)."""

    def __init__(self):
        super().__init__()
        self.lrn = nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)

    def forward(self, x):
        return torch.cat([self.lrn(half) for half in x.chunk(2, 1)], 1)


def test_alexnet_2012_same_as_with_torch_lrn():
    torch.manual_seed(0)
    ours = alexnet.create_model("alexnet_2012", num_classes=10).eval()
    theirs = copy.deepcopy(ours)
    theirs.features.norm1 = _TorchLRNPerTower()
    theirs.features.norm2 = _TorchLRNPerTower()
    x = 30 * torch.randn(1, 3, 224, 224)   # large inputs: the LRN denominators differ visibly from k
    for layout in (torch.contiguous_format, torch.channels_last):
        outputs = []
        for model in (ours, theirs):
            model.to(memory_format=layout).zero_grad()
            outputs.append(model(x.contiguous(memory_format=layout)))
            outputs[-1].logsumexp(1).sum().backward()
        torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)
        for name in ("conv1", "conv2", "conv3"):   # gradients that flow back through norm2, or both norms
            p, q = (getattr(model.features, name).weight.grad for model in (ours, theirs))
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-4 * q.abs().max().item(), msg=name)


def test_kernel_absent_means_quiet_fallback(monkeypatch, tmp_path, capfd, recwarn):
    for env in ({"CXX": str(tmp_path / "no-such-compiler")}, {"ALEXNET_LRN_KERNEL": "torch"}):
        monkeypatch.setattr(_lrn_cpu, "_tried", False)
        monkeypatch.setattr(_lrn_cpu, "_library", None)
        monkeypatch.setenv("ALEXNET_KERNEL_CACHE", str(tmp_path / "cache"))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert _lrn_cpu.load() is None
    monkeypatch.setitem(lrn_ops._kernel_state, "library", None)
    x = _input((2, 5, 3, 3), dtype=torch.float32)
    torch.testing.assert_close(local_response_norm(x, 5, 1e-2, 0.75, 2.0), nn.LocalResponseNorm(5, 5e-2, 0.75, 2.0)(x))
    assert capfd.readouterr() == ("", "") and len(recwarn) == 0


def test_kernel_builds_into_a_fresh_cache(monkeypatch, tmp_path):
    if _lrn_cpu.load() is None:
        pytest.skip("no compiled LRN kernel on this machine (no C++ compiler?)")
    monkeypatch.setattr(_lrn_cpu, "_tried", False)
    monkeypatch.setattr(_lrn_cpu, "_library", None)
    monkeypatch.setenv("ALEXNET_KERNEL_CACHE", str(tmp_path))
    library = _lrn_cpu.load()
    assert library is not None and lrn_ops._agrees(library)
    assert [p.suffix for p in tmp_path.iterdir()] == [".so"]


def test_kernel_source_ships_as_package_data():
    """The C++ is a file of the package, read through importlib.resources (as from an installed wheel)."""
    cpp = importlib.resources.files("alexnet.ops").joinpath("lrn_cpu.cpp")
    assert cpp.is_file() and _lrn_cpu.SOURCE_NAME == cpp.name
    text = cpp.read_text(encoding="utf-8")
    assert _lrn_cpu._source() == text
    for name in _lrn_cpu._SIGNATURES:   # every function load() binds is defined there
        assert re.search(rf"\bvoid {name}\(", text), name


def test_kernel_build_compiles_the_source_it_reads(monkeypatch, tmp_path):
    """The cache key hashes the text the build reads, and the compiler gets exactly that text (no compiler runs:
    it is stood in for, and the source reader is swapped, never the file)."""
    monkeypatch.setenv("ALEXNET_KERNEL_CACHE", str(tmp_path))
    compiled = []

    def compiler(command, **kwargs):
        compiled.append(Path(next(a for a in command if a.endswith(".cpp"))).read_text(encoding="utf-8"))
        Path(command[command.index("-o") + 1]).write_bytes(b"a library")

    monkeypatch.setattr(_lrn_cpu.subprocess, "run", compiler)
    flags = list(_lrn_cpu.FLAG_SETS[0])
    shipped = _lrn_cpu._build(["c++"], flags)
    edited_text = _lrn_cpu._source() + "\n// edited\n"
    monkeypatch.setattr(_lrn_cpu, "_source", lambda: edited_text)
    edited = _lrn_cpu._build(["c++"], flags)
    assert shipped.parent == edited.parent == tmp_path and shipped != edited
    assert compiled == [importlib.resources.files("alexnet.ops").joinpath("lrn_cpu.cpp").read_text(), edited_text]
    assert _lrn_cpu._build(["c++"], flags) == edited and len(compiled) == 2   # cached: not compiled again
    assert _lrn_cpu._build(["c++"], flags[:-1]) != edited                      # the flags are in the key too


@pytest.mark.slow
def test_torch_compile_path_on_cpu(monkeypatch):
    """The CUDA path (torch.compile of the PyTorch expressions), compiled by inductor for the CPU here."""
    monkeypatch.setattr(lrn_ops, "_compiled", {})
    x = _input((4, 32, 9, 9), channels_last=True, dtype=torch.float32).detach().relu()
    grad = torch.randn(x.shape)
    y = lrn_ops._compiled_call("forward", lrn_ops._forward_torch, x, 5, 1e-4, 0.75, 2.0)
    dx = lrn_ops._compiled_call("backward", lrn_ops._backward_torch, x, grad, 5, 1e-4, 0.75, 2.0)
    assert lrn_ops._compiled["forward"] is not lrn_ops._forward_torch   # compiled, not fallen back to eager
    y_ref, dx_ref = _values_and_grads(nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0), x.requires_grad_(True), grad)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-5, atol=1e-6)


def test_many_shapes_stay_compiled(monkeypatch):
    """Each shape, dtype, groups and constant compiles a graph of its own; a process running several AlexNets
    (bench/towers.py: 9) must not pass dynamo's limit, past which it would silently run the rest eagerly."""
    from torch._dynamo.utils import counters

    import functools
    torch._dynamo.reset()
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)   # dynamo's default, restored afterwards
    monkeypatch.setattr(lrn_ops, "_compiled", {})
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager", dynamic=False))
    before = counters["stats"]["unique_graphs"]
    for i in range(12):   # a new k each time: with dynamic=False, a recompile each time
        x = torch.rand(2, 8, 3, 3)
        y = lrn_ops._compiled_call("forward", lrn_ops._forward_torch, x, 5, 1e-4, 0.75, 2.0 + i)
        torch.testing.assert_close(y, lrn_ops._forward_torch(x, 5, 1e-4, 0.75, 2.0 + i))
    assert counters["stats"]["unique_graphs"] - before == 12
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--lrn-only"]])
def test_train_step_bench_quick(mode):
    bench = Path(__file__).resolve().parents[2] / "bench" / "train_step.py"
    run = subprocess.run([sys.executable, str(bench), "--quick", *mode], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "machine:" in run.stdout and "torch" in run.stdout
    if mode:
        rows = re.findall(r"^\d+x\d+x\d+x\d+ .*\s([\d.]+)x\s+([\d.]+) / ([\d.]+) / ([\d.]+) ms$", run.stdout, re.M)
        assert len(rows) == 2 and all(float(v) > 0 for row in rows for v in row), run.stdout   # speed-up; 3 timings
    else:
        rates = [float(r) for r in re.findall(r"^\(\w\) .*?\s(\d+\.\d)\s", run.stdout, re.M)]
        assert len(rates) == 5 and min(rates) > 0 and "c/d = " in run.stdout and "e/c = " in run.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_matches_cpu(channels_last):
    x = _input((4, 96, 27, 27), channels_last, dtype=torch.float32).detach().relu().requires_grad_(True)
    grad = torch.randn(x.shape)
    args = (5, 1e-4, 0.75, 2.0)
    y, dx = _values_and_grads(lambda t: local_response_norm(t, *args), x, grad)
    xc = x.detach().cuda().requires_grad_(True)
    yc, dxc = _values_and_grads(lambda t: local_response_norm(t, *args), xc, grad.cuda())
    torch.testing.assert_close(yc.cpu(), y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dxc.cpu(), dx, rtol=1e-5, atol=1e-6)
