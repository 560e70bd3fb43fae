"""alexnet.serve.app, `alexnet serve`'s API in process (Starlette's TestClient): parity with
`alexnet predict --json`, the status and JSON error of every bad request, /model, /healthz, the page, the
micro-batcher, the flags' refusals. The server as a real process (SIGTERM, 413 before the body is read, the browser)
is in test_app_process.py."""
from __future__ import annotations

import asyncio
import io
import json
import resource
import socket
import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")
with warnings.catch_warnings():          # Starlette 1.x: "install httpx2" (httpx still works)
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from alexnet.serve.batcher import MicroBatcher  # noqa: E402
from alexnet.cli.main import main  # noqa: E402
from alexnet.cli.serve import parse_size  # noqa: E402
from alexnet.errors import UsageError  # noqa: E402
from alexnet.serve.app import Settings, create_app, load_predictor  # noqa: E402
from serve_fixtures import bomb_png, fashion_files, png_bytes, real_bomb_png  # noqa: E402

MAX_BYTES = 400_000
LOCAL = "http://127.0.0.1"      # the Host the app answers (alexnet.serve.guards)


@pytest.fixture(scope="module")
def client(checkpoint, predictor):
    with TestClient(create_app(predictor, Settings(checkpoint, max_bytes=MAX_BYTES, model_details=True)),
                    base_url=LOCAL, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return fashion_files(tmp_path_factory.mktemp("serve-images"))


def test_predict_multipart_and_raw_body_answer_as_predict_json(checkpoint, client, images, tmp_path):
    out = tmp_path / "predict.json"
    assert main(["predict", checkpoint, *map(str, images), "--topk", "5", "--json", str(out)]) == 0
    expected = {entry["path"]: entry["topk"] for entry in json.loads(out.read_text())}
    for path in images:
        kind = "image/jpeg" if path.suffix == ".jpg" else "image/png"
        multipart = client.post("/predict", files={"file": (path.name, path.read_bytes(), kind)})
        raw = client.post("/predict", content=path.read_bytes(), headers={"content-type": kind})
        for reply in (multipart, raw):
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert set(body) == {"topk", "model", "ms"} and body["model"] == "alexnet_small" and body["ms"] > 0
            want = expected[str(path)]
            assert [(t["label"], t["index"]) for t in body["topk"]] == [(t["label"], t["index"]) for t in want]
            assert [t["prob"] for t in body["topk"]] == pytest.approx([t["prob"] for t in want], abs=1e-6)


def _chunks(data: bytes, size: int = 64_000):
    for start in range(0, len(data), size):
        yield data[start:start + size]


PNG = png_bytes(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28))


