"""The draw-a-digit web app: draw a digit (or upload a picture of one) and see what the model reads.

    mnist-app                                   # http://127.0.0.1:8000/, model data/model/model.onnx
    mnist-app --port 8080 --model other.onnx    # --host 0.0.0.0 to let other machines in (no login!)
    mnist-app --accept-all                      # never "not a digit": always the most likely digit
    python -m digitlab.serving.app ...          # the same

Why FastAPI and a page of our own, not Gradio: the page is three small files of our own in static/
(index.html, app.css, app.js), so the app works fully offline, with no CDN, web fonts or analytics;
it runs the ONNX model with onnxruntime, never importing TensorFlow, so it answers about a second
after it starts (benchmarks/README.md, 'The app under load'), and it adds only FastAPI, uvicorn and
python-multipart to the serving install.

Routes:

  GET  /          the page: a 280x280 canvas (white ink on black), Clear and Predict buttons
                  (it also predicts when a stroke ends), a file input and drop zone, and the
                  result: the digit, its confidence, ten probability bars and the 28x28 image
                  the model saw, scaled up (static/index.html)
  GET  /static/app.css, /static/app.js   its style and script. All three are sent with
                  CONTENT_SECURITY_POLICY (no inline script or style), Cache-Control: no-cache and
                  an ETag; any other path is a 404
  POST /predict   an image, as the multipart form field `image` (what the page sends: the canvas
                  as a PNG) or as the raw request body with an `image/*` content type (or
                  `application/octet-stream`). 200 answers the fields of DigitReader.predict
                  (path: the upload's file name, or null) plus `image`: the 28x28 image the model
                  saw, 28 lists of 28 ints from 0 (black) to 255 (white ink). An image the model
                  judges is no digit (a letter, a scribble: below the confidence threshold model.onnx
                  carries) is also a 200, with `digit: null` and `error: "not a digit"`, its
                  confidence and probabilities given (the page shows it so). Bad input gets a 4xx
                  and {"error": "..."}: 413 for a body over MAX_UPLOAD_BYTES (refused from its
                  Content-Length, else counted while it streams in, never read whole first), 415 for
                  another content type, 400 for a malformed form, 422 for an empty upload, a file
                  that is not an image, an image too small or over MAX_PIXELS (a decompression
                  bomb), or one with no digit ("no digit found": never a guess)
  GET  /health    {"status": "ok"} once the model is loaded

Load (the limits are the named constants of the section "Load" below):

  - Images are decoded in worker threads, as many at once as there are cores, and then predicted
    together: the Batcher calls the model once for all the images that are ready (a window of
    BATCH_WINDOW_S after the first, and those that arrive while the model runs), so 100 uploads at
    once are 100 answers within a second, not 100 model calls in a row.
  - Beyond MAX_REQUESTS uploads in progress, or MAX_BODY_BYTES of their bodies in memory, an upload
    gets 503 with Retry-After; beyond MAX_CONNECTIONS open connections, uvicorn answers 503.
  - A body that stops arriving for BODY_IDLE_TIMEOUT_S, or is not all there BODY_TIMEOUT_S after its
    headers, gets 408 and its connection is closed, so slow clients cannot hold the app for others.

Nothing in an upload is executed: it is only decoded by Pillow, and the model is an ONNX graph,
which holds no code (digitlab.serving.reader).
"""

import argparse
import asyncio
import hashlib
import io
import ipaddress
import logging
import os
import socket
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from digitlab.shared.errors import PipelineError
from digitlab.shared.mnist import IMAGE_SIZE

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from digitlab.inference.rejection import NOT_A_DIGIT
from digitlab.inference.views import DEFAULT_VIEWS
from digitlab.serving.options import add_accept_all_option, add_views_option, native_stderr_hidden, threshold_note
from digitlab.serving.reader import DEFAULT_MODEL, DigitReader, Reading

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # room for a full-size photo from a phone; the canvas's PNG is far smaller
# Pillow's own decompression-bomb check first only warns, and refuses only far larger images; a 40-megapixel
# image is larger than any ordinary photo and decodes to at most 160 MB (4 bytes a pixel, as RGBA).
MAX_PIXELS = 40_000_000

