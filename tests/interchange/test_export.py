"""alexnet.interchange.export: ``alexnet export`` (ONNX, TorchScript, safetensors) and the onnxruntime backend of
predict/eval.

The default set runs on small networks (alexnet_small at 28 px) plus alexnet_owt at 256 px for the adaptive-pool
trap; the check of the six AlexNets against eager through onnxruntime at batch 1 and 7 is marked slow
(``pytest -m slow tests/interchange/test_export.py -s`` prints its numbers).
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.checkpoint import Checkpoint
from alexnet.cli.main import main
from alexnet.ops.exportable import FixedAdaptiveAvgPool
from conftest import build_checkpoint
from data_fixtures import idx_folder, save

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from alexnet.interchange import export  # noqa: E402  (after the skips: it needs neither, but its tests do)


def randomized(state: dict, seed: int = 0) -> dict:
    """Weights drawn He-style (std sqrt(2 / fan_in)), biases 0: logits that differ from image to image."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point() or "running" in key:
            out[key] = value
        elif value.dim() > 1:
            out[key] = torch.randn(value.shape, generator=gen) * (2 / value[0].numel()) ** 0.5
        else:
            out[key] = torch.full(value.shape, 1.0 if key.endswith("weight") else 0.0)   # BN scales 1, biases 0
    return out


def make_ckpt(name: str = "alexnet_small", kwargs: dict | None = None, *, weights: str = "random",
              **options) -> Checkpoint:
    """A checkpoint (``conftest.build_checkpoint``) for ``name``; ``weights``: random (He) or init (the zoo's)."""
    ckpt = build_checkpoint(name, kwargs, **{"classes": 5, **options})
    if weights == "random":
        ckpt.state_dict = randomized(ckpt.state_dict)
    return ckpt


def trained_scale(ckpt: Checkpoint, top: float = 20.0) -> Checkpoint:
    """The last layer scaled so the largest |logit| on example inputs is ``top``, as a trained network's are
    (He-random weights on 0-255 inputs give logits in the hundreds, where float32 rounding alone is ~1e-4)."""
    with torch.no_grad():
        now = ckpt.build_model()(export.example_batch(ckpt, 2)).abs().max().item()
    last = [k for k in ckpt.state_dict if k.endswith("weight")][-1]
    for key in (last, last[:-len("weight")] + "bias"):
        ckpt.state_dict[key] = ckpt.state_dict[key] * (top / now)
    return ckpt


def onnx_session(ckpt: Checkpoint):
    data = export.onnx_bytes(ckpt, export.metadata(ckpt))
    return onnx.load_model_from_string(data), ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def max_diff_vs_eager(ckpt: Checkpoint, run, batches=(1, 7)) -> list[tuple[int, float, float]]:
    """(batch, max |logit difference| of ``run`` against the eager model (fused, as predict runs it), max |logit|)."""
    eager = ckpt.build_model()
    rows = []
    for batch in batches:
        x = export.example_batch(ckpt, batch, seed=batch)
        with torch.no_grad():
            ref = eager(x.contiguous(memory_format=torch.channels_last))
        got = torch.as_tensor(np.asarray(run(x)))
        assert got.shape == ref.shape
        rows.append((batch, (got - ref).abs().max().item(), ref.abs().max().item()))
    return rows


def test_metadata_round_trips_exactly():
    ckpt = make_ckpt(stored=32, normalization="mean_image", config={"ten_crop": True, "data": "x", "seed": 3})
    props = export.metadata(ckpt)
    assert all(isinstance(v, str) for v in props.values()) and set(export.KEYS) <= set(props)
    info = export.read_metadata(props, "f.onnx")
    assert info.model == ckpt.model and info.classes == ckpt.classes and info.config == ckpt.config
    got, want = info.preprocessing, ckpt.preprocessing
    assert got.stats.mean_image.dtype == np.float32 and got.stats.mean_image.shape == (32, 32, 1)
    assert np.array_equal(got.stats.mean_image, want.stats.mean_image)       # bit-identical, not rounded
    assert (got.crop_size, got.normalization, got.image_size) == (want.crop_size, want.normalization, want.image_size)
    with pytest.raises(ValueError, match="no alexnet metadata"):
        export.read_metadata({}, "f.onnx")
    with pytest.raises(ValueError, match="malformed"):
        export.read_metadata(dict(props, **{"alexnet.classes": "[1, "}), "f.onnx")


