"""mnist-app: the draw-a-digit web app, a page and its JSON endpoint, served by uvicorn.

    mnist-app                                   # http://127.0.0.1:8000/, model data/model/model.onnx
    mnist-app --port 8080 --model other.onnx    # --host 0.0.0.0 to let other machines in (no login!)
    mnist-app --accept-all                      # never "not a digit": always the most likely digit
    python -m digitlab.serving.app ...          # the same

Its routes, their answers and its limits are in docs/using-the-model.md, "The app, and bad input". Here
the app is put together: the page (page.py); an upload read within the limits (upload.py, limits.py),
its image decoded in a worker thread, as many at once as there are cores, then predicted with those of
other requests in one model call (batcher.py).
"""

import argparse
import asyncio
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path

from digitlab.shared.errors import UserError
from digitlab.shared.mnist import IMAGE_SIZE
from digitlab.shared.tta import DEFAULT_VIEWS

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from digitlab.inference.rejection import NOT_A_DIGIT
from digitlab.serving import limits
from digitlab.serving.batcher import BATCH_WINDOW_S, Batcher
from digitlab.serving.options import add_accept_all_option, add_views_option, native_stderr_hidden, threshold_note
from digitlab.serving.page import add_page_routes, read_page_files
from digitlab.serving.reader import DEFAULT_MODEL, DigitReader
from digitlab.serving.upload import prepare_upload, read_upload

log = logging.getLogger("digitlab.serving.app")


def create_app(
    model_path: str | Path = DEFAULT_MODEL,
    views: int = DEFAULT_VIEWS,
    batch_window_s: float = BATCH_WINDOW_S,
    accept_all: bool = False,
) -> FastAPI:
    """The app, with the model loaded (UserError if it cannot be) and warmed up; `views` and
    `accept_all` as mnist-predict's."""
    page_files = read_page_files()
    reader = DigitReader(model_path, views=views, accept_all=accept_all)
    # The first call of an onnxruntime session allocates its buffers: do it now, not on the first visitor.
    warm_up = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    warm_up[4:24, 13:16] = 255
    reader.read([warm_up])
    batcher = Batcher(reader, batch_window_s)
    load = limits.Load()
    # Decoding is CPU-bound: more images at once than cores only adds memory (up to limits.MAX_PIXELS each).
    decoding = asyncio.Semaphore(os.cpu_count() or 1)

    app = FastAPI(title="Draw a digit", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.load, app.state.reader = batcher, load, reader  # for tests and the benchmark

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    add_page_routes(app, page_files)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        if load.requests >= limits.MAX_REQUESTS:
            return limits.busy(f"{limits.MAX_REQUESTS} images are being read already")
        load.requests += 1
        body = limits.BodyReceiver(request.receive, load)
        try:
            data, filename = await read_upload(request, body)
            async with decoding:
                reading = await run_in_threadpool(prepare_upload, reader, data, filename)
            del data  # the upload's bytes are not needed while the image waits for the model
            if reading.image is not None:
                await batcher.classify(reading)
        except limits.Busy as error:
            return limits.busy(str(error))
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
        raise UserError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
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
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    try:
        with native_stderr_hidden():  # onnxruntime's start-up warnings would bury a one-line error
            app = create_app(args.model, args.views, accept_all=args.accept_all)
    except UserError as error:
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
    uvicorn.Server(uvicorn.Config(app, log_level="info", limit_concurrency=limits.MAX_CONNECTIONS)).run(sockets=[sock])


if __name__ == "__main__":
    main()
