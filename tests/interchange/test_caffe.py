"""alexnet.interchange.caffe, `alexnet convert`: files built here in each format (torchvision's state_dict() saved to
.pth, caffemodels in the new `layer` and the 2014 V1 `layers` encodings, safetensors) convert into checkpoints whose
logits and predictions equal the source framework's model on the same input with the same preprocessing."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from safetensors.torch import save_file

from alexnet.interchange.caffe_proto import CaffeLayer, blob_bytes, net_bytes, parse_blob, parse_net
from alexnet.checkpoint import load_checkpoint, load_model
from alexnet.cli.main import main
from alexnet.data.decode import decode_image
from alexnet.models import create_model
from alexnet.inference.predict import predict
from alexnet.data.preprocessing import Preprocessing

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
CLASSES = [f"class{i}" for i in range(10)]


def photos(folder) -> list[str]:
    """Three real photos scikit-image ships, as JPEGs: 451x300, 512x512 (shrunk in the DCT domain by the
    default decode rule) and 600x400."""
    from skimage import data
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in ("chelsea", "astronaut", "coffee"):
        paths.append(os.path.join(folder, f"{name}.jpg"))
        Image.fromarray(getattr(data, name)()).save(paths[-1], quality=90)
    return paths


# ------------------------------------------------------------------------------------------------ torchvision
@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory):
    """A randomly initialised torchvision AlexNet (fc8 scaled so its softmax is far from uniform), its
    state_dict() as .pth and as .safetensors, and the .pth converted through the command line."""
    folder = tmp_path_factory.mktemp("tv")
    torch.manual_seed(0)
    net = torchvision.models.AlexNet().eval()
    with torch.no_grad():
        net.classifier[6].weight.mul_(300)
    torch.save(net.state_dict(), folder / "alexnet-owt.pth")
    assert main(["convert", str(folder / "alexnet-owt.pth"), "--out", str(folder / "owt.pt")]) == 0
    return net, folder


def test_torchvision_pth_logits_equal_torchvision(torchvision_files):
    net, folder = torchvision_files
    model, ckpt = load_model(folder / "owt.pt")
    assert ckpt.model.name == "alexnet_owt" and ckpt.classes[:2] == ["tench", "goldfish"]
    assert len(ckpt.classes) == 1000 and ckpt.extra["source"]["layout"] == "torchvision"
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=1e-5, atol=1e-5)


def test_torchvision_predict_equals_torchvision_transforms(torchvision_files, tmp_path):
    """`alexnet predict` on real JPEGs == torchvision's IMAGENET1K_V1.transforms() (PIL) and its model:
    the preprocessed tensors agree to float rounding (x / 255 there, x * (1 / 255) here), the probabilities to 1e-5."""
    net, folder = torchvision_files
    paths = photos(tmp_path)
    transform = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
    reference = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    data = load_checkpoint(folder / "owt.pt")["data"]
    ours = Preprocessing.from_dict(data).eval_transform()(torch.stack([
        torch.from_numpy(decode_image(p, channels=3, size=256, rule=data["decode"]).copy()).permute(2, 0, 1)
        for p in paths]))
    torch.testing.assert_close(ours, reference, rtol=0, atol=2e-6)
    with torch.no_grad():
        expected = F.softmax(net(reference), dim=1)
    results, skipped = predict(str(folder / "owt.pt"), paths, topk=1000, device="cpu")
    assert not skipped and expected.max() > 0.05          # a peaked softmax: the comparison means something
    for result, probs in zip(results, expected):
        got = torch.zeros(1000)
        got[[t["index"] for t in result["topk"]]] = torch.tensor([t["prob"] for t in result["topk"]])
        torch.testing.assert_close(got, probs, rtol=0, atol=1e-5)
    # the default decode rule would not be torchvision's: the DCT-shrunk 512 px astronaut differs a lot
    square = decode_image(paths[1], channels=3, size=256)
    assert np.abs(square.astype(int) - decode_image(paths[1], channels=3, size=256, rule="torchvision")).max() > 20


def test_torchvision_safetensors_gives_the_same_checkpoint(torchvision_files):
    net, folder = torchvision_files
    save_file(net.state_dict(), str(folder / "owt.safetensors"))
    assert main(["convert", str(folder / "owt.safetensors"), "--out", str(folder / "owt_st.pt")]) == 0
    a, b = load_checkpoint(folder / "owt.pt"), load_checkpoint(folder / "owt_st.pt")
    assert b["source"]["format"] == "safetensors" and a["data"] == b["data"] and a["classes"] == b["classes"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_torchvision_layout_refuses_a_caffe_model(torchvision_files, capsys):
    _, folder = torchvision_files
    assert main(["convert", str(folder / "alexnet-owt.pth"), "--out", str(folder / "x.pt"), "--model", "caffenet"]) == 2
    assert "alexnet_owt" in capsys.readouterr().err and not (folder / "x.pt").exists()


# ------------------------------------------------------------------------------------------------------ Caffe
def caffe_reference(seed: int = 0, model: str = "alexnet_caffe") -> torch.nn.Module:
    """A Caffe-trained network stand-in: our model with small fc layers (fc6/fc7 32 wide, 10 classes), read as
    Caffe reads it: conv1's input channels are B, G, R. Xavier weights so the logits are not all alike."""
    torch.manual_seed(seed)
    return create_model(model, num_classes=10, fc_width=32, init="xavier").eval()