log = logging.getLogger("digitlab.serving.app")

# --- The page -----------------------------------------------------------------------------------
# Three files of static/, read once when the app is made (a missing one fails then, not on a visitor)
# and answered from memory by routes of their own: a fixed set of URLs, each with its content type
# spelled out here rather than guessed from the platform's MIME table, as StaticFiles would.

PAGE_FILES = {  # URL path: (file in static/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
}

# The browser runs only the script and style this server sends as files (so nothing inline, and no
# hash or nonce to keep in step with them), and talks only to this server. img-src 'self' is for the
# favicon request; the page itself loads no image (its two canvases are drawn by the script).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class PageFile:
    body: bytes
    media_type: str
    etag: str


def read_page_files() -> dict[str, PageFile]:
    """PAGE_FILES read from the package's static/ folder: URL path -> file."""
    static = resources.files("digitlab.serving") / "static"
    files = {}
    for url, (name, media_type) in PAGE_FILES.items():
        body = (static / name).read_bytes()
        files[url] = PageFile(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


def _page_file_route(file: PageFile):
    # no-cache: the browser may keep a copy but asks again each time (a 304 while the ETag matches),
    # so a page upgraded with the package never runs last version's script against this server.
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
        "ETag": file.etag,
    }

    async def serve(request: Request) -> Response:
        if _matches(request.headers.get("if-none-match"), file.etag):
            return Response(status_code=304, headers=headers)
        return Response(file.body, media_type=file.media_type, headers=headers)

    return serve


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return etag in tags or "*" in tags


# --- Load: many requests at once, and slow clients ---------------------------------------------------
# Measured on 2 cores in benchmarks/README.md, "The app under load".

BATCH_WINDOW_S = 0.002  # after an image is ready, wait this long for others to predict with it in one call
MAX_BATCH = 128  # images in one model call (each is predicted with its test-time views)
MAX_REQUESTS = 256  # uploads being received, decoded or predicted at once; more get 503 and Retry-After
MAX_BODY_BYTES = 256 * 1024 * 1024  # their bodies held in memory, all together; beyond, 503 and Retry-After
RETRY_AFTER_S = 1  # what a 503 tells the client to wait: the queue above drains in well under a second
BODY_IDLE_TIMEOUT_S = 10  # an upload that sends no byte for this long gets 408 and its connection closed...
BODY_TIMEOUT_S = 60  # ...as does one not all received this long after its headers (a trickle, byte by byte)
MAX_CONNECTIONS = 1000  # open connections (uvicorn's limit_concurrency; more get 503): idle ones cost little


class Busy(Exception):
    """The app holds as much as it may; the message says what. Answered 503 with Retry-After."""


def _busy(why: str) -> JSONResponse:
    return JSONResponse(
        {"error": f"the server is busy ({why}); try again in {RETRY_AFTER_S} s"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S), "Connection": "close"},
    )  # its body unread


@dataclass
class Load:
    """What the app holds now: uploads in progress, and the bytes of their bodies received so far.
    Only the event loop's thread changes it, so it needs no lock."""

    requests: int = 0
    body_bytes: int = 0


class BodyReceiver:
    """The request's `receive`, with the limits on one body: MAX_UPLOAD_BYTES (413), the bytes all
    uploads hold (503), and the time it may take (408: a slow client cannot hold a request open)."""

    def __init__(self, receive, load: Load):
        self.receive, self.load = receive, load
        self.received = 0
        self.deadline = asyncio.get_running_loop().time() + BODY_TIMEOUT_S

    async def __call__(self) -> dict:
        left = self.deadline - asyncio.get_running_loop().time()
        try:
            message = await asyncio.wait_for(self.receive(), min(BODY_IDLE_TIMEOUT_S, max(left, 0)))
        except TimeoutError:
            waited = (
                f"sent no byte for {BODY_IDLE_TIMEOUT_S} s"
                if left > BODY_IDLE_TIMEOUT_S
                else f"was not all sent within {BODY_TIMEOUT_S} s"
            )
            raise HTTPException(
                408,
                f"the upload {waited} ({self.received:,} bytes received); send it again",
                headers={"Connection": "close"},
            ) from None
        size = len(message.get("body", b""))
        self.received += size
        self.load.body_bytes += size
        if self.received > MAX_UPLOAD_BYTES:
            raise HTTPException(413, _too_large(self.received, so_far=True))
        if self.load.body_bytes > MAX_BODY_BYTES:
            raise Busy(f"uploads hold {MAX_BODY_BYTES // (1024 * 1024)} MB already")
        return message


