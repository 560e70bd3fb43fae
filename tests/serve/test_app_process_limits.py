"""alexnet.serve.app as a real process, issue 23's limits: a client that writes a too-large body before it reads
(as Python's urllib does) gets the 413, not a reset (item 22). (A streamed body past --max-bytes answered 413 at
once: tests/serve/test_app_process.py.)"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("uvicorn")

from serve_fixtures import png_bytes, start_server  # noqa: E402

PNG = png_bytes((np.arange(28 * 28) % 251).astype(np.uint8).reshape(28, 28))


@pytest.fixture
def untrained(make_checkpoint, tmp_path):
    """An untrained alexnet_small checkpoint (no training: these tests are about the server, not the answers)."""
    import torch
    torch.manual_seed(0)
    make_checkpoint(classes=10).save(tmp_path / "ckpt.pt")
    return str(tmp_path / "ckpt.pt")


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _post(url: str, body: bytes, timeout: float = 60) -> tuple[int, dict]:
    """urllib's POST: the whole body written, then the answer read. (status, JSON body)."""
    request = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_client_that_writes_the_whole_body_first_gets_the_413(untrained):
    """--max-bytes 100KB, 8 MB bodies written whole by urllib before it reads (within the 8 MB drained past the
    limit; more than the socket buffers hold, 4 MB here, so the client is still writing when the server answers):
    each gets the 413 and its sentence. Before the fix, the server answered and closed while the body was still
    coming, and the client saw the connection reset (urllib: ConnectionResetError, BrokenPipeError)."""
    with start_server(untrained, "--max-bytes", "100KB") as (_, url):
        for _ in range(2):
            status, body = _post(url, b"\0" * 8_000_000)
            assert status == 413 and "--max-bytes" in body["error"], (status, body)
        assert _post(url, PNG)[0] == 200                      # the connection handling is not worse for it
