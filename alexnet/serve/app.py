"""``alexnet serve``'s web app (Starlette, run by uvicorn): predictions over HTTP, and a page to try images.

Routes: ``GET /`` the page (alexnet/serve/static/), ``POST /predict`` (a multipart ``file`` or the raw image as the
body) -> ``{"topk": [{label, index, prob}], "model", "ms"}`` (``predict --json``'s top-k), ``GET /model`` (what
is served and how its inputs are preprocessed), ``GET /healthz`` (and how the micro-batching goes).

Uploads go through ``Predictor.decode_bytes``, the decoding ``alexnet predict`` uses for files, then through
the micro-batcher (alexnet/serve/batcher.py) to ``Predictor.topk``. A bad request gets a JSON ``{"error": ...}`` with
its status: 413 a body over ``max_bytes`` (refused from Content-Length before reading, or as soon as a streamed
body passes it) or an image over ``max_pixels`` (from its header, before any pixel is decoded); 415 a media
type or bytes that are no image format; 400 an empty, truncated or corrupt image or a malformed multipart
body; 422 a multipart body without its ``file`` field.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from alexnet.serve.batcher import MicroBatcher
from alexnet.serve.body import Problem, upload
from alexnet.serve.guards import HostCheck, TimedProtocol, allowed_names
from alexnet.data.decode import MAX_PIXELS, BadImage, NotAnImage, TooManyPixels
from alexnet.inference.predict import Predictor
from alexnet.util.machine import usable_cpus

ENVIRONMENT = "ALEXNET_SERVE"          # the settings, as JSON, for worker processes (--workers > 1)
LOG = logging.getLogger("uvicorn.error")


@dataclass
class Settings:
    checkpoint: str
    topk: int = 5
    max_bytes: int = 10_000_000
    max_pixels: int = MAX_PIXELS
    batch_window_ms: float = 5.0
    max_batch: int = 32
    device: str = "auto"
    backend: str | None = "auto"      # alexnet.inference.backends.auto_backend for a stream of single images
    ten_crop: bool | None = None
    flip_view: bool | None = None
    threads: int = 0                  # threads per inference call, torch and onnxruntime (0: as they are)
    host: str = "127.0.0.1"           # the bound address: the Host names answered (alexnet.serve.guards)
    model_details: bool = False       # /model also shows the checkpoint's data source and training config
    read_timeout_s: float = 30.0      # a client silent this long while sending headers or body is dropped


def load_predictor(settings: Settings) -> Predictor:
    if settings.threads:
        import torch
        torch.set_num_threads(settings.threads)       # process-wide: serve's process (or worker) is ours
    from PIL import Image
    if Image.MAX_IMAGE_PIXELS is not None and settings.max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = settings.max_pixels  # PIL refuses at twice this: --max-pixels is the limit
    return Predictor(settings.checkpoint, ten_crop=settings.ten_crop, flip_view=settings.flip_view, device=settings.device,
                     backend=settings.backend, batch_size=max(settings.max_batch, 1),
                     intra_op_threads=settings.threads)


def create_app(predictor: Predictor, settings: Settings) -> Starlette:
    """The app serving ``predictor`` (loaded once, by the caller) under ``settings``."""
    batcher = MicroBatcher(predictor.topk, k=settings.topk, window_s=settings.batch_window_ms / 1000,
                           max_batch=settings.max_batch)
    card = model_card(predictor, settings)
    page = (resources.files("alexnet.serve") / "static" / "index.html").read_text(encoding="utf-8")
    decoding = asyncio.Semaphore(usable_cpus())      # decodes in flight: one per core, the rest wait their turn

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        data = await upload(request, settings.max_bytes, settings.read_timeout_s)
        try:
            async with decoding:
                image = await run_in_threadpool(predictor.decode_bytes, data, settings.max_pixels)
        except TooManyPixels as err:
            raise Problem(413, f"{err} (this server's limit: --max-pixels {settings.max_pixels:,})") from None
        except NotAnImage as err:
            raise Problem(415, f"{err}; send a PNG, JPEG, WebP, BMP, TIFF or GIF image") from None
        except BadImage as err:
            raise Problem(400, f"cannot decode the image: {err}") from None
        topk = await batcher.submit(image)
        if not all(isinstance(t["prob"], float) and math.isfinite(t["prob"]) for t in topk):   # NaN, or None for it
            LOG.error("the model's output is not finite (NaN or infinity) for a %d-byte upload: its weights are "
                      "probably broken (check them with `alexnet convert` or retrain); answered 503", len(data))
            raise Problem(503, "the model's output for this image is not a number (NaN or infinity): the served "
                               "weights are broken, so no answer can be given; the server's log says more")
        return JSONResponse({"topk": topk, "model": card["name"],
                             "ms": round((time.perf_counter() - started) * 1000, 2)})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": card["name"], "batching": batcher.stats()})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        batcher.start()
        yield
        await batcher.stop()               # uvicorn ran it after the in-flight requests were answered

    routes = [Route("/", lambda request: HTMLResponse(page)),
              Route("/predict", predict, methods=["POST"]),
              Route("/model", lambda request: JSONResponse(card)),
              Route("/healthz", healthz),
              Mount("/static", StaticFiles(packages=[("alexnet.serve", "static")]), name="static")]
    handlers = {Problem: _problem, HTTPException: _http_error, Exception: _server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan,
                    middleware=[Middleware(HostCheck, names=allowed_names(settings.host))])
    app.state.batcher, app.state.predictor = batcher, predictor
    return app


def app_from_environment() -> Starlette:
    """The app of one worker process of ``alexnet serve --workers N``: the settings come in $ALEXNET_SERVE."""
    settings = Settings(**json.loads(os.environ[ENVIRONMENT]))
    TimedProtocol.timeout = settings.read_timeout_s
    return create_app(load_predictor(settings), settings)


def model_card(predictor: Predictor, settings: Settings) -> dict:
    """What ``GET /model`` answers: the network, its classes, its input and preprocessing, its size; where it came
    from (data path, training config: absolute paths of this machine) only with ``--model-details``."""
    info, prep = predictor.info, predictor.preprocessing
    preprocessing = {key: getattr(prep, key) for key in ("image_size", "channels", "crop_size", "resize_to",
                                                         "normalization", "pixel_scale")}
    preprocessing.update(decode=prep.decode_rule, ten_crop=predictor.ten_crop, flip_view=predictor.flip_view,
                         channel_mean=prep.stats.channel_mean.tolist(), channel_std=prep.stats.channel_std.tolist(),
                         mean_image="subtracted" if prep.normalization == "mean_image" else "not used")
    return {"name": info.model.name, "classes": list(predictor.classes), "num_classes": len(predictor.classes),
            "input_size": [prep.channels, prep.crop_size, prep.crop_size],
            "preprocessing": preprocessing, "parameters": parameter_count(predictor),
            "backend": predictor.loaded.backend, "device": str(predictor.loaded.device), "threads": threads(predictor),
            "checkpoint": {"file": os.path.basename(settings.checkpoint), "bytes": os.path.getsize(settings.checkpoint),
                           "model": info.model.to_dict(),
                           **({"data_source": prep.source, "config": info.config} if settings.model_details else {})},
            "limits": {"max_bytes": settings.max_bytes, "max_pixels": settings.max_pixels, "topk": settings.topk,
                       "batch_window_ms": settings.batch_window_ms, "max_batch": settings.max_batch}}


def threads(predictor: Predictor) -> int:
    """Threads each inference call runs on: onnxruntime's session setting, or PyTorch's process-wide count."""
    model = predictor.loaded.model
    if predictor.loaded.backend == "onnxruntime":
        chosen = int(model.session.get_session_options().intra_op_num_threads)
        from alexnet.util.machine import usable_cpus
        return chosen or usable_cpus()      # 0: onnxruntime's default, one per core
    import torch
    return torch.get_num_threads()


def parameter_count(predictor: Predictor) -> int:
    import torch
    model = predictor.loaded.model
    if not isinstance(model, torch.nn.Module):       # onnxruntime: the same spec built without memory
        with torch.device("meta"):
            model = predictor.info.model.build()
    return sum(p.numel() for p in model.parameters())


async def _problem(request: Request, err: Problem) -> Response:
    return JSONResponse({"error": str(err), "status": err.status}, status_code=err.status)


async def _http_error(request: Request, err: HTTPException) -> Response:
    message = {404: f"no such page: {request.url.path} (try /, /predict, /model, /healthz)",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(err.status_code, err.detail)
    return JSONResponse({"error": message, "status": err.status_code}, status_code=err.status_code,
                        headers=err.headers)


async def _server_error(request: Request, err: Exception) -> Response:
    return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}", "status": 500}, status_code=500)


def settings_json(settings: Settings) -> str:
    return json.dumps(asdict(settings))