class Batcher:
    """Predicts the images of requests that arrive together in one model call: each waits at most
    `window_s` for others (none when the model is free and none come), and while the model runs, the
    images that arrive meanwhile queue for its next call."""

    def __init__(self, reader: DigitReader, window_s: float = BATCH_WINDOW_S):
        self.reader, self.window_s = reader, window_s
        self.queue: asyncio.Queue | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.model_calls = 0  # for tests and the benchmark: how many batches the model was called on

    async def classify(self, reading: Reading) -> Reading:
        """`reading` with the model's answer, predicted together with whatever else is waiting."""
        if self.loop is not asyncio.get_running_loop():  # the first request, or the app served anew (a test)
            self.loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
            self.loop.create_task(self._predict_forever(self.queue))
        done = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((reading, done))
        await done
        return reading

    async def _predict_forever(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.window_s
            while len(batch) < MAX_BATCH:
                if queue.empty():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), left))
                    except TimeoutError:
                        break
                else:
                    batch.append(queue.get_nowait())
            self.model_calls += 1
            try:
                await run_in_threadpool(self.reader.classify, [reading for reading, _ in batch])
            except Exception as error:  # every request of the batch answers 500, and the next batch is tried
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            for _, done in batch:
                if not done.done():  # its client may have gone
                    done.set_result(None)


# --- The app ------------------------------------------------------------------------------------


def create_app(
    model_path: str | Path = DEFAULT_MODEL,
    views: int = DEFAULT_VIEWS,
    batch_window_s: float = BATCH_WINDOW_S,
    accept_all: bool = False,
) -> FastAPI:
    """The app, with the model loaded (PipelineError if it cannot be) and warmed up; `views` and
    `accept_all` as mnist-predict's."""
    page_files = read_page_files()
    reader = DigitReader(model_path, views=views, accept_all=accept_all)
    # The first call of an onnxruntime session allocates its buffers: do it now, not on the first visitor.
    warm_up = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    warm_up[4:24, 13:16] = 255
    reader.read([warm_up])
    batcher = Batcher(reader, batch_window_s)
    load = Load()
    # Decoding is CPU-bound: more images at once than cores only adds memory (up to MAX_PIXELS each).
    decoding = asyncio.Semaphore(os.cpu_count() or 1)

    app = FastAPI(title="Draw a digit", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.load, app.state.reader = batcher, load, reader  # for tests and the benchmark

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    for url, file in page_files.items():
        app.add_api_route(url, _page_file_route(file), methods=["GET"], include_in_schema=False)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)  # no icon: browsers ask for one, and a 404 would log an error

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        if load.requests >= MAX_REQUESTS:
            return _busy(f"{MAX_REQUESTS} images are being read already")
        load.requests += 1
        body = BodyReceiver(request.receive, load)
        try:
            data, filename = await read_upload(request, body)
            async with decoding:
                reading = await run_in_threadpool(prepare_upload, reader, data, filename)
            del data  # the upload's bytes are not needed while the image waits for the model
            if reading.image is not None:
                await batcher.classify(reading)
        except Busy as error:
            return _busy(str(error))
        except HTTPException:
            raise
        except Exception:  # a decoder's or the model's unforeseen error: answer, log, keep serving
            log.exception("reading an uploaded image failed")
            return JSONResponse({"error": "the server failed to read this image; its log says why"}, status_code=500)
        finally:
            load.requests -= 1
            load.body_bytes -= body.received
        if reading.error and reading.error != NOT_A_DIGIT:
            return JSONResponse({"error": reading.error}, status_code=422)
        return JSONResponse(reading.to_dict() | {"image": reading.image.tolist()})

    return app


