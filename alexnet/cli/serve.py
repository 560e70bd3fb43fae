"""The `alexnet serve` sub-command: its flags, the listening socket and uvicorn (imported only when it runs)."""
from __future__ import annotations

import argparse
import errno
import gc
import ipaddress
import math
import os
import re
import signal
import socket

from alexnet.cli import flags
from alexnet.util import checks, memory
from alexnet.errors import UsageError

MOST = {"--workers": 64, "--max-batch": 4096, "--threads": 1024, "--topk": 100_000}   # beyond: a typo, not a wish
MOST_PIXELS = 1 << 30        # --max-pixels: 1 Gi pixels (decoding one may take 12 bytes per pixel: docs/inference.md)
MOST_BYTES = 1 << 32         # --max-bytes: 4 GiB, an uncompressed image of 1 Gi pixels at 4 bytes each
UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str, flag: str, most: int = MOST_BYTES, why: str = "") -> int:
    """``10MB`` -> 10,000,000; ``512KB``, ``1.5MiB``, ``89M``, ``2000000``; anything else, or more than ``most``
    (``why`` says why not), a UsageError."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if unit not in UNITS:
        raise UsageError(f"{flag} {text!r} is not a size: give a number with an optional unit, like 10MB, "
                         f"512KB, 2MiB or 89M ({', '.join(u for u in UNITS if u)})")
    value = float(match.group(1)) * UNITS[unit]
    if value > most:                            # infinity too: 400 digits are more than a float holds
        shown = f"{value:,.0f}" if math.isfinite(value) else repr(text if len(text) < 40 else text[:20] + "...")
        raise UsageError(f"{flag} {shown} is more than this server takes (at most {most:,}{why})")
    checks.at_least(int(value), 1, flag)
    return int(value)


def add_parsers(sub) -> None:
    p = sub.add_parser("serve", help="predictions over HTTP, with a page to try images (Starlette + uvicorn)",
                       description="Serve CKPT_OR_ONNX over HTTP: GET / (a page: choose or drop an image), POST /predict "
                                   "(multipart 'file' or the raw image body; the JSON of predict --json), GET /model, "
                                   "GET /healthz. Requests that arrive together are batched. Binds to 127.0.0.1: "
                                   "only this machine can reach it unless --host says otherwise. SIGTERM finishes "
                                   "the requests in flight, then exits 0.")
    p.add_argument("checkpoint", metavar="CKPT_OR_ONNX", help="a checkpoint, or an .onnx or .safetensors export")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only; "
                                                       "0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    flags.topk(p, "classes in each answer (default: 5)")
    p.add_argument("--max-bytes", default="10MB", metavar="SIZE", help="largest request body, e.g. 10MB, 512KB (default: 10MB; at most 4GiB)")
    p.add_argument("--max-pixels", default=None, metavar="PIXELS",
                   help="largest image, width x height from its header (default: PIL's limit, 89478485)")
    p.add_argument("--batch-window-ms", type=float, default=5.0, metavar="MS",
                   help="how long the first request of a batch waits for others (default: 5; 0: no waiting)")
    p.add_argument("--max-batch", type=int, default=32, metavar="N", help="most images in one forward pass (default: 32; "
                                                             "1 with --batch-window-ms 0: one request at a time)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="server processes, each with its own copy of the model")
    flags.ten_crop(p)
    flags.flip_view(p)
    flags.device(p)
    flags.backend(p, "auto", auto="onnxruntime for an .onnx export and for a checkpoint of a model it runs faster one "
                                  "image at a time (alexnet_owt, docs/inference/), torch otherwise")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="threads per inference call, PyTorch's and onnxruntime's (default 0: one per core); on a "
                        "machine busy with other work, 1 keeps batch-1 latency steady (docs/inference/)")
    p.add_argument("--read-timeout", type=float, default=30.0, metavar="S",
                   help="close a client that sends no headers, or no body bytes, for this many seconds (default: 30)")
    p.add_argument("--model-details", action="store_true",
                   help="GET /model also shows the checkpoint's data source and training config (paths of this machine)")
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    p.set_defaults(func=_serve)


def _max_pixels() -> int:
    from alexnet.data.decode import MAX_PIXELS     # only when serving: alexnet.data is heavy, --help is not
    return MAX_PIXELS


def settings_from(args: argparse.Namespace):
    """The Settings of the flags, every value checked (before the model is loaded or a port taken)."""
    from alexnet.serve.app import Settings
    checks.at_least(args.topk, 1, "--topk")
    checks.at_least(args.max_batch, 1, "--max-batch")
    checks.at_least(args.workers, 1, "--workers")
    checks.at_least(args.threads, 0, "--threads")
    for flag, most in MOST.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value > most:
            raise UsageError(f"{flag} {value} is more than this server takes (at most {most:,})")
    if not 0 < args.read_timeout <= 3600:
        raise UsageError(f"--read-timeout must be in (0, 3600] seconds, got {args.read_timeout:g}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if not 0 <= args.batch_window_ms <= 10_000:
        raise UsageError(f"--batch-window-ms must be in [0, 10000], got {args.batch_window_ms}")
    max_pixels = _max_pixels() if args.max_pixels is None else \
        parse_size(args.max_pixels, "--max-pixels", MOST_PIXELS, ": decoding one such image could take over 12 GB")
    return Settings(checkpoint=args.checkpoint, topk=args.topk, max_bytes=parse_size(args.max_bytes, "--max-bytes"),
                    max_pixels=max_pixels, batch_window_ms=args.batch_window_ms,
                    max_batch=args.max_batch, device=args.device, backend=args.backend, ten_crop=args.ten_crop,
                    flip_view=args.flip_view,
                    threads=args.threads, host=args.host, model_details=args.model_details,
                    read_timeout_s=args.read_timeout)


def listen(host: str, port: int) -> socket.socket:
    """A bound socket (uvicorn listens on it): a port in use or an address not ours is a UsageError now."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as err:
        raise UsageError(f"--host {host}: not an address of this machine ({err.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)      # as uvicorn: restart without TIME_WAIT trouble
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {port}: {host}:{port} is already in use (another server?); stop it, or pick "
                             "another --port (0: any free port)") from None
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from None
    sock.set_inheritable(True)
    return sock


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from alexnet.serve.app import ENVIRONMENT, create_app, load_predictor, settings_json
    from alexnet.serve import workers
    from alexnet.serve.guards import TimedProtocol
    settings = settings_from(args)
    sock = listen(args.host, args.port)
    try:
        predictor = load_predictor(settings)        # once, here: a bad checkpoint is a clear message, exit 2
        host, port = sock.getsockname()[:2]
        print(banner(predictor, settings, host, port, args.workers), flush=True)
        TimedProtocol.timeout = settings.read_timeout_s
        common = dict(log_level="info", access_log=args.access_log, timeout_graceful_shutdown=30, lifespan="on",
                      http=TimedProtocol)
        # uvicorn drains on SIGTERM, then raises the signal again for the handler it found: this one ends
        # the command with 0 (cli.main's own would turn it into Terminated, 143)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        if args.workers == 1:
            config = uvicorn.Config(create_app(predictor, settings), **common)
        else:
            del predictor                           # checked; each worker process loads its own
            gc.collect()
            memory.release_freed()                  # the parent keeps no copy of the model's memory
            os.environ[ENVIRONMENT] = settings_json(settings)
            config = uvicorn.Config("alexnet.serve.app:app_from_environment", factory=True, workers=args.workers, **common)
        workers.serve(config, sock, args.workers)   # SIGTERM: every connection accepted is answered (serve.workers)
    finally:
        sock.close()
    print("alexnet serve: stopped", flush=True)
    return 0


def banner(predictor, settings, host: str, port: int, workers: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    lines = [f"alexnet serve: {predictor.info.model.name} ({len(predictor.classes)} classes) from "
             f"{settings.checkpoint} on {predictor.loaded.backend} {predictor.loaded.device}, {workers} worker(s); "
             f"batches of up to {settings.max_batch} within {settings.batch_window_ms:g} ms",
             f"  page:     {url}/",
             f"  predict:  curl -F file=@photo.jpg {url}/predict",
             f"  model:    {url}/model    health: {url}/healthz"]
    if _is_loopback(host):
        lines.append(f"  listening on {host} only: other machines cannot reach it. To expose it, run with --host 0.0.0.0 "
                     "(every interface) behind a firewall or a reverse proxy with TLS: it has no authentication.")
    else:
        lines.append(f"  listening on {host}: anyone who can reach port {port} can use it (no authentication, "
                     "no TLS); --host 127.0.0.1 keeps it to this machine.")
    return "\n".join(lines)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