def lrn_nodes(proto) -> list[dict]:
    return [{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for node in proto.graph.node if node.op_type == "LRN"]


LRN_CASES = {   # lrn kwargs -> (LRN nodes per normalised layer, ONNX alpha)
    "paper (alpha on the sum)": (dict(size=5, alpha=1e-4, beta=0.75, k=2.0, alpha_on="sum"), 1, 5e-4),
    "caffe (alpha on the mean)": (dict(size=5, alpha=1e-4, beta=0.75, k=1.0, alpha_on="mean"), 1, 1e-4),
    "two towers (groups=2)": (dict(size=5, alpha=1e-4, beta=0.75, k=2.0, alpha_on="sum", groups=2), 2, 5e-4),
    "even size 4: plain ops": (dict(size=4, alpha=3e-3, beta=0.6, k=1.5, alpha_on="sum"), 0, None),
}


@pytest.mark.parametrize("case", LRN_CASES)
def test_lrn_is_onnx_lrn_with_alpha_times_size_and_matches_eager(case):
    lrn, per_layer, alpha = LRN_CASES[case]
    ckpt = trained_scale(make_ckpt(kwargs={"norm": "lrn", "norm_layers": [1, 2], "lrn": lrn}, pixel_scale=255.0))
    proto, session = onnx_session(ckpt)
    nodes = lrn_nodes(proto)
    assert len(nodes) == 2 * per_layer
    for node in nodes:
        assert node["size"] == lrn["size"] and node["alpha"] == pytest.approx(alpha, rel=1e-6)
        assert node["beta"] == pytest.approx(lrn["beta"]) and node["bias"] == pytest.approx(lrn["k"])
    if per_layer > 1:
        assert sum(n.op_type == "Concat" for n in proto.graph.node) >= 2
    for batch, diff, scale in max_diff_vs_eager(ckpt, lambda x: session.run(None, {"input": x.numpy()})[0]):
        assert diff <= 1e-4, (case, batch, diff, scale)


@pytest.mark.parametrize("size,out", [(7, 6), (1, 6), (13, 6), (12, 6), (5, 3), (9, 4)])
def test_fixed_adaptive_pool_is_torchs(size, out):
    x = torch.randn(3, 4, size, size + 1)
    want = torch.nn.AdaptiveAvgPool2d(out)(x)
    got = FixedAdaptiveAvgPool(size, size + 1, (out, out))(x)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)


def test_owt_at_256_passes_the_adaptive_pool_trap():
    """torchvision's AdaptiveAvgPool2d((6, 6)) on alexnet_owt's 7x7 map at 256 px: the plain exporter refuses it;
    ours swaps in the pool's exact linear map for that size and the logits match."""
    ckpt = make_ckpt("alexnet_owt", classes=10, channels=3, size=256, stored=256, weights="init")
    plain = ckpt.build_model()
    trunk = torch.nn.Sequential(plain.features, plain.avgpool)        # the trap, without the classifier's weights
    with warnings.catch_warnings(), pytest.raises(Exception, match="factor of input size"):
        warnings.simplefilter("ignore")
        torch.onnx.export(trunk, (torch.zeros(1, 3, 256, 256),), io.BytesIO(), dynamo=False, opset_version=17)
    proto, session = onnx_session(ckpt)
    assert "AveragePool" not in {n.op_type for n in proto.graph.node}    # the swapped pool: MatMuls
    for batch, diff, scale in max_diff_vs_eager(ckpt, lambda x: session.run(None, {"input": x.numpy()})[0]):
        assert diff <= 1e-4, (batch, diff, scale)


def make_run(folder: Path) -> Path:
    """A checkpoint 'trained' on a small idx data set (classes 0-4, 28 px, random weights), its three exports and
    six images to predict."""
    root = idx_folder(folder / "data", n_train=60, n_test=30, size=28, classes=5)
    from alexnet.data import open_dataset
    train = open_dataset(str(root), "train", progress=False)
    ckpt = make_ckpt(kwargs={"norm": "lrn", "norm_layers": [1, 2]}, normalization="mean_image",
                     images=np.asarray(train.images),
                     config={"data": str(root), "data_root": None, "val_fraction": 0.1, "seed": 0, "ten_crop": False})
    ckpt.classes = list(train.classes)
    ckpt.save(folder / "best.pt")
    for i in range(6):
        save(folder / "images" / f"{i}.png", np.asarray(train.images[i, :, :, 0]))
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = make_run(tmp_path_factory.mktemp("run"))
    for fmt in export.FORMATS:
        export.export_checkpoint(str(folder / "best.pt"), fmt, export.default_out(str(folder / "best.pt"), fmt))
    return folder