def caffe_layers(reference: torch.nn.Module, names=LAYERS) -> list[CaffeLayer]:
    state = reference.state_dict()
    return [CaffeLayer(name, "Convolution" if ours.startswith("conv") else "InnerProduct",
                       [state[f"{part}.{ours}.weight"].numpy(), state[f"{part}.{ours}.bias"].numpy()])
            for name, ours in zip(names, LAYERS) for part in ["features" if ours.startswith("conv") else "classifier"]]


def write_classes(folder) -> str:
    path = os.path.join(folder, "classes.txt")
    with open(path, "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    return path


def caffe_input(paths, mean_bgr: np.ndarray) -> torch.Tensor:
    """What Caffe feeds the net: BGR, 0-255, minus the mean (image or per channel), the centre 227 of 256."""
    images = torch.stack([torch.from_numpy(decode_image(p, channels=3, size=256).copy()) for p in paths])
    bgr = images.permute(0, 3, 1, 2).flip(1).to(torch.float32)
    return (bgr - torch.from_numpy(mean_bgr))[:, :, 14:241, 14:241]


@pytest.mark.parametrize("v1", [False, True], ids=["layer", "V1-layers"])
def test_caffemodel_equals_caffe_on_bgr_input(tmp_path, v1):
    reference = caffe_reference()
    (tmp_path / "net.caffemodel").write_bytes(net_bytes("AlexNet", caffe_layers(reference), v1=v1))
    assert main(["convert", str(tmp_path / "net.caffemodel"), "--out", str(tmp_path / "net.pt"),
                 "--classes", write_classes(tmp_path)]) == 0
    model, ckpt = load_model(tmp_path / "net.pt")
    assert ckpt.model.name == "alexnet_caffe" and ckpt.classes == CLASSES
    assert ckpt.model.kwargs == {"fc_width": 32} and ckpt.extra["source"]["bgr_to_rgb"]
    rgb = torch.rand(2, 3, 227, 227, generator=torch.Generator().manual_seed(2)) * 255
    with torch.no_grad():
        ours, caffe = model(rgb), reference(rgb.flip(1))
        torch.testing.assert_close(ours, caffe, rtol=1e-5, atol=1e-6)
        assert (reference(rgb) - caffe).abs().max() > 100 * (ours - caffe).abs().max()  # the order matters


@pytest.mark.parametrize("mean_kind", ["channel", "binaryproto"])
def test_caffe_predict_equals_caffe_preprocessing(tmp_path, mean_kind):
    """predict with the converted checkpoint == the reference fed Caffe's input (BGR minus the mean image or
    the per-channel mean, centre 227) for real photos."""
    reference, paths = caffe_reference(seed=1, model="caffenet"), photos(tmp_path / "photos")
    (tmp_path / "net.caffemodel").write_bytes(net_bytes("CaffeNet", caffe_layers(reference)))
    argv = ["convert", str(tmp_path / "net.caffemodel"), "--out", str(tmp_path / "net.pt"),
            "--classes", write_classes(tmp_path)]
    if mean_kind == "binaryproto":
        mean = np.random.default_rng(0).uniform(60, 180, (3, 256, 256)).astype(np.float32)   # BGR, C x H x W
        (tmp_path / "mean.binaryproto").write_bytes(blob_bytes(mean[None], legacy=True))
        argv += ["--mean", str(tmp_path / "mean.binaryproto")]
    else:
        mean = np.array([104.0, 117.0, 123.0], np.float32).reshape(3, 1, 1)
    assert main(argv) == 0
    ckpt = load_checkpoint(tmp_path / "net.pt")
    assert ckpt["model"]["name"] == "caffenet"          # from the net's name
    assert ckpt["data"]["normalization"] == ("mean_image" if mean_kind == "binaryproto" else "channel")
    with torch.no_grad():
        expected = F.softmax(reference(caffe_input(paths, mean)), dim=1)
    results, _ = predict(str(tmp_path / "net.pt"), paths, topk=10, device="cpu")
    for result, probs in zip(results, expected):
        got = torch.zeros(10)
        got[[t["index"] for t in result["topk"]]] = torch.tensor([t["prob"] for t in result["topk"]])
        torch.testing.assert_close(got, probs, rtol=0, atol=1e-5)
    assert expected.max() > 0.2


def test_caffe_safetensors_and_pth_layouts(tmp_path):
    """Caffe's names (conv1.weight: BGR, reversed here) and ours (features.conv1.weight: RGB, kept), in
    .safetensors and in a .pth of torch's legacy (pre-zip) format, as torchvision's 2017 file is."""
    reference = caffe_reference(seed=3)
    state = reference.state_dict()
    save_file({k.split(".", 1)[1]: v for k, v in state.items()}, str(tmp_path / "caffe.safetensors"),
              metadata={"model": "alexnet_caffe"})
    save_file(dict(state), str(tmp_path / "ours.safetensors"))
    classes = write_classes(tmp_path)
    assert main(["convert", str(tmp_path / "caffe.safetensors"), "--out", str(tmp_path / "a.pt"),
                 "--classes", classes]) == 0
    assert main(["convert", str(tmp_path / "ours.safetensors"), "--out", str(tmp_path / "b.pt"),
                 "--classes", classes, "--model", "alexnet_caffe"]) == 0
    torch.save(dict(state), tmp_path / "ours.pth", _use_new_zipfile_serialization=False)
    assert main(["convert", str(tmp_path / "ours.pth"), "--out", str(tmp_path / "c.pt"),
                 "--classes", classes, "--model", "alexnet_caffe"]) == 0
    a, b, c = (load_checkpoint(tmp_path / f"{n}.pt") for n in "abc")
    assert (a["source"]["format"], c["source"]["format"], c["source"]["layout"]) == ("safetensors", "pth", "ours")
    a, b, c = a["state_dict"], b["state_dict"], c["state_dict"]
    assert torch.equal(a["features.conv1.weight"], state["features.conv1.weight"].flip(1))
    assert torch.equal(b["features.conv1.weight"], state["features.conv1.weight"])
    assert all(torch.equal(a[k], b[k]) and torch.equal(b[k], c[k]) for k in state if k != "features.conv1.weight")


def test_renamed_fc8_and_model_flag(tmp_path, capsys):
    """A fine-tuned net (fc8 renamed, net name unknown) converts with --model; without it, exit 2 asking for it."""
    reference = caffe_reference(seed=4)
    layers = caffe_layers(reference, LAYERS[:-1] + ("fc8_flickr",))
    (tmp_path / "ft.caffemodel").write_bytes(net_bytes("FlickrStyleCaffeNet", layers))
    argv = ["convert", str(tmp_path / "ft.caffemodel"), "--out", str(tmp_path / "ft.pt"),
            "--classes", write_classes(tmp_path)]
    assert main(argv) == 2
    assert "--model alexnet_caffe or --model caffenet" in capsys.readouterr().err
    assert main(argv + ["--model", "caffenet"]) == 0
    assert load_checkpoint(tmp_path / "ft.pt")["model"]["name"] == "caffenet"


# ----------------------------------------------------------------------------------------------- bad input
def test_wrong_shape_names_layer_shapes_and_flag(tmp_path, capsys):
    reference = caffe_reference(seed=5)
    layers = caffe_layers(reference)
    layers[1].blobs[0] = np.zeros((256, 96, 5, 5), np.float32)          # conv2 without Caffe's two groups
    (tmp_path / "bad.caffemodel").write_bytes(net_bytes("AlexNet", layers))
    assert main(["convert", str(tmp_path / "bad.caffemodel"), "--out", str(tmp_path / "bad.pt"),
                 "--classes", write_classes(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "conv2.weight" in err and "(256, 96, 5, 5)" in err and "(256, 48, 5, 5)" in err and "--model" in err
    assert not (tmp_path / "bad.pt").exists()


def test_bad_files_exit_2_and_write_nothing(tmp_path, capsys):
    reference = caffe_reference(seed=6)
    whole = net_bytes("AlexNet", caffe_layers(reference))
    (tmp_path / "cut.caffemodel").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "notes.txt").write_text("these are not weights\n")
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "ok.caffemodel").write_bytes(whole)
    classes = write_classes(tmp_path)
    cases = [(["cut.caffemodel", "--classes", classes], "cut.caffemodel"),
             (["notes.txt"], "notes.txt is not a torchvision AlexNet .pth, a Caffe .caffemodel"),
             (["other.safetensors"], "unknown layout"),
             (["ok.caffemodel"], "pass --classes FILE with 10 class names"),
             (["ok.caffemodel", "--classes", str(tmp_path / "notes.txt")], "has 1 names but"),
             (["ok.caffemodel", "--classes", classes, "--mean", "1,2"], "--mean 1,2"),
             (["missing.pth"], "missing.pth does not exist")]
    for args, message in cases:
        assert main(["convert", str(tmp_path / args[0]), *args[1:], "--out", str(tmp_path / "out.pt")]) == 2, args
        assert message in capsys.readouterr().err, args
    assert main(["convert", str(tmp_path / "ok.caffemodel"), "--out", str(tmp_path / "ok.caffemodel")]) == 2
    assert "the weights file itself" in capsys.readouterr().err
    for out in (tmp_path, tmp_path / "notes.txt" / "x.pt"):         # checked before the weights are read
        assert main(["convert", str(tmp_path / "ok.caffemodel"), "--classes", classes, "--out", str(out)]) == 2
        assert "--out" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "ok.caffemodel"), "--classes", str(tmp_path / "none.txt"),
                 "--out", str(tmp_path / "out.pt")]) == 2
    assert "--classes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["convert", str(tmp_path / "ok.caffemodel"), "--out", str(tmp_path / "out.pt"), "--model", "vgg11"])
    assert stop.value.code == 2 and "invalid choice: 'vgg11'" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["classes.txt", "cut.caffemodel", "notes.txt", "ok.caffemodel",
                                           "other.safetensors"]