async def read_upload(request: Request, receive: BodyReceiver) -> tuple[bytes, str | None]:
    """The uploaded file's bytes and name (None for a raw body), at most MAX_UPLOAD_BYTES of them."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise HTTPException(400, f"the Content-Length header {declared!r} is not a number")
    if declared is not None and int(declared) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, _too_large(int(declared)))
    # A body sent in chunks has no Content-Length: its bytes are counted as they arrive (BodyReceiver).
    capped = Request(request.scope, receive=receive)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        try:
            form = await capped.form(max_files=1, max_fields=8)
        except HTTPException as error:  # starlette's 400 for a form it cannot parse: say what was wrong
            if error.status_code != 400:
                raise
            raise HTTPException(400, f"the multipart form is malformed: {error.detail}") from None
        try:
            upload = form.get("image")
            if upload is None:
                raise HTTPException(422, "the form has no file field named 'image'")
            if isinstance(upload, str):
                raise HTTPException(422, "the form field 'image' holds text, not a file")
            return await upload.read(), upload.filename or None
        finally:
            await form.close()  # its temporary files
    if media_type.startswith("image/") or media_type == "application/octet-stream":
        return await capped.body(), None
    raise HTTPException(
        415,
        f"send the image as the multipart form field 'image', or as the request body with an "
        f"image/* content type, not {media_type or 'no content type'}",
    )


def _too_large(size: int, so_far: bool = False) -> str:
    return (
        f"the upload is {'over ' if so_far else ''}{size:,} bytes; the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MB"
    )


def prepare_upload(reader: DigitReader, data: bytes, filename: str | None) -> Reading:
    """One uploaded image in the MNIST look, or why it has none. Runs in a worker thread: it is CPU-bound."""
    too_many_pixels = _check_pixels(data)
    if too_many_pixels:
        return Reading(filename, error=too_many_pixels)
    return reader.prepare([data], paths=[filename])[0]


def _check_pixels(data: bytes) -> str | None:
    """Why the image is too large to decode, from its header alone; None if it is not (or not an image)."""
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None  # the reader says what is wrong with it
    if width * height > MAX_PIXELS:
        return (
            f"the image is {width}x{height} pixels, too large to read safely "
            f"(the limit is {MAX_PIXELS // 1_000_000} megapixels)"
        )
    return None


# --- The command ------------------------------------------------------------------------------


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535; 0 picks a free one)")
    return int(text)


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, so that a port in use fails at once, before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio switches Nagle's algorithm off (TCP_NODELAY) only on connections
    # whose socket says TCP, and without that every answer waits for the client's delayed ACK
    # (tests/test_browser.py times the real server's answers).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise PipelineError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str] | None = None) -> None:
    """`mnist-app`: serve the page and the endpoint until Ctrl+C."""
    parser = argparse.ArgumentParser(prog="mnist-app", description="Serve the draw-a-digit web app.")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help=f"the trained model as ONNX (default {DEFAULT_MODEL})"
    )
    add_views_option(parser)
    add_accept_all_option(parser)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        sock = listen_socket(args.host, args.port)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    try:
        with native_stderr_hidden():  # onnxruntime's start-up warnings would bury a one-line error
            app = create_app(args.model, args.views, accept_all=args.accept_all)
    except PipelineError as error:
        sock.close()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"Draw a digit at http://{shown_host}:{port}/ (Ctrl+C to stop)", flush=True)
    if no_threshold := threshold_note(app.state.reader, args.model, args.accept_all):
        print(no_threshold, flush=True)
    if not _is_loopback(host):
        print(f"note: listening on {host}, so other machines can reach the app; it has no login", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="info", limit_concurrency=MAX_CONNECTIONS)).run(sockets=[sock])


if __name__ == "__main__":
    main()
