"""The draw-a-digit web app: draw a digit (or upload a picture of one) and see what the model reads.

    mnist-app                                   # http://127.0.0.1:8000/, model data/model/model.keras
    mnist-app --port 8080 --model other.keras   # --host 0.0.0.0 to let other machines in (no login!)
    python -m digitlab.app ...                  # the same

Why FastAPI and a page of our own, not Gradio: the page is one HTML string with its CSS and
JavaScript inline, so the app works fully offline, with no CDN, web fonts or analytics; it starts
in a few seconds (most of it importing TensorFlow and loading the model) and adds only FastAPI,
uvicorn and python-multipart to the dependencies.

Routes:

  GET  /          the page: a 280x280 canvas (white ink on black), Clear and Predict buttons
                  (it also predicts when a stroke ends), a file input and drop zone, and the
                  result: the digit, its confidence, ten probability bars and the 28x28 image
                  the model saw, scaled up
  POST /predict   an image, as the multipart form field `image` (what the page sends: the canvas
                  as a PNG) or as the raw request body with an `image/*` content type (or
                  `application/octet-stream`). 200 answers the fields of DigitReader.predict
                  (path: the upload's file name, or null) plus `image`: the 28x28 image the model
                  saw, 28 lists of 28 ints from 0 (black) to 255 (white ink). Bad input gets a 4xx
                  and {"error": "..."}: 413 for a body over MAX_UPLOAD_BYTES (refused from its
                  Content-Length, else counted while it streams in, never read whole first), 415 for
                  another content type, 400 for a malformed form, 422 for an empty upload, a file
                  that is not an image, an image too small or over MAX_PIXELS (a decompression
                  bomb), or one with no digit ("no digit found": never a guess)
  GET  /health    {"status": "ok"} once the model is loaded

Nothing in an upload is executed: it is only decoded by Pillow, and the model file is loaded in
Keras safe mode (digitlab.reader). Predictions run in a worker thread, one at a time (a lock:
a Keras model is not documented as safe to call from several threads), so the server keeps
answering /health and the page while one runs.
"""

import argparse
import base64
import hashlib
import io
import ipaddress
import logging
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from digitlab.cli import add_views_option, native_stderr_hidden
from digitlab.errors import PipelineError
from digitlab.reader import DEFAULT_MODEL, DEFAULT_VIEWS, DigitReader

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a photo from a phone is 2-6 MB; the canvas PNG is a few KB
# Pillow only warns from 89 megapixels and refuses from 179 (its decompression-bomb limits); a
# 40-megapixel image is larger than any ordinary photo and decodes to at most 160 MB (RGBA).
MAX_PIXELS = 40_000_000

log = logging.getLogger("digitlab.app")

# --- The page -----------------------------------------------------------------------------------
# One HTML string with inline CSS and JavaScript and no URL to any other host. The script only
# ever sets textContent (never innerHTML), so an upload's file name cannot inject markup.

STYLE = """
  :root { font-family: system-ui, sans-serif; color: #1a1a1a; background: #f4f4f4; }
  main { max-width: 760px; margin: 0 auto; padding: 1rem; }
  h1 { margin: 0 0 .25rem; font-size: 1.6rem; }
  .panels { display: flex; flex-wrap: wrap; gap: 1.5rem; margin-top: 1rem; }
  #pad { width: 280px; height: 280px; background: #000; touch-action: none; cursor: crosshair;
         border-radius: 6px; display: block; }
  .buttons { display: flex; gap: .5rem; margin: .5rem 0; }
  button { font-size: 1rem; padding: .4rem 1rem; }
  #drop { display: block; width: 248px; padding: .75rem; border: 2px dashed #888; border-radius: 6px;
          background: #fff; }
  #drop.over { border-color: #0a58ca; background: #e7f0ff; }
  #result { min-width: 260px; flex: 1; }
  #result h2 { margin: 0; font-size: 1.1rem; }
  #digit { display: block; font-size: 5rem; font-weight: bold; line-height: 1.1; }
  #error { color: #b00020; font-weight: bold; }
  #bars { list-style: none; padding: 0; margin: .5rem 0; }
  #bars li { display: flex; align-items: center; gap: .5rem; height: 1.3rem; }
  .track { flex: 1; height: .9rem; background: #ddd; border-radius: 3px; overflow: hidden; }
  .bar { display: block; height: 100%; width: 0; background: #0a58ca; }
  .value { width: 3.5rem; text-align: right; font-variant-numeric: tabular-nums; }
  #seen { width: 112px; height: 112px; image-rendering: pixelated; background: #000; }
  figure { margin: .5rem 0 0; }
"""

