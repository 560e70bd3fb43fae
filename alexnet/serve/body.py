"""The request body of ``POST /predict``: read within ``--max-bytes`` and ``--read-timeout``, then the image's bytes
taken from it (a multipart ``file`` part, or the whole body). Every refusal is a ``Problem``: an HTTP status and a
sentence."""
from __future__ import annotations

import asyncio

from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

IMAGE_TYPES = ("image/",)
NEUTRAL_TYPES = ("", "application/octet-stream",     # no claim either way: the bytes decide
                 "application/x-www-form-urlencoded")   # (curl --data-binary's default)
DRAIN_BYTES = 8_000_000      # read and dropped past --max-bytes, so a client that writes before it reads gets the 413


class Problem(Exception):
    """A request the server refuses: its HTTP status and a sentence saying what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def upload(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The image's bytes: a multipart body's ``file`` part, or the whole body. Raises Problem."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, max_bytes, timeout)
    if media != "multipart/form-data":
        check_media_type(media, "the body's Content-Type")
        return body
    boundary = request.headers.get("content-type", "").partition("boundary=")[2].split(";")[0].strip().strip('"')
    if boundary and not body.rstrip(b"\r\n").endswith(b"--" + boundary.encode("latin-1") + b"--"):
        raise Problem(400, "malformed multipart body: it ends before its closing boundary (cut short?)")

    async def once():
        yield body
    try:
        form = await MultiPartParser(request.headers, once(), max_files=4, max_fields=16).parse()
    except MultiPartException as err:
        raise Problem(400, f"malformed multipart body: {err.message}") from None
    try:
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise Problem(422, "the multipart body has no file field named 'file'; send the image as "
                               "file=@photo.jpg (curl -F), or as the raw body" + (f" (fields: {', '.join(form)})"
                                                                                     if form else ""))
        check_media_type((part.content_type or "").split(";")[0].strip().lower(), "the 'file' part's Content-Type")
        return await part.read()
    finally:
        await form.close()


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The body. Over ``max_bytes``: 413. A declared Content-Length up to DRAIN_BYTES beyond is read and dropped
    first, so that a client that writes its whole body before reading gets the answer instead of a reset; one
    beyond even that, and a streamed body passing ``max_bytes``, are answered at once. No bytes for ``timeout`` seconds: 408."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Problem(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > max_bytes:
            if int(declared) <= max_bytes + DRAIN_BYTES:
                await drain(request, int(declared), timeout)
            raise Problem(413, too_large(f"{int(declared):,} bytes", max_bytes))
    chunks, total, stream = [], 0, request.stream().__aiter__()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), timeout)
            except StopAsyncIteration:
                break
            total += len(chunk)
            if total > max_bytes:      # a stream with no declared length: answered at once (it may never end)
                chunks.clear()
                raise Problem(413, too_large(f"over {max_bytes:,} bytes (stopped reading there)", max_bytes))
            chunks.append(chunk)
    except asyncio.TimeoutError:
        raise Problem(408, f"the client sent nothing for {timeout:g} s (--read-timeout) before the body was "
                           "complete") from None
    except ClientDisconnect:
        raise Problem(400, "the client went away before the body was sent") from None
    return b"".join(chunks)


async def drain(request: Request, limit: int, timeout: float, stream=None) -> None:
    """Read and drop up to ``limit`` bytes of the body (each wait at most ``timeout``); stop quietly on any end."""
    stream = stream or request.stream().__aiter__()
    try:
        while limit > 0:
            limit -= len(await asyncio.wait_for(stream.__anext__(), timeout))
    except (StopAsyncIteration, asyncio.TimeoutError, ClientDisconnect):
        pass


def too_large(size: str, max_bytes: int) -> str:
    return f"the body is {size}; this server takes at most {max_bytes:,} (--max-bytes): send a smaller image"


def check_media_type(media: str, what: str) -> None:
    if media in NEUTRAL_TYPES or media.startswith(IMAGE_TYPES):
        return
    raise Problem(415, f"{what} is {media}, not an image type; send image/png, image/jpeg, ... or "
                       "application/octet-stream, or a multipart form with the image in 'file'")
