"""Load test of `alexnet serve`, bounded: its own server on 127.0.0.1 only, a fixed number of requests, a time limit.

    python bench/serve_load.py CKPT [--clients 50] [--requests 20] [--bad-every 5] [--time-limit 300] [--json FILE]

CLIENTS concurrent clients each send REQUESTS requests, one after another; every BAD_EVERY-th is bad (a truncated
PNG -> 400, a text file -> 415, a body over --max-bytes -> 413, a decompression-bomb header -> 413, a multipart
body without its 'file' field -> 422, in turn), the rest are Fashion-MNIST test images (half multipart, half raw
bodies). A wrong answer is a good image whose reply differs from the Predictor's own answer for it (other
classes or order, or a probability off by more than 1e-4), or a bad one not given its 4xx. Two servers are
measured in turn: micro-batching (--batch-window-ms 5 --max-batch 32) and one request at a time
(--batch-window-ms 0 --max-batch 1). Prints and writes p50/p99 latency, throughput, 5xx and wrong answers.

The clients are plain asyncio streams speaking HTTP/1.1 with keep-alive (a new connection when the server closes
one), not httpx: on this 2-core machine httpx's AsyncClient with 50 connections was itself the bottleneck (about
150 requests/s with p99 near 2 s, against 640/s and p99 0.1 s for the same server with these clients).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import platform
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # this checkout's alexnet, as the server it starts (cwd ROOT, -m alexnet)
MODES = {"micro-batching": ["--batch-window-ms", "5", "--max-batch", "32"],
         "one at a time": ["--batch-window-ms", "0", "--max-batch", "1"]}
MAX_BYTES = 256_000
TOLERANCE = 1e-4


@contextlib.contextmanager
def start_server(checkpoint: str, *flags: str, timeout: float = 120):
    """``alexnet serve CKPT --port 0 FLAGS`` as a subprocess on 127.0.0.1; yields (process, base URL) once it
    answers; SIGTERM (and the drain) at the end. The port is read from its banner, so no port is guessed."""
    proc = subprocess.Popen([sys.executable, "-m", "alexnet", "serve", checkpoint, "--host", "127.0.0.1", "--port", "0",
                             *flags], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, url, seen = time.monotonic() + timeout, None, []
        while url is None:
            line = proc.stdout.readline()
            seen.append(line)
            if not line and proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"alexnet serve did not start (exit {proc.poll()}):\n{''.join(seen)}")
            if line.strip().startswith("page:"):
                url = line.split()[-1].rstrip("/")
        _wait_healthy(url, deadline)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def _wait_healthy(url: str, deadline: float) -> None:
    while True:
        try:
            if get_json(url + "/healthz")["status"] == "ok":
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}/healthz did not answer")
        time.sleep(0.1)


def fashion_pngs(n: int) -> list[bytes]:
    """The first ``n`` Fashion-MNIST test images as PNG files' bytes."""
    from PIL import Image
    from alexnet.data.sources import open_dataset
    images = np.asarray(open_dataset("fashion-mnist", "test", progress=False).images[:n])
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def bomb_png(side: int = 60_000) -> bytes:
    """A PNG whose header says side x side grey pixels (3.6 G at 60,000), with a few bytes of data after it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def http_request(body: bytes, content_type: str) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def multipart(field: str, filename: str, data: bytes, content_type: str) -> bytes:
    boundary = "alexnet-bench-7d1c"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return http_request(body, f"multipart/form-data; boundary={boundary}")


def bad_requests(png: bytes) -> list[tuple[str, bytes, int]]:
    """(name, the HTTP request, the status it must get)."""
    return [("truncated PNG", http_request(png[:len(png) // 2], "image/png"), 400),
            ("text file", multipart("file", "notes.txt", b"not an image\n" * 20, "text/plain"), 415),
            ("over --max-bytes", http_request(b"\0" * (MAX_BYTES + 1000), "image/png"), 413),
            ("decompression bomb", multipart("file", "bomb.png", bomb_png(), "image/png"), 413),
            ("no 'file' field", multipart("image", "x.png", png, "image/png"), 422)]


def plan(pngs: list[bytes], clients: int, per_client: int, bad_every: int) -> list[list[tuple]]:
    """For each client, its requests: (kind, image index or bad name, the HTTP request, expected status)."""
    bad, out, n = bad_requests(pngs[0]), [], 0
    for _ in range(clients):
        mine = []
        for _ in range(per_client):
            n += 1
            if bad_every and n % bad_every == 0:
                name, request, status = bad[(n // bad_every) % len(bad)]
                mine.append(("bad", name, request, status))
            else:
                i = n % len(pngs)
                request = (multipart("file", f"{i}.png", pngs[i], "image/png") if n % 2 else
                           http_request(pngs[i], "image/png"))
                mine.append(("good", i, request, 200))
        out.append(mine)
    return out


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it (as after a 413)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.reader, self.writer = host, port, None, None

    async def send(self, request: bytes) -> tuple[int, dict | None]:
        if self.writer is None or self.reader.at_eof():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        try:
            await self.writer.drain()
        except ConnectionError:         # refused before the body was all sent: the reply is there to read
            pass
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        data = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.writer = None
        body = json.loads(data) if headers.get("content-type", "").startswith("application/json") else None
        return int(lines[0].split()[1]), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def judge(kind: str, key, status: int, body: dict | None, expected_status: int, answers: list) -> bool:
    """Whether the reply is right: the Predictor's own top-k for a good image, the right 4xx for a bad one."""
    if status != expected_status or body is None:
        return False
    if kind == "bad":
        return "error" in body
    want = answers[key]
    got = body.get("topk", [])
    return [t["index"] for t in got] == [t["index"] for t in want] and \
        all(abs(g["prob"] - w["prob"]) <= TOLERANCE and g["label"] == w["label"] for g, w in zip(got, want))