def cli(argv: list[str]) -> int:
    """main's exit status, argparse's own exits included."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def _json(capsys, argv) -> object:
    capsys.readouterr()
    assert main(argv + ["--json", "-"]) == 0
    return json.loads(capsys.readouterr().out)


def test_export_command_then_predict_and_eval_agree_across_backends(tmp_path, capsys):
    run_ckpt = make_run(tmp_path)
    best = str(run_ckpt / "best.pt")
    for fmt, name in (("onnx", "best.onnx"), ("torchscript", "best.torchscript.pt"),
                      ("safetensors", "best.safetensors")):
        assert main(["export", best, "--format", fmt]) == 0
        assert (run_ckpt / name).is_file()
        assert "wrote" in capsys.readouterr().out
    images = str(run_ckpt / "images")
    want = _json(capsys, ["predict", best, images, "--topk", "3"])
    assert len({tuple(t["index"] for t in r["topk"]) for r in want}) > 1    # the images' top-3 differ
    for argv in ([str(run_ckpt / "best.onnx")], [best, "--backend", "onnxruntime"],
                 [str(run_ckpt / "best.safetensors")]):
        got = _json(capsys, ["predict", *argv[:1], images, "--topk", "3", *argv[1:]])
        assert [[t["label"] for t in r["topk"]] for r in got] == [[t["label"] for t in r["topk"]] for r in want]
        assert np.allclose([[t["prob"] for t in r["topk"]] for r in got],
                           [[t["prob"] for t in r["topk"]] for r in want], atol=1e-5)
    ref = _json(capsys, ["eval", best])
    onnx_report = _json(capsys, ["eval", str(run_ckpt / "best.onnx")])
    assert onnx_report["backends"] == ["onnxruntime"] and ref["backends"] == ["torch"]
    assert (onnx_report["top1"], onnx_report["top5"], onnx_report["n"]) == (ref["top1"], ref["top5"], ref["n"])
    assert onnx_report["loss"] == pytest.approx(ref["loss"], abs=1e-5)


def test_each_file_carries_classes_preprocessing_and_a_dynamic_batch(run_dir):
    run_ckpt = run_dir
    ckpt = Checkpoint.load(run_ckpt / "best.pt")
    proto = onnx.load(str(run_ckpt / "best.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["alexnet.classes"]) == ckpt.classes
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == [1, 28, 28]
    extra = {key: "" for key in export.KEYS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(run_ckpt / "best.torchscript.pt"), _extra_files=extra)
    assert export.read_metadata(extra, "ts").classes == ckpt.classes
    for batch, diff, _ in max_diff_vs_eager(ckpt, lambda x: scripted(x).detach()):
        assert diff <= 1e-4, (batch, diff)
    from safetensors import safe_open
    with safe_open(str(run_ckpt / "best.safetensors"), framework="pt") as f:
        assert export.read_metadata(f.metadata(), "st").model == ckpt.model
        assert all(torch.equal(f.get_tensor(k), v) for k, v in ckpt.state_dict.items())


@pytest.mark.parametrize("argv,named", [
    (["export", "{p}/text.pt", "--format", "onnx", "--out", "{p}/o.onnx"], "text.pt"),
    (["export", "{p}/missing.pt", "--format", "onnx", "--out", "{p}/o.onnx"], "missing.pt"),
    (["export", "{p}/best.pt", "--format", "onnx", "--out", "{p}/dir"], "--out"),
    (["export", "{p}/best.pt", "--format", "onnx", "--out", "{p}/text.pt/o.onnx"], "--out"),
    (["export", "{p}/best.pt", "--format", "onnx", "--out", "{p}/o.pt"], ".onnx"),
    (["export", "{p}/best.pt", "--format", "safetensors", "--out", "{p}/o.onnx"], ".safetensors"),
    (["export", "{p}/best.pt", "--format", "torchscript", "--out", "{p}/best.pt"], "checkpoint itself"),
    (["export", "{p}/x.onnx", "--format", "onnx", "--out", "{p}/o.onnx"], "already an export"),
    (["export", "{p}/best.pt", "--format", "tflite"], "--format"),
    (["export", "{p}/best.pt"], "--format"),
    (["predict", "{p}/x.onnx", "{p}/images"], "x.onnx"),
    (["predict", "{p}/plain.onnx", "{p}/images"], "no alexnet metadata"),
    (["predict", "{p}/best.onnx", "{p}/images", "--backend", "torch"], "--backend onnxruntime"),
    (["predict", "{p}/best.safetensors", "{p}/images", "--backend", "onnxruntime"], "--backend torch"),
    (["predict", "{p}/best.torchscript.pt", "{p}/images"], "TorchScript"),
    (["eval", "{p}/x.onnx"], "x.onnx"),
    (["predict", "{p}/best.pt", "{p}/images", "--backend", "tensorrt"], "--backend"),
])
def test_bad_input_exits_2_names_it_and_writes_nothing(run_dir, capsys, argv, named):
    p = run_dir
    if not (p / "dir").exists():
        (p / "text.pt").write_text("not a checkpoint\n")
        (p / "x.onnx").write_bytes(b"\x08\x07garbage, not an onnx model")
        (p / "dir").mkdir()
        graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                       [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                       [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
        plain = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        onnx.save(plain, str(p / "plain.onnx"))
    before = sorted(str(q.relative_to(p)) for q in p.rglob("*"))
    capsys.readouterr()
    code = cli([a.replace("{p}", str(p)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and named in err and "Traceback" not in err, err
    assert sorted(str(q.relative_to(p)) for q in p.rglob("*")) == before


@pytest.mark.parametrize("failure", ["check", "disk full"])
def test_a_failed_export_leaves_the_old_file_and_no_temporary(tmp_path, capsys, monkeypatch, failure):
    run_ckpt = make_run(tmp_path)
    out = run_ckpt / "best.onnx"
    out.write_bytes(b"the previous export")
    if failure == "check":
        def bad_check(tmp, ckpt):
            raise export.ExportError("the ONNX file gives other logits than the checkpoint")
        monkeypatch.setattr(export, "_check_onnx", bad_check)
    else:
        def full(self, data):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(Path, "write_bytes", full)
    assert main(["export", str(run_ckpt / "best.pt"), "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert ("other logits" if failure == "check" else "no space") in err and "nothing was written" in err
    assert out.read_bytes() == b"the previous export"
    assert not [q for q in run_ckpt.iterdir() if q.name.endswith(".tmp")]


SIX = {   # model -> (normalization, pixel scale) of its recipe's preprocessing
    "alexnet_2012": ("mean_image", 255.0), "alexnet_caffe": ("mean_image", 255.0), "caffenet": ("mean_image", 255.0),
    "alexnet_owt": ("channel", 1.0), "alexnet_small": ("channel", 1.0), "alexnet_d2l": ("none", 1.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["init", "trained-scale"])
@pytest.mark.parametrize("name", SIX)
def test_six_alexnets_through_onnxruntime_match_eager(name, weights):
    """1000 classes at the model's input size, inputs preprocessed as its recipe does. ``init``: the zoo's
    initialisation; ``trained-scale``: He-random weights with fc8 scaled so the largest logit is about 20, as a
    trained network's are. Max |logit difference| <= 1e-4 at batch 1 and 7."""
    from alexnet.models import model_info
    info = model_info(name)
    normalization, scale = SIX[name]
    ckpt = make_ckpt(name, classes=1000, channels=info.in_channels, size=info.input_size,
                     stored=256 if info.input_size > 200 else info.input_size, normalization=normalization,
                     pixel_scale=scale, weights="random" if weights == "trained-scale" else "init")
    if weights == "trained-scale":
        trained_scale(ckpt)
    _, session = onnx_session(ckpt)
    rows = max_diff_vs_eager(ckpt, lambda x: session.run(None, {"input": x.numpy()})[0])
    print(f"\n{name} ({weights}): " + ", ".join(f"batch {b}: max |logit diff| {d:.2e} (max |logit| {m:.3g})"
                                              for b, d, m in rows))
    assert all(d <= 1e-4 for _, d, _ in rows), rows


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_out_where_no_file_can_be_created_exits_2(run_dir, capsys):
    """os.access says yes for /proc as root; creating the temporary file there fails: still a sentence."""
    assert cli(["export", str(run_dir / "best.pt"), "--format", "onnx", "--out", "/proc/model.onnx"]) == 2
    err = capsys.readouterr().err
    assert "--out /proc/model.onnx" in err and "Traceback" not in err


@pytest.mark.parametrize("edit,words", [("classes", "names 3 classes but the graph gives 5 logits"),
                                        ("size", "the graph takes")])
def test_onnx_metadata_that_disagrees_with_its_graph_exits_2(run_dir, tmp_path, capsys, edit, words):
    """An .onnx whose metadata was edited (3 class names for 5 logits; another input size) is refused when it
    is loaded, with a sentence, by predict and eval: never an IndexError or onnxruntime's INVALID_ARGUMENT."""
    proto = onnx.load(str(run_dir / "best.onnx"))
    for prop in proto.metadata_props:
        if edit == "classes" and prop.key == "alexnet.classes":
            prop.value = json.dumps(["a", "b", "c"])
        if edit == "size" and prop.key == "alexnet.preprocessing":
            data = json.loads(prop.value)
            data["crop_size"] = 24
            prop.value = json.dumps(data)
    bad = tmp_path / "edited.onnx"
    onnx.save(proto, str(bad))
    for argv in (["predict", str(bad), str(run_dir / "images")], ["eval", str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "edited.onnx" in err and words in err and "Traceback" not in err, err