def _jpeg(side: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = _jpeg()
BAD = {   # name: (request arguments, status, words the error must hold)
    "over --max-bytes (Content-Length)": (dict(content=b"\0" * (MAX_BYTES + 1), headers={"content-type": "image/png"}),
                                          413, "--max-bytes"),
    "over --max-bytes (chunked, no length)": (dict(content=_chunks(b"\0" * (MAX_BYTES * 2)),
                                                   headers={"content-type": "image/png"}), 413, "stopped reading"),
    "text body": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "not an image type"),
    "JSON body": (dict(json={"image": "x"}), 415, "application/json"),
    "text part": (dict(files={"file": ("a.txt", b"hello", "text/plain")}), 415, "'file' part"),
    "bytes in no image format": (dict(content=b"just text\n" * 10, headers={"content-type": "application/octet-stream"}),
                                 415, "not an image"),
    "truncated PNG": (dict(content=PNG[:len(PNG) // 2], headers={"content-type": "image/png"}), 400, "truncated"),
    "truncated JPEG": (dict(files={"file": ("x.jpg", JPEG[:len(JPEG) * 2 // 3], "image/jpeg")}), 400, "cannot decode"),
    "empty body": (dict(content=b"", headers={"content-type": "image/png"}), 400, "empty"),
    "decompression bomb header": (dict(files={"file": ("b.png", bomb_png(), "image/png")}), 413, "too many pixels"),
    "no file field": (dict(files={"image": ("a.png", PNG, "image/png")}), 422, "'file'"),
    "file as a text field": (dict(data={"file": "a.png"}, files={"other": ("o.png", PNG, "image/png")}), 422, "'file'"),
    "multipart without boundary": (dict(content=b"--x\r\n", headers={"content-type": "multipart/form-data"}),
                                   400, "multipart"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_requests_get_their_status_and_a_json_error(client, case):
    kwargs, status, words = BAD[case]
    reply = client.post("/predict", **kwargs)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert words in reply.json()["error"] and reply.json()["status"] == status


def test_other_routes_and_methods_answer_in_json(client):
    assert client.get("/predict").status_code == 405 and "not allowed" in client.get("/predict").json()["error"]
    assert client.get("/nothing").status_code == 404 and "/predict" in client.get("/nothing").json()["error"]


def test_a_real_decompression_bomb_is_refused_before_its_pixels_exist(client):
    """A valid 12,000 x 12,000 PNG (144 MB of pixels once decoded, 140 KB as a file): 413 from its header, and
    the process's peak memory does not grow by anything like its size."""
    bomb = real_bomb_png()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss          # KiB on Linux
    for _ in range(3):
        reply = client.post("/predict", content=bomb, headers={"content-type": "image/png"})
        assert reply.status_code == 413 and "12000x12000" in reply.json()["error"]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 50_000


def test_max_pixels_is_the_servers_limit(checkpoint, predictor):
    with TestClient(create_app(predictor, Settings(checkpoint, max_pixels=500)), base_url=LOCAL) as small:
        reply = small.post("/predict", content=PNG, headers={"content-type": "image/png"})
    assert reply.status_code == 413 and "--max-pixels 500" in reply.json()["error"]


def test_model_healthz_and_the_page(client):
    card = client.get("/model").json()
    assert card["name"] == "alexnet_small" and card["num_classes"] == len(card["classes"]) == 10
    assert card["classes"][9] == "Ankle boot" and card["input_size"] == [1, 28, 28]
    assert card["parameters"] == 1_005_898 and card["backend"] == "torch"   # quick: fc 512
    assert card["preprocessing"]["normalization"] == "channel" and card["preprocessing"]["ten_crop"] is False
    assert card["checkpoint"]["file"] == "best.pt" and card["checkpoint"]["config"]["recipe"] == "quick"
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["batching"]["max_batch"] == 32
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "viewport" in page.text
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")     # no CDN: nothing external
    for name in ("app.js", "style.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and "http://" not in asset.text and "https://" not in asset.text


def _batch_sizes(window_s: float, max_batch: int, n: int = 8) -> tuple[list[int], list]:
    seen: list[int] = []

    def topk(images, k):
        seen.append(len(images))
        return [[{"label": str(int(image[0, 0, 0])), "index": 0, "prob": 1.0}] for image in images]

    async def run():
        batcher = MicroBatcher(topk, k=1, window_s=window_s, max_batch=max_batch)
        batcher.start()
        images = [np.full((2, 2, 1), i, np.uint8) for i in range(n)]
        answers = await asyncio.gather(*(batcher.submit(image) for image in images))
        await batcher.stop()
        return answers
    return seen, asyncio.run(run())


def test_requests_that_arrive_together_share_one_forward_pass():
    seen, answers = _batch_sizes(window_s=0.5, max_batch=32)
    assert seen == [8] and [a[0]["label"] for a in answers] == [str(i) for i in range(8)]   # each gets its own
    assert _batch_sizes(window_s=0.5, max_batch=3)[0] == [3, 3, 2]
    assert _batch_sizes(window_s=0.0, max_batch=1)[0] == [1] * 8                          # one at a time


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    calls = []

    def topk(images, k):
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return [[{"label": "x", "index": 0, "prob": 1.0}] for _ in images]

    async def run():
        batcher = MicroBatcher(topk, k=1, window_s=0.05, max_batch=8)
        batcher.start()
        first = await asyncio.gather(*(batcher.submit(np.zeros((1, 1, 1))) for _ in range(2)), return_exceptions=True)
        second = await batcher.submit(np.zeros((1, 1, 1)))
        await batcher.stop()
        return first, second
    first, second = asyncio.run(run())
    assert all(isinstance(err, RuntimeError) for err in first) and second[0]["label"] == "x"


@pytest.mark.parametrize("text,value", [("10MB", 10_000_000), ("512KB", 512_000), ("2MiB", 2 * 2**20),
                                        ("1.5MB", 1_500_000), ("89M", 89_000_000), ("123", 123), ("64 kib", 65_536)])
def test_sizes_parse(text, value):
    assert parse_size(text, "--max-bytes") == value


@pytest.mark.parametrize("text", ["ten", "10XB", "-1", "0", "", "1e6"])
def test_bad_sizes_are_usage_errors(text):
    with pytest.raises(UsageError, match="--max-bytes"):
        parse_size(text, "--max-bytes")


def _serve(argv, capsys) -> tuple[int, str]:
    try:
        code = main(["serve", *argv])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def test_serve_refuses_a_missing_or_broken_checkpoint_and_bad_flags(checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    cases = [([str(tmp_path / "missing.pt"), "--port", "0"], "does not exist"),
             ([str(broken), "--port", "0"], "broken.pt"),
             ([checkpoint, "--max-bytes", "lots"], "--max-bytes 'lots' is not a size"),
             ([checkpoint, "--port", "70000"], "--port must be in 0..65535"),
             ([checkpoint, "--max-batch", "0"], "--max-batch must be >= 1"),
             ([checkpoint, "--host", "no.such.host.invalid"], "--host no.such.host.invalid")]
    for argv, words in cases:
        code, err = _serve(argv, capsys)
        assert code == 2 and words in err and "Traceback" not in err, (argv, err)


def test_serve_refuses_a_port_in_use(checkpoint, capsys):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        code, err = _serve([checkpoint, "--port", str(port)], capsys)
    finally:
        holder.close()
    assert code == 2 and f"127.0.0.1:{port} is already in use" in err and "--port" in err


def test_an_onnx_export_serves_the_same_answers(checkpoint, client, tmp_path):
    pytest.importorskip("onnxruntime")
    from alexnet.interchange.export import export_checkpoint
    onnx_file = str(tmp_path / "model.onnx")
    export_checkpoint(checkpoint, "onnx", onnx_file)
    settings = Settings(onnx_file)
    with TestClient(create_app(load_predictor(settings), settings), base_url=LOCAL) as served:
        card = served.get("/model").json()
        assert card["backend"] == "onnxruntime" and card["parameters"] == 1_005_898    # counted on the meta device
        got = served.post("/predict", content=PNG, headers={"content-type": "image/png"}).json()["topk"]
    want = client.post("/predict", content=PNG, headers={"content-type": "image/png"}).json()["topk"]
    assert [t["index"] for t in got] == [t["index"] for t in want]
    assert [t["prob"] for t in got] == pytest.approx([t["prob"] for t in want], abs=1e-5)


def test_serve_runs_backend_auto_for_a_stream(checkpoint, client, monkeypatch):
    """serve's default is --backend auto for a stream of single images: a checkpoint of a model onnxruntime runs
    faster one at a time (backends.ONNXRUNTIME_FASTER, measured for alexnet_owt) is exported in memory and served
    on onnxruntime with the same answers; any other stays on torch (test_model_healthz_and_the_page)."""
    pytest.importorskip("onnxruntime")
    from alexnet.inference import backends
    from alexnet.cli.main import build_parser
    assert build_parser().parse_args(["serve", checkpoint]).backend == Settings(checkpoint).backend == "auto"
    monkeypatch.setattr(backends, "ONNXRUNTIME_FASTER", frozenset({"alexnet_small"}))
    settings = Settings(checkpoint)
    with TestClient(create_app(load_predictor(settings), settings), base_url=LOCAL) as served:
        assert served.get("/model").json()["backend"] == "onnxruntime"
        got = served.post("/predict", content=PNG, headers={"content-type": "image/png"}).json()["topk"]
    want = client.post("/predict", content=PNG, headers={"content-type": "image/png"}).json()["topk"]
    assert [t["index"] for t in got] == [t["index"] for t in want]
    assert [t["prob"] for t in got] == pytest.approx([t["prob"] for t in want], abs=1e-5)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_threads_sets_the_threads_of_each_inference_call(checkpoint, backend, capsys):
    """--threads N: PyTorch's (process-wide) and onnxruntime's intra-op threads, shown on /model; bad values exit 2."""
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    import torch
    before = torch.get_num_threads()
    try:
        settings = Settings(checkpoint, backend=backend, threads=1)
        with TestClient(create_app(load_predictor(settings), settings), base_url=LOCAL) as served:
            assert served.get("/model").json()["threads"] == 1
            assert served.post("/predict", content=PNG, headers={"content-type": "image/png"}).status_code == 200
    finally:
        torch.set_num_threads(before)
    code, err = _serve([checkpoint, "--threads", "-1"], capsys)
    assert code == 2 and "--threads must be >= 0, got -1" in err