def test_eval_needs_data_and_runs_on_a_folder(tmp_path, capsys, monkeypatch):
    """A converted checkpoint names no data set: eval asks for --data, and evaluates an image folder."""
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    reference = caffe_reference(seed=7)
    (tmp_path / "net.caffemodel").write_bytes(net_bytes("AlexNet", caffe_layers(reference)))
    assert main(["convert", str(tmp_path / "net.caffemodel"), "--out", str(tmp_path / "net.pt"),
                 "--classes", write_classes(tmp_path)]) == 0
    assert main(["eval", str(tmp_path / "net.pt"), "--device", "cpu"]) == 2
    assert "pass --data" in capsys.readouterr().err
    pictures = photos(tmp_path / "photos")
    for i, name in enumerate(CLASSES):
        os.makedirs(tmp_path / "data" / name)
        Image.open(pictures[i % 3]).save(tmp_path / "data" / name / "a.jpg")
    assert main(["eval", str(tmp_path / "net.pt"), "--data", str(tmp_path / "data"), "--split", "train",
                 "--json", str(tmp_path / "eval.json"), "--device", "cpu"]) == 0
    assert '"n": 10' in (tmp_path / "eval.json").read_text()


# ------------------------------------------------------------------------------------------- the wire format
def caffe_schema():
    """caffe.proto's messages, restricted to the fields convert reads, built with protobuf itself."""
    pytest.importorskip("google.protobuf")          # installed with tensorboard
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    T = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="caffe", syntax="proto2")
    specs = {"BlobShape": [("dim", 1, T.TYPE_INT64, True, True)],
             "BlobProto": [("shape", 7, "BlobShape", False, False), ("data", 5, T.TYPE_FLOAT, True, True)]
             + [(n, i, T.TYPE_INT32, False, False) for i, n in enumerate(("num", "channels", "height", "width"), 1)],
             "LayerParameter": [("name", 1, T.TYPE_STRING, False, False), ("type", 2, T.TYPE_STRING, False, False),
                                ("blobs", 7, "BlobProto", True, False)],
             "V1LayerParameter": [("name", 4, T.TYPE_STRING, False, False), ("type", 5, T.TYPE_INT32, False, False),
                                  ("blobs", 6, "BlobProto", True, False)],
             "NetParameter": [("name", 1, T.TYPE_STRING, False, False), ("layers", 2, "V1LayerParameter", True, False),
                              ("layer", 100, "LayerParameter", True, False)]}
    for message, fields in specs.items():
        m = proto.message_type.add(name=message)
        for name, number, kind, repeated, packed in fields:
            f = m.field.add(name=name, number=number, label=T.LABEL_REPEATED if repeated else T.LABEL_OPTIONAL)
            if isinstance(kind, str):
                f.type, f.type_name = T.TYPE_MESSAGE, f".caffe.{kind}"
            else:
                f.type = kind
            if packed:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}")) for name in specs}


