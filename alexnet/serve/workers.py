"""How ``alexnet serve`` runs its server processes, and stops them without dropping a connection.

``--workers 1``: the server runs in this process. ``--workers N``: a supervisor (this process) and N worker
processes serving one listening socket (uvicorn's worker processes: spawned, pinged, a dead one replaced).

On SIGTERM or SIGINT every connection the kernel has accepted is answered, none reset (issue 23, item 20):

- the supervisor closes its copy of the listening socket at once, so that once the workers close theirs the port
  refuses new connections; a copy left open went on accepting them into a queue no worker read any more, and
  they were reset when the supervisor exited;
- each worker, before it stops listening, accepts what the kernel has queued (``DrainingServer``), and serves
  it with the requests in flight;
- a connection whose request has not arrived yet is given a moment for it (``guards.TimedProtocol.shutdown``).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Process

from alexnet.errors import Failure

LOG = logging.getLogger("uvicorn.error")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which on shutdown first accepts the connections queued on its listening sockets (closing
    a socket resets them), then stops listening, then drains them with the requests in flight."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        queued = [conn for sock in sockets or [] for conn in accept_queued(sock)]
        for server in self.servers:            # right after the last accept: nothing more can be queued
            server.close()
        loop = asyncio.get_running_loop()
        for conn in queued:
            await loop.connect_accepted_socket(self.new_protocol, conn)
        if queued:
            LOG.info("took %d connection(s) the kernel had queued; answering them before stopping", len(queued))
        await super().shutdown(sockets)

    def new_protocol(self) -> asyncio.Protocol:
        """A connection's protocol, as the listening server makes it (uvicorn's ``startup``)."""
        return self.config.http_protocol_class(config=self.config, server_state=self.server_state,
                                               app_state=self.lifespan.state, _loop=asyncio.get_running_loop())


def accept_queued(sock: socket.socket) -> list[socket.socket]:
    """Every connection waiting in ``sock``'s accept queue, without waiting for more."""
    taken = []
    try:
        sock.setblocking(False)
        while True:
            conn, _ = sock.accept()
            conn.setblocking(False)
            taken.append(conn)
    except OSError:                             # BlockingIOError: the queue is empty (or the socket is closed)
        return taken


class Worker(Process):
    """uvicorn's worker process, running a DrainingServer."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


def serve(config: uvicorn.Config, sock: socket.socket, workers: int) -> None:
    """Serve ``config``'s app on ``sock`` until SIGTERM or SIGINT: in this process, or in ``workers`` processes."""
    if workers == 1:
        DrainingServer(config).run(sockets=[sock])
    else:
        supervise(config, sock, workers)


def supervise(config: uvicorn.Config, sock: socket.socket, workers: int) -> None:
    """``workers`` processes on ``sock``, a dead or hung one replaced, until SIGTERM or SIGINT; then the socket
    closed here first, each worker stopped (it drains) and waited for. A worker that cannot start: a Failure."""
    stop = threading.Event()

    def stopping(signum, frame) -> None:
        sock.close()                           # at once: the workers' copies are the last (see the module's doc)
        stop.set()
    previous = {signum: signal.signal(signum, stopping) for signum in STOP_SIGNALS}
    running: list[Worker | None] = []
    try:
        while len(running) < workers and not stop.is_set():
            running.append(start(config, sock, stop))
        while not stop.wait(0.5):
            for i, worker in enumerate(running):
                if worker is None or worker.is_alive(timeout=config.timeout_worker_healthcheck):
                    continue
                worker.kill()                  # dead, or hung: it answers no ping
                worker.join()
                if worker.exitcode == STARTUP_FAILURE:
                    raise Failure("a worker process failed to start; its log is above")
                if not stop.is_set():
                    LOG.info("worker process [%s] died; starting another", worker.pid)
                    running[i] = start(config, sock, stop)
    finally:
        sock.close()
        running = [worker for worker in running if worker is not None]
        for worker in running:
            worker.terminate()
        for worker in running:
            worker.process.join(config.timeout_graceful_shutdown + 30)
            if worker.process.exitcode is None:
                worker.kill()
                worker.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def start(config: uvicorn.Config, sock: socket.socket, stop: threading.Event) -> Worker | None:
    """A worker process started on ``sock``; None when a stop signal closed the socket while it was spawned."""
    worker = Worker(config, [sock])
    try:
        worker.start()
    except OSError:
        if not stop.is_set():
            raise
        return None
    return worker