SCRIPT = """
"use strict";
const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
const result = document.getElementById("result");
const digit = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const errorLine = document.getElementById("error");
const seen = document.getElementById("seen");
const drop = document.getElementById("drop");
const fileInput = document.getElementById("file");

function clearPad() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, pad.width, pad.height);
}

// Canvas coordinates of a pointer event, whatever size CSS gives the canvas.
function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

let last = null;  // the previous point of the stroke being drawn, null between strokes
pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  pen.fillStyle = "#fff";
  pen.beginPath();
  pen.arc(last[0], last[1], pen.lineWidth / 2, 0, 2 * Math.PI);
  pen.fill();
});
pad.addEventListener("pointermove", (event) => {
  if (last === null) return;
  const next = point(event);
  pen.beginPath();
  pen.moveTo(last[0], last[1]);
  pen.lineTo(next[0], next[1]);
  pen.stroke();
  last = next;
});
function endStroke() {
  if (last === null) return;
  last = null;
  predictPad();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function predictPad() {
  pad.toBlob((blob) => {
    const form = new FormData();
    form.append("image", blob, "drawing.png");
    send(form);
  }, "image/png");
}

function predictFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("image", file, file.name);
  send(form);
}

// Only the answer to the latest request is shown: a stroke may end while an earlier one is on its way.
let latest = 0;
async function send(form) {
  const request = ++latest;
  result.dataset.state = "busy";
  let answer;
  try {
    const response = await fetch("predict", { method: "POST", body: form });
    const body = await response.json();
    answer = response.ok ? body : { error: body.error || ("the server answered " + response.status) };
  } catch (failure) {
    answer = { error: "no answer from the server (" + failure.message + ")" };
  }
  if (request !== latest) return;
  if (answer.error) showError(answer.error); else showReading(answer);
}

function setBars(probabilities) {
  for (let d = 0; d < 10; d++) {
    const p = probabilities ? probabilities[d] : 0;
    const bar = document.getElementById("bar-" + d);
    bar.style.width = (100 * p).toFixed(1) + "%";
    bar.dataset.probability = String(p);
    document.getElementById("value-" + d).textContent = probabilities ? (100 * p).toFixed(1) + "%" : "";
  }
}

function showReading(reading) {
  digit.textContent = String(reading.digit);
  confidence.textContent = (100 * reading.confidence).toFixed(1) + "% sure; next most likely: " + reading.runner_up;
  errorLine.textContent = "";
  errorLine.hidden = true;
  setBars(reading.probabilities);
  const picture = seen.getContext("2d").createImageData(28, 28);
  reading.image.forEach((row, y) => row.forEach((grey, x) => {
    picture.data.set([grey, grey, grey, 255], 4 * (28 * y + x));
  }));
  seen.getContext("2d").putImageData(picture, 0, 0);
  result.dataset.digit = String(reading.digit);
  result.dataset.state = "done";
}

function showError(message) {
  digit.textContent = "\\u2013";
  confidence.textContent = "";
  errorLine.textContent = message;
  errorLine.hidden = false;
  setBars(null);
  seen.getContext("2d").clearRect(0, 0, 28, 28);
  delete result.dataset.digit;
  result.dataset.state = "error";
}

document.getElementById("clear").addEventListener("click", () => {
  clearPad();
  fileInput.value = "";
  latest++;  // an answer still on its way is for the old drawing
  digit.textContent = "?";
  confidence.textContent = "Draw a digit to see what the model reads.";
  errorLine.hidden = true;
  setBars(null);
  seen.getContext("2d").clearRect(0, 0, 28, 28);
  delete result.dataset.digit;
  result.dataset.state = "idle";
});
document.getElementById("predict").addEventListener("click", predictPad);
fileInput.addEventListener("change", () => predictFile(fileInput.files[0]));

// A file dropped anywhere is read, instead of the browser leaving the page to show it.
window.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
window.addEventListener("dragleave", () => drop.classList.remove("over"));
window.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  predictFile(event.dataTransfer.files[0]);
});

pen.lineWidth = 20;  // about MNIST's stroke width once the digit is scaled into its 20x20 box
pen.lineCap = "round";
pen.lineJoin = "round";
pen.strokeStyle = "#fff";
clearPad();
"""

BARS = "\n".join(
    f'      <li><span aria-hidden="true">{d}</span><span class="track"><span class="bar" id="bar-{d}" '
    f'data-digit="{d}" data-probability="0"></span></span><span class="value" id="value-{d}" '
    f'aria-label="probability of {d}"></span></li>'
    for d in range(10)
)

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Draw a digit</title>
<style>{STYLE}</style>
</head>
<body>
<main>
  <h1>Draw a digit</h1>
  <p>Draw one digit, 0 to 9, in the black square with the mouse or a finger: it is read when you lift
  the pen. Or upload a picture of a digit.</p>
  <div class="panels">
    <section aria-label="Drawing">
      <canvas id="pad" width="280" height="280" role="img"
              aria-label="Drawing area: draw one digit here with the mouse or a finger"></canvas>
      <div class="buttons">
        <button id="clear" type="button">Clear</button>
        <button id="predict" type="button">Predict</button>
      </div>
      <label id="drop" for="file">Upload an image of a digit, or drop one here:<br>
        <input id="file" type="file" accept="image/*">
      </label>
    </section>
    <section id="result" data-state="idle" aria-live="polite" aria-labelledby="result-heading">
      <h2 id="result-heading">The model reads</h2>
      <output id="digit" aria-label="predicted digit">?</output>
      <p id="confidence">Draw a digit to see what the model reads.</p>
      <p id="error" role="alert" hidden></p>
      <ol id="bars" aria-label="probability of each digit">
{BARS}
      </ol>
      <figure>
        <canvas id="seen" width="28" height="28" role="img" aria-label="the 28 by 28 image the model saw"></canvas>
        <figcaption>What the model saw (28&times;28)</figcaption>
      </figure>
    </section>
  </div>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The browser runs only our own inline script and style, and talks only to this server.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
    "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