def test_wire_format_agrees_with_protobuf():
    schema = caffe_schema()
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((4, 3, 2, 2)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    layers = [CaffeLayer("conv1", "Convolution", [weight, bias]), CaffeLayer("relu1", "ReLU"),
              CaffeLayer("fc6", "InnerProduct", [weight.reshape(4, 12), bias])]
    for v1 in (False, True):                               # ours -> protobuf
        net = schema["NetParameter"].FromString(net_bytes("AlexNet", layers, v1=v1))
        read = net.layers if v1 else net.layer
        assert net.name == "AlexNet" and [layer.name for layer in read] == ["conv1", "relu1", "fc6"]
        blob = read[2].blobs[0]
        shape = [blob.num, blob.channels, blob.height, blob.width] if v1 else list(blob.shape.dim)
        assert shape == ([1, 1, 4, 12] if v1 else [4, 12]) and np.array_equal(blob.data, weight.ravel())
        assert (read[0].type == 4) if v1 else (read[0].type == "Convolution")
    net = schema["NetParameter"](name="CaffeNet")          # protobuf -> ours
    new = net.layer.add(name="conv1", type="Convolution")
    new.blobs.add(shape=schema["BlobShape"](dim=[4, 3, 2, 2]), data=weight.ravel().tolist())
    old = net.layers.add(name="fc8", type=14)
    old.blobs.add(num=1, channels=1, height=4, width=12, data=weight.ravel().tolist())
    name, parsed = parse_net(net.SerializeToString())       # protobuf writes field 2 (layers) before 100 (layer)
    assert name == "CaffeNet"
    assert [(p.name, p.type) for p in parsed] == [("fc8", "InnerProduct"), ("conv1", "Convolution")]
    assert np.array_equal(parsed[1].blobs[0], weight)
    assert np.array_equal(parsed[0].blobs[0], weight.reshape(1, 1, 4, 12))
    assert np.array_equal(parse_blob(new.blobs[0].SerializeToString()), weight)


@pytest.mark.slow
def test_full_size_v1_caffemodel_like_bvlc_alexnet(tmp_path):
    """bvlc_alexnet's real sizes (61M parameters, 1000 classes, V1 `layers` with legacy 4-D blobs, a 256x256 mean
    image): ImageNet's names, and the converted logits equal the Caffe weights' on the BGR input."""
    torch.manual_seed(8)
    reference = create_model("alexnet_caffe", num_classes=1000, init="xavier").eval()
    (tmp_path / "bvlc_alexnet.caffemodel").write_bytes(net_bytes("AlexNet", caffe_layers(reference), v1=True))
    mean = np.random.default_rng(1).uniform(60, 180, (1, 3, 256, 256)).astype(np.float32)
    (tmp_path / "imagenet_mean.binaryproto").write_bytes(blob_bytes(mean, legacy=True))
    assert main(["convert", str(tmp_path / "bvlc_alexnet.caffemodel"), "--out", str(tmp_path / "bvlc_alexnet.pt"),
                 "--mean", str(tmp_path / "imagenet_mean.binaryproto")]) == 0
    model, ckpt = load_model(tmp_path / "bvlc_alexnet.pt")
    assert ckpt.classes[0] == "tench" and ckpt.model.kwargs == {} and ckpt.preprocessing.image_size == [256, 256]
    paths = photos(tmp_path / "photos")
    with torch.no_grad():
        expected = F.softmax(reference(caffe_input(paths, mean[0])), dim=1)
    results, _ = predict(str(tmp_path / "bvlc_alexnet.pt"), paths, topk=1000, device="cpu")
    for result, probs in zip(results, expected):
        got = torch.zeros(1000)
        got[[t["index"] for t in result["topk"]]] = torch.tensor([t["prob"] for t in result["topk"]])
        torch.testing.assert_close(got, probs, rtol=0, atol=1e-5)
