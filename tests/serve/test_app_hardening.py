"""alexnet.serve.app, in process (Starlette's TestClient), issue 23's findings: a multipart body cut short (400),
a model whose output is not finite (503 and a log line, never a 500), what /model discloses (--model-details),
--max-pixels above PIL's own limit, the Host header (DNS rebinding), and serve's integer flags."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from alexnet.cli.main import main  # noqa: E402
from alexnet.serve.app import Settings, create_app, load_predictor  # noqa: E402
from serve_fixtures import bomb_png, png_bytes  # noqa: E402

LOCAL = "http://127.0.0.1"
PNG = png_bytes(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28))


def _client(predictor, settings, **kwargs):
    return TestClient(create_app(predictor, settings), base_url=kwargs.pop("base_url", LOCAL),
                      raise_server_exceptions=False, **kwargs)


def test_a_multipart_body_cut_short_is_a_400(checkpoint, predictor):
    boundary = "b0undary"
    whole = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
             f"Content-Type: image/png\r\n\r\n").encode() + PNG + f"\r\n--{boundary}--\r\n".encode()
    with _client(predictor, Settings(checkpoint)) as client:
        headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
        assert client.post("/predict", content=whole, headers=headers).status_code == 200
        for cut in (len(whole) // 2, len(whole) - 10):
            reply = client.post("/predict", content=whole[:cut], headers=headers)
            assert reply.status_code == 400 and "malformed multipart body" in reply.json()["error"], reply.text


def test_a_model_output_that_is_not_finite_is_a_503_with_a_sentence(checkpoint, caplog):
    import torch
    poisoned = load_predictor(Settings(checkpoint, backend="torch"))
    with torch.no_grad():
        next(poisoned.loaded.model.parameters()).fill_(float("nan"))
    with caplog.at_level(logging.ERROR), _client(poisoned, Settings(checkpoint)) as client:
        reply = client.post("/predict", content=PNG, headers={"content-type": "image/png"})
    assert reply.status_code == 503, reply.text
    assert "not a number" in reply.json()["error"] and reply.json()["status"] == 503
    assert any("not finite" in record.getMessage() for record in caplog.records)


def test_model_keeps_what_a_client_needs_and_the_rest_behind_model_details(checkpoint, predictor):
    with _client(predictor, Settings(checkpoint)) as client:
        card = client.get("/model")
    body = card.json()
    assert body["classes"][9] == "Ankle boot" and body["parameters"] == 1_005_898 and "preprocessing" in body
    folder = checkpoint.rsplit("/", 2)[0]
    assert folder not in card.text and "config" not in body["checkpoint"] and "data_source" not in body["checkpoint"]
    with _client(predictor, Settings(checkpoint, model_details=True)) as client:
        details = client.get("/model").json()["checkpoint"]
    assert details["config"]["recipe"] == "quick" and "data_source" in details


def test_max_pixels_above_pils_own_limit_is_the_limit(checkpoint, predictor, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)      # restored after the test
    settings = Settings(checkpoint, max_pixels=300_000_000)
    load_predictor(settings)
    with _client(predictor, settings) as client:          # 15,000 x 15,000 = 225 M: over PIL's 178.9 M, under ours
        reply = client.post("/predict", content=bomb_png(15_000), headers={"content-type": "image/png"})
    assert reply.status_code == 400 and "too many pixels" not in reply.json()["error"], reply.text


@pytest.mark.parametrize("host,status", [("127.0.0.1", 200), ("localhost:8000", 200), ("[::1]:8000", 200),
                                         ("LOCALHOST.", 200), ("evil.example", 400), ("127.0.0.1.evil.example", 400)])
def test_only_the_bound_host_names_are_accepted(checkpoint, predictor, host, status):
    with _client(predictor, Settings(checkpoint, host="127.0.0.1")) as client:
        reply = client.get("/model", headers={"host": host})
    assert reply.status_code == status, reply.text
    if status == 400:
        assert "Host" in reply.json()["error"]


def test_a_wildcard_or_named_host_accepts_its_names(checkpoint, predictor):
    with _client(predictor, Settings(checkpoint, host="0.0.0.0")) as client:
        assert client.get("/model", headers={"host": "my-server.lan:8000"}).status_code == 200
    with _client(predictor, Settings(checkpoint, host="my-server.lan")) as client:
        assert client.get("/model", headers={"host": "my-server.lan:8000"}).status_code == 200
        assert client.get("/model", headers={"host": "other.lan"}).status_code == 400


@pytest.mark.parametrize("argv,words", [(["--workers", "100000"], "--workers"), (["--max-batch", "1000000000"],
                                        "--max-batch"), (["--threads", "100000"], "--threads"),
                                        (["--topk", "-1"], "--topk"), (["--read-timeout", "-1"], "--read-timeout"),
                                        (["--max-pixels", "100G"], "--max-pixels"), (["--port", "-5"], "--port")])
def test_serve_refuses_negative_or_absurd_integer_flags(checkpoint, argv, words, capsys):
    try:
        code = main(["serve", checkpoint, *argv])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err