# --- The app ------------------------------------------------------------------------------------


def create_app(model_path: str | Path = DEFAULT_MODEL, views: int = DEFAULT_VIEWS) -> FastAPI:
    """The app, with the model loaded (PipelineError if it cannot be) and warmed up; `views` as mnist-predict's."""
    reader = DigitReader(model_path, views=views)
    # The first call of a Keras model traces it (a second or so): do it now, not on the first visitor.
    warm_up = np.zeros((28, 28), dtype=np.uint8)
    warm_up[4:24, 13:16] = 255
    reader.read([warm_up])
    model_lock = threading.Lock()

    app = FastAPI(title="Draw a digit", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)  # no icon: browsers ask for one, and a 404 would log an error

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        data, filename = await read_upload(request)
        status, body = await run_in_threadpool(read_digit, reader, model_lock, data, filename)
        return JSONResponse(body, status_code=status)

    return app


async def read_upload(request: Request) -> tuple[bytes, str | None]:
    """The uploaded file's bytes and name (None for a raw body), at most MAX_UPLOAD_BYTES of them."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise HTTPException(400, f"the Content-Length header {declared!r} is not a number")
    if declared is not None and int(declared) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, _too_large(int(declared)))
    # A body sent in chunks has no Content-Length: count its bytes as they arrive instead.
    capped = Request(request.scope, receive=_capped_receive(request.receive))
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
    raise HTTPException(415, f"send the image as the multipart form field 'image', or as the request body with an "
                             f"image/* content type, not {media_type or 'no content type'}")


def _capped_receive(receive):
    received = 0

    async def capped_receive():
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > MAX_UPLOAD_BYTES:
            raise HTTPException(413, _too_large(received, so_far=True))
        return message

    return capped_receive


def _too_large(size: int, so_far: bool = False) -> str:
    return (f"the upload is {'over ' if so_far else ''}{size:,} bytes; "
            f"the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")


def read_digit(reader: DigitReader, model_lock: threading.Lock, data: bytes, filename: str | None) -> tuple[int, dict]:
    """(HTTP status, JSON body) for one uploaded image. Runs in a worker thread: it is CPU-bound."""
    too_many_pixels = _check_pixels(data)
    if too_many_pixels:
        return 422, {"error": too_many_pixels}
    try:
        with model_lock:
            reading = reader.read([data], paths=[filename])[0]
    except Exception:  # a Pillow decoder's unforeseen error on a malformed file: answer, log, keep serving
        log.exception("reading an uploaded image failed")
        return 500, {"error": "the server failed to read this image; its log says why"}
    if reading.error:
        return 422, {"error": reading.error}
    return 200, reading.to_dict() | {"image": reading.image.tolist()}


def _check_pixels(data: bytes) -> str | None:
    """Why the image is too large to decode, from its header alone; None if it is not (or not an image)."""
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None  # the reader says what is wrong with it
    if width * height > MAX_PIXELS:
        return (f"the image is {width}x{height} pixels, too large to read safely "
                f"(the limit is {MAX_PIXELS // 1_000_000} megapixels)")
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
    # whose socket says TCP, and without that every answer waits for the client's delayed ACK (44 ms, measured).
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
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"Keras model file (default {DEFAULT_MODEL})")
    add_views_option(parser)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        sock = listen_socket(args.host, args.port)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    try:
        with native_stderr_hidden():  # TensorFlow's start-up lines would bury a one-line error
            app = create_app(args.model, args.views)
    except PipelineError as error:
        sock.close()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"Draw a digit at http://{shown_host}:{port}/ (Ctrl+C to stop)", flush=True)
    if not _is_loopback(host):
        print(f"note: listening on {host}, so other machines can reach the app; it has no login", flush=True)
    # At most 32 connections and requests at once (more get 503): with uploads of up to 10 MB, memory stays bounded.
    uvicorn.Server(uvicorn.Config(app, log_level="info", limit_concurrency=32)).run(sockets=[sock])


if __name__ == "__main__":
    main()