async def load(url: str, requests: list[list[tuple]], answers: list, time_limit: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    records: list[tuple] = []         # (kind, latency s, status or None, right, kind or bad name)

    async def client(mine):
        connection = Client(host, int(port))
        try:
            for kind, key, request, expected in mine:
                started = time.perf_counter()
                try:
                    status, body = await connection.send(request)
                except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                    status, body, connection = None, {"transport": repr(err)}, Client(host, int(port))
                right = judge(kind, key, status, body, expected, answers)
                records.append((kind, time.perf_counter() - started, status, right, key if kind == "bad" else kind))
        finally:
            connection.close()

    started = time.perf_counter()
    tasks = [asyncio.create_task(client(mine)) for mine in requests]
    done, pending = await asyncio.wait(tasks, timeout=time_limit)
    for task in pending:
        task.cancel()
    wall = time.perf_counter() - started
    return summarise(records, wall, sum(len(m) for m in requests), timed_out=bool(pending))


def summarise(records: list[tuple], wall: float, planned: int, *, timed_out: bool) -> dict:
    def percentiles(latencies):
        return {"p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1) if latencies else None,
                "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1) if latencies else None}
    good = [r for r in records if r[0] == "good"]
    return {"planned": planned, "completed": len(records), "timed_out": timed_out, "wall_s": round(wall, 2),
            "throughput_rps": round(len(records) / wall, 1), "good_images_per_s": round(len(good) / wall, 1),
            "all": percentiles([r[1] for r in records]), "good": percentiles([r[1] for r in good]),
            "count_5xx": sum(1 for r in records if r[2] is not None and r[2] >= 500),
            "transport_errors": sum(1 for r in records if r[2] is None),
            "wrong_answers": sum(1 for r in records if not r[3]),
            "wrong_good": sum(1 for r in records if not r[3] and r[0] == "good"),
            "wrong_bad": sum(1 for r in records if not r[3] and r[0] == "bad"),
            "by_kind": {name: dict(percentiles([r[1] for r in records if r[4] == name]),
                                   n=sum(1 for r in records if r[4] == name))
                        for name in sorted({r[4] for r in records})}}


def measure(checkpoint: str, flags: list[str], requests, answers, time_limit: float) -> dict:
    with start_server(checkpoint, "--max-bytes", str(MAX_BYTES), *flags) as (proc, url):
        asyncio.run(load(url, [requests[0][:1]], answers, 60))           # first call: allocations, kernels
        result = asyncio.run(load(url, requests, answers, time_limit))
        result["batching"] = get_json(url + "/healthz")["batching"]
    result["server_exit"] = proc.returncode
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--bad-every", type=int, default=5, help="every Nth request is a bad one (0: none)")
    parser.add_argument("--images", type=int, default=200, help="distinct Fashion-MNIST test images")
    parser.add_argument("--time-limit", type=float, default=300, help="seconds per server before the rest is dropped")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    parser.add_argument("--json", default=None, help="write the report here")
    args = parser.parse_args(argv)
    from alexnet.util.machine import machine
    from alexnet.inference.predict import Predictor
    pngs = fashion_pngs(args.images)
    predictor = Predictor(args.checkpoint)
    answers = [predictor.topk([predictor.decode_bytes(png)], 5)[0] for png in pngs]       # one at a time
    requests = plan(pngs, args.clients, args.requests, args.bad_every)
    report = {"command": " ".join(["python", "bench/serve_load.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "python": platform.python_version(), "checkpoint": args.checkpoint,
              "clients": args.clients, "requests_per_client": args.requests, "bad_every": args.bad_every,
              "max_bytes": MAX_BYTES, "tolerance": TOLERANCE, "modes": {}}
    for mode in args.modes.split(","):
        result = measure(args.checkpoint, MODES[mode], requests, answers, args.time_limit)
        report["modes"][mode] = dict(result, flags=" ".join(MODES[mode]))
        print(f"{mode:>15}: {result['throughput_rps']:7.1f} req/s, p50 {result['all']['p50_ms']} ms, "
              f"p99 {result['all']['p99_ms']} ms, 5xx {result['count_5xx']}, wrong {result['wrong_answers']}, "
              f"transport errors {result['transport_errors']}, mean batch {result['batching']['mean_batch']}, "
              f"{result['completed']}/{result['planned']} done, server exit {result['server_exit']}", flush=True)
    modes = report["modes"]
    if len(modes) == 2:
        report["speedup"] = round(modes["micro-batching"]["throughput_rps"] / modes["one at a time"]["throughput_rps"], 2)
        print(f"micro-batching / one at a time: {report['speedup']}x throughput")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(m["count_5xx"] == 0 and m["wrong_answers"] == 0 for m in modes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
