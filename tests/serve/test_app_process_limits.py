"""alexnet.serve.app as a real process, issue 23's limits: a client that writes a too-large body before it reads
(as Python's urllib does) gets the 413, not a reset (item 22); a client that sends its headers or its body too
slowly is closed, or answered 408, after --read-timeout, while others are served (item 23). (A streamed body past
--max-bytes answered 413 at once: tests/serve/test_app_process.py.)"""
from __future__ import annotations

import json
import socket
import time
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


def _status(sock: socket.socket) -> int | str:
    """The status of the answer on ``sock``; "closed" when the server closed it without one."""
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return "closed"
        head += chunk
    return int(head.split(b" ")[1])


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


def test_slow_clients_are_closed_after_the_read_timeout(untrained):
    """--read-timeout 2: connections whose headers stop half-way are closed, one whose body stalls gets a 408;
    meanwhile, and after, a normal client is answered, and a body sent in pieces a little apart is not cut.
    (Before the fix, 30 clients sending a byte a second were still open after 40 s.)"""
    with start_server(untrained, "--read-timeout", "2") as (_, url):
        address = _address(url)
        slow = [socket.create_connection(address, timeout=30) for _ in range(3)]
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")        # headers never finished
        stalled = socket.create_connection(address, timeout=30)
        stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(PNG) + PNG[:10])              # then nothing
        assert _post(url, PNG)[0] == 200                      # a normal client, while those hang
        pieces = socket.create_connection(address, timeout=30)
        pieces.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(PNG))
        for start in range(0, len(PNG), len(PNG) // 3 + 1):
            pieces.sendall(PNG[start:start + len(PNG) // 3 + 1])
            time.sleep(0.3)
        assert _status(pieces) == 200
        assert _status(stalled) == 408                         # within the 30 s the socket waits, not never
        for sock in slow:
            assert _status(sock) == "closed"
        assert _post(url, PNG)[0] == 200
        for sock in [*slow, stalled, pieces]:
            sock.close()
