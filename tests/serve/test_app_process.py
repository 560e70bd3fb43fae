"""alexnet.serve.app, `alexnet serve` as a real process on 127.0.0.1: SIGTERM drains the requests in flight and exits
0; a body over --max-bytes is refused before it is read (from its Content-Length, or mid-stream); the load bench runs
end to end (a smoke run, not a measurement)."""
from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from serve_fixtures import fashion_pngs, start_server  # noqa: E402


def test_sigterm_answers_the_requests_in_flight_then_exits_0(checkpoint):
    """Three requests wait in a 2-second batch window when SIGTERM arrives: all three are answered, then exit 0."""
    png = fashion_pngs(1)[0]
    with start_server(checkpoint, "--batch-window-ms", "2000") as (proc, url):
        replies: list = []

        def ask():
            try:
                replies.append(httpx.post(url + "/predict", content=png, headers={"content-type": "image/png"},
                                          timeout=30))
            except httpx.HTTPError as err:
                replies.append(err)
        threads = [threading.Thread(target=ask) for _ in range(3)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while httpx.get(url + "/healthz").json()["batching"]["waiting"] < 3:     # all three in, none answered
            assert time.monotonic() < deadline and not replies, replies
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        code = proc.wait(30)
        output = proc.stdout.read()
    assert code == 0, output
    assert [getattr(r, "status_code", r) for r in replies] == [200, 200, 200]
    assert all(r.json()["topk"] for r in replies)
    assert "alexnet serve: stopped" in output and "Traceback" not in output


def _response_status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1") else -1


def test_an_oversized_body_is_refused_before_it_is_read(checkpoint):
    """--max-bytes 100KB. A Content-Length of 1 GB with no body sent: 413 at once. A chunked body that never
    ends: 413 after about 100 KB, while the client is still sending."""
    with start_server(checkpoint, "--max-bytes", "100KB") as (proc, url):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 1000000000\r\n\r\n" + b"\0" * 1000)
            assert _response_status(sock) == 413
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            sock.setblocking(False)
            sent, chunk, status = 0, b"%x\r\n%s\r\n" % (16384, b"\0" * 16384), None
            while sent < 200_000_000 and status is None:          # an endless stream, bounded here
                try:
                    sent += sock.send(chunk)
                except BlockingIOError:
                    time.sleep(0.01)
                except (BrokenPipeError, ConnectionResetError):
                    break
                try:
                    status = int(sock.recv(64).split(b" ")[1])
                except BlockingIOError:
                    pass
            assert status == 413 and sent < 20_000_000, (status, sent)
        assert httpx.get(url + "/healthz").status_code == 200                 # and the server is fine


def test_load_bench_smoke(checkpoint, tmp_path):
    """bench/serve_load.py, tiny: both servers, no 5xx and no wrong answer, the JSON written."""
    import serve_load
    report = tmp_path / "load.json"
    assert serve_load.main([checkpoint, "--clients", "4", "--requests", "5", "--images", "8", "--time-limit", "60",
                            "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    for mode in ("micro-batching", "one at a time"):
        result = data["modes"][mode]
        assert result["completed"] == 20 and result["count_5xx"] == result["wrong_answers"] == 0
        assert result["wrong_bad"] == 0 and result["server_exit"] == 0
    assert data["modes"]["one at a time"]["batching"]["largest_batch"] == 1 and data["speedup"] > 0
