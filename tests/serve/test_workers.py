"""alexnet.serve.workers (issue 23, item 20): a stopping server answers the connections queued on its socket and
those whose request is still on its way (in process, on a bare ASGI app); `alexnet serve --workers 2` as real
processes: SIGTERM under load answers every connection the kernel accepted (each is answered or refused, never
reset), no worker outlives the server, and the parent keeps no copy of the model once its workers have it."""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>")

from alexnet.serve.guards import TimedProtocol  # noqa: E402
from alexnet.serve.workers import DrainingServer  # noqa: E402
from serve_fixtures import png_bytes, start_server  # noqa: E402

PNG = png_bytes((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64))


async def _hello(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _status(sock: socket.socket) -> str:
    try:
        head = sock.recv(4096)
    except OSError as err:
        return type(err).__name__
    return head.split(b" ")[1].decode() if head.startswith(b"HTTP/1.1 ") else "closed unanswered"


@pytest.fixture
def server():
    """A DrainingServer with TimedProtocol on a bare app in a thread: (the server, its address, its loop)."""
    import uvicorn
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    running = DrainingServer(uvicorn.Config(_hello, http=TimedProtocol, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    loop = running.servers[0].get_loop()
    yield running, sock.getsockname(), loop
    running.should_exit = True
    thread.join(20)
    assert not thread.is_alive()


def test_a_stopping_server_answers_the_connections_queued_on_its_socket(server):
    """Connections the kernel accepted but the server has not taken yet (its loop not reading the listening
    socket: a busy worker) are answered when it stops; uvicorn's server closed the socket on them (reset)."""
    import asyncio
    running, address, loop = server
    fileno = running.servers[0].sockets[0].fileno()
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)
    loop.call_soon_threadsafe(loop.remove_reader, fileno)       # stops taking connections; the kernel queues them
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)
    clients = [socket.create_connection(address, timeout=10) for _ in range(5)]
    for client in clients:
        client.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    running.should_exit = True
    assert [_status(client) for client in clients] == ["200"] * 5
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10).close()       # and then it listens no more


def test_a_request_still_on_its_way_at_shutdown_is_answered(server):
    """A connection taken before the stop whose request comes 0.5 s after it: answered, with Connection: close
    (uvicorn closed a connection with no request at once)."""
    running, address, _ = server
    client = socket.create_connection(address, timeout=10)
    deadline = time.monotonic() + 10
    while not running.server_state.connections:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    running.should_exit = True
    time.sleep(0.5)
    client.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert _status(client) == "200"


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def _workers(pid: int) -> list[int]:
    """The worker processes of the server ``pid`` (multiprocessing's spawned children, not its resource tracker)."""
    found = []
    for child in _children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    found.append(child)
        except FileNotFoundError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _end(pids: list[int]) -> list[int]:
    """Those of ``pids`` still alive, killed (no test leaves a worker behind)."""
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def _vm(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def _ask(port: int, outcomes: list, stop: float) -> None:
    """One client: a new connection per request until the port refuses (or ``stop``); each outcome noted: the
    status, "refused", or how a connection the kernel had accepted failed (reset, closed unanswered)."""
    request = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
               b"Content-Length: %d\r\n\r\n" % len(PNG)) + PNG
    while time.monotonic() < stop:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        except ConnectionRefusedError:
            outcomes.append("refused")
            return
        try:
            sock.sendall(request)
            head = b""
            while b"\r\n" not in head and (chunk := sock.recv(4096)):
                head += chunk
            outcomes.append(head.split(b" ")[1].decode() if head.startswith(b"HTTP/1.1 ") else "closed unanswered")
        except OSError as err:
            outcomes.append(type(err).__name__)
        finally:
            sock.close()


def _wait_for_workers(pid: int, n: int, within_s: float = 60) -> list[int]:
    deadline = time.monotonic() + within_s
    while len(workers := _workers(pid)) < n:
        assert time.monotonic() < deadline, f"{len(workers)} of {n} workers started"
        time.sleep(0.1)
    return workers


@pytest.mark.slow
def test_sigterm_under_load_answers_every_accepted_connection(make_checkpoint, tmp_path):
    """A crashed worker is replaced. Then 16 clients keep connecting to the 2 workers, and SIGTERM goes to the
    parent after 1 s. Every connection is answered 200 until the port refuses; before the fix, a connection the
    kernel queued after the workers had stopped taking them (the parent held the socket open) was reset, one per
    client."""
    import torch
    torch.manual_seed(0)
    make_checkpoint(classes=10).save(tmp_path / "ckpt.pt")
    with start_server(str(tmp_path / "ckpt.pt"), "--workers", "2") as (proc, url):
        killed = _wait_for_workers(proc.pid, 2)[0]
        os.kill(killed, signal.SIGKILL)                 # a crashed worker is replaced
        deadline = time.monotonic() + 60
        while killed in (workers := _workers(proc.pid)) or len(workers) < 2:
            assert time.monotonic() < deadline, "the crashed worker was not replaced"
            time.sleep(0.1)
        port, outcomes = int(url.rsplit(":", 1)[1]), []
        clients = [threading.Thread(target=_ask, args=(port, outcomes, time.monotonic() + 60)) for _ in range(16)]
        for client in clients:
            client.start()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(60)
        code = proc.wait(60)
        output = proc.stdout.read()
    assert _end(workers) == [], "a worker outlived the server"
    counts = {outcome: outcomes.count(outcome) for outcome in set(outcomes)}
    print(f"answered/refused/failed after SIGTERM under load: {counts}")
    assert code == 0 and "Traceback" not in output, output[-3000:]
    assert set(counts) <= {"200", "refused"} and counts.get("200", 0) >= 16, counts


@pytest.mark.slow
def test_the_parent_keeps_no_copy_of_the_model(make_checkpoint, tmp_path):
    """alexnet_owt (1000 classes, 233 MB of weights): each worker's private memory holds the model, the parent's
    does not (it loaded it to check it, then freed it): a worker's RssAnon exceeds the parent's by most of it."""
    import torch
    torch.manual_seed(0)
    checkpoint = make_checkpoint("alexnet_owt", classes=1000, channels=3, size=224, stored=256)
    checkpoint.save(tmp_path / "owt.pt")
    model_bytes = sum(t.numel() * t.element_size() for t in checkpoint.state_dict.values())
    del checkpoint
    with start_server(str(tmp_path / "owt.pt"), "--workers", "2", "--backend", "torch") as (proc, url):
        workers = _wait_for_workers(proc.pid, 2)
        time.sleep(2)                                   # both loaded (start_server waited for one to answer)
        parent, worker = _vm(proc.pid, "RssAnon"), min(_vm(pid, "RssAnon") for pid in workers)
        print(f"RssAnon: parent {parent / 2**20:.0f} MB, worker {worker / 2**20:.0f} MB, model "
              f"{model_bytes / 2**20:.0f} MB; parent VmRSS {_vm(proc.pid, 'VmRSS') / 2**20:.0f} MB")
    assert _end(workers) == []
    assert worker - parent > 0.75 * model_bytes, (parent, worker, model_bytes)
