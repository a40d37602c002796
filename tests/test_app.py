"""The web app's routes through FastAPI's TestClient: the page, /predict on real MNIST digits and on
every kind of bad upload (each followed by a good request, to show the server keeps serving), /health,
and the `mnist-app` command's errors. The real server in a real browser is in test_browser.py."""

import contextlib
import io
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from html.parser import HTMLParser
from importlib import resources

from digitlab.shared.errors import UserError

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from digitlab.raw.splits import load_split
from digitlab.serving import app as web
from digitlab.serving import batcher, limits, page
from tests.conftest import PROJECT_ROOT, mnist_mirror

FIELDS = {"path", "digit", "confidence", "runner_up", "probabilities", "error", "image"}
STATIC = resources.files("digitlab.serving") / "static"  # the page's files, in the package


@pytest.fixture(scope="module")
def client(small_model):
    with TestClient(web.create_app(small_model)) as client:
        yield client


@pytest.fixture(scope="module")
def digits():
    """One real MNIST test digit of each class, as a PNG the way a scan of paper would give it: dark
    ink on a light background, ten times MNIST's size. (label, png bytes) pairs."""
    images, labels = load_split(mnist_mirror(), "test")
    pngs = []
    for label in range(10):
        image = images[np.flatnonzero(labels == label)[0]]
        picture = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BILINEAR)
        pngs.append((label, png_bytes(picture)))
    return pngs


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def post_file(client, data: bytes, filename="digit.png", content_type="image/png"):
    return client.post("/predict", files={"image": (filename, data, content_type)})


def assert_still_serving(client, digits):
    """A good request after a bad one gets a reading (whether it is right is test_predict_reads_real_digits's)."""
    response = post_file(client, digits[7][1])
    assert response.status_code == 200, response.text
    assert response.json()["digit"] in range(10)


# --- The page and /health ---------------------------------------------------------------------


class PageParser(HTMLParser):
    """What a page holds that a Content-Security-Policy cares about: each tag with its attributes, and
    the text inside each <script> and <style> element."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.inline, self._open = [], {"script": [], "style": []}, None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in self.inline:
            self._open = tag
            self.inline[tag].append("")

    def handle_endtag(self, tag):
        self._open = None

    def handle_data(self, data):
        if self._open:
            self.inline[self._open][-1] += data


def parsed(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    return parser


PAGE_URLS = {"static/app.css", "static/app.js"}  # what the page links to, relative to /


def test_page_has_the_canvas_buttons_and_result_area_and_no_outside_url(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for element in (
        'id="pad"',
        'id="clear"',
        'id="predict"',
        'type="file"',
        'id="digit"',
        'id="confidence"',
        'id="seen"',
        'id="error"',
    ):
        assert element in page, element
    assert all(f'id="bar-{d}"' in page for d in range(10))
    # Offline: the page loads nothing but its own two files from this server, and they load nothing at all.
    urls = [
        value
        for _, attrs in parsed(page).tags
        for name, value in attrs.items()
        if name in ("src", "href", "action", "srcset", "poster", "data")
    ]
    assert sorted(urls) == sorted(PAGE_URLS)
    for text in [page] + [client.get("/" + url).text for url in PAGE_URLS]:
        assert re.search(r"https?:", text) is None
        assert "url(" not in text and "@import" not in text and "import(" not in text


def test_page_has_no_inline_script_style_or_event_handler(client):
    """So that its policy needs no 'unsafe-inline', hash or nonce: script and style come from files only."""
    page = parsed(client.get("/").text)
    assert page.inline["style"] == [], "a <style> element"
    assert [body for body in page.inline["script"] if body.strip()] == [], "an inline <script>"
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert [attrs.get("src") for attrs in scripts] == ["static/app.js"]
    for tag, attrs in page.tags:
        assert "style" not in attrs, f"a style attribute on <{tag}>"
        handlers = [name for name in attrs if name.startswith("on")]
        assert not handlers, f"an inline event handler on <{tag}>: {handlers}"
        assert not str(attrs.get("href", "")).lower().startswith("javascript:"), f"a javascript: URL on <{tag}>"


def test_page_security_policy_allows_only_this_servers_files_and_nothing_inline(client):
    policy = client.get("/").headers["content-security-policy"]
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "connect-src"):
        assert directives[directive] == ["'self'"], directive
    for directive in ("base-uri", "form-action", "frame-ancestors"):
        assert directives[directive] == ["'none'"], directive
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert re.search(r"'(sha256|sha384|sha512|nonce)-", policy) is None, "a hash or nonce: nothing is inline"
    assert "*" not in policy and "http" not in policy


@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/", "text/html; charset=utf-8"),
        ("/static/app.css", "text/css; charset=utf-8"),
        ("/static/app.js", "text/javascript; charset=utf-8"),
    ],
)
def test_each_page_file_is_served_with_its_content_type_policy_and_caching(client, path, content_type):
    name = {"/": "index.html"}.get(path, path.rsplit("/", 1)[-1])
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == (STATIC / name).read_bytes()
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == page.CONTENT_SECURITY_POLICY
    # Kept, but asked for again on each load: a copy from an older version of the package is never used.
    assert response.headers["cache-control"] == "no-cache"
    etag = response.headers["etag"]
    again = client.get(path, headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get(path, headers={"if-none-match": '"another"'}).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/index.html",
        "/static/",
        "/static/index.html",
        "/static/nothing.js",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/app.js",
        "/docs",
        "/nothing",
    ],
)
def test_other_paths_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404 and response.json() == {"error": "Not Found"}


def test_page_script_is_valid_javascript(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs node (Node.js) on the PATH to check app.js's syntax: apt-get install nodejs")
    done = subprocess.run([node, "--check", str(STATIC / "app.js")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


# --- Predictions ----------------------------------------------------------------------------------


def test_predict_reads_real_digits_with_all_fields_and_the_image_the_model_saw(client, digits):
    right = 0
    for label, png in digits:
        response = post_file(client, png, filename=f"digit-{label}.png")
        assert response.status_code == 200, response.text
        reading = response.json()
        assert set(reading) == FIELDS
        assert reading["path"] == f"digit-{label}.png" and reading["error"] is None
        assert len(reading["probabilities"]) == 10 and abs(sum(reading["probabilities"]) - 1) < 1e-3
        assert reading["confidence"] == max(reading["probabilities"])
        assert reading["runner_up"] != reading["digit"]
        seen = np.array(reading["image"])
        assert seen.shape == (28, 28) and seen.min() >= 0 and seen.max() <= 255
        assert seen.max() > 200 and np.median(seen) == 0  # MNIST's look: white ink on black, whatever came in
        right += reading["digit"] == label
    assert right >= 8, f"only {right} of 10 digits read right"


def test_predict_takes_a_raw_image_body_and_reads_it_as_the_same_file_uploaded(client, digits):
    png = digits[3][1]
    response = client.post("/predict", content=png, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json() == post_file(client, png).json() | {"path": None}


def test_predict_turns_a_photo_upright_by_its_exif_orientation(client, digits):
    upright = Image.open(io.BytesIO(digits[7][1]))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored a quarter turn anticlockwise, as a phone stores a portrait photo
    buffer = io.BytesIO()
    upright.rotate(90, expand=True).save(buffer, "PNG", exif=exif)

    sideways, reference = post_file(client, buffer.getvalue()).json(), post_file(client, digits[7][1]).json()
    assert sideways["image"] == reference["image"] and sideways["digit"] == reference["digit"]


def test_predict_reads_a_transparent_canvas(client):
    """A canvas never filled: transparent, with the strokes the only opaque pixels (of any colour)."""
    canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).line([(140, 30), (140, 250)], fill=(0, 0, 0, 255), width=20)
    response = post_file(client, png_bytes(canvas))
    assert response.status_code == 200, response.text
    assert response.json()["digit"] == 1


# --- Bad uploads: a clear 4xx JSON error each, and the server goes on serving ----------------------


def png_with_size(width: int, height: int) -> bytes:
    """A valid greyscale PNG of width x height black pixels, made without ever holding them in memory:
    a zlib stream of zeros compresses about 1000 to 1, so 100 megapixels take about 100 KB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # the filter byte, then the pixels
    rows_at_once = max(1, 4_000_000 // len(row))
    data = (
        b"".join(
            compressor.compress(row * min(rows_at_once, height - start)) for start in range(0, height, rows_at_once)
        )
        + compressor.flush()
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def a_png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (its data would be far too short)."""
    png = bytearray(png_bytes(Image.new("L", (16, 16))))
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def truncated_png(digits) -> bytes:
    png = digits[5][1]
    return png[: len(png) // 2]


BAD_UPLOADS = {
    # name: (filename, bytes or a function of the digits fixture, content type, what the error says)
    "text": ("notes.txt", b"Dear model, this is a seven.\n" * 20, "text/plain", "not an image"),
    "pdf": (
        "digit.pdf",
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "application/pdf",
        "not an image",
    ),
    "truncated png": ("digit.png", truncated_png, "image/png", "not an image"),
    "empty": ("digit.png", b"", "image/png", "empty"),
    "1x1 image": ("dot.png", lambda digits: png_bytes(Image.new("L", (1, 1), 255)), "image/png", "too small"),
    "blank black": (
        "blank.png",
        lambda digits: png_bytes(Image.new("L", (280, 280), 0)),
        "image/png",
        "no digit found",
    ),
    "blank white": (
        "blank.png",
        lambda digits: png_bytes(Image.new("RGB", (280, 280), "white")),
        "image/png",
        "no digit found",
    ),
    # 100 megapixels in 100 KB: Pillow only warns at this size and would decode it; the app refuses.
    "decompression bomb": ("bomb.png", lambda digits: png_with_size(10_000, 10_000), "image/png", "too large"),
    # 900 megapixels claimed: beyond even Pillow's own limit.
    "huge header": ("huge.png", lambda digits: a_png_claiming(30_000, 30_000), "image/png", "too large"),
}


@pytest.mark.parametrize("name", BAD_UPLOADS)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, reading the bomb's header
def test_bad_upload_gets_422_with_a_reason_and_the_server_keeps_serving(client, digits, name):
    filename, data, content_type, reason = BAD_UPLOADS[name]
    data = data(digits) if callable(data) else data
    response = post_file(client, data, filename, content_type)
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error"} and reason in body["error"], body  # an error, never a guessed digit
    assert_still_serving(client, digits)


def test_upload_over_the_cap_gets_413_from_its_content_length(client, digits):
    response = post_file(client, bytes(limits.MAX_UPLOAD_BYTES + 1))
    assert response.status_code == 413
    declared = int(response.request.headers["content-length"])
    assert response.json()["error"] == f"the upload is {declared:,} bytes; the limit is 10 MB"  # refused unread
    assert_still_serving(client, digits)


def test_upload_over_the_cap_gets_413_when_streamed_without_a_length(client, digits):
    def chunks():  # a generator body is sent chunked: no Content-Length to refuse it by
        for _ in range(11):
            yield bytes(1024 * 1024)

    response = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "limit is 10 MB" in response.json()["error"]
    assert_still_serving(client, digits)


@pytest.mark.parametrize(
    "request_kwargs, status, reason",
    [
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "multipart form field 'image'"),
        ({"content": b"hello"}, 415, "no content type"),
        ({"files": {"picture": ("digit.png", b"x", "image/png")}}, 422, "no file field named 'image'"),
        ({"data": {"image": "a seven"}, "files": {"other": ("x.txt", b"x", "text/plain")}}, 422, "holds text"),
        ({"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=xx"}}, 400, "malformed"),
    ],
)
def test_badly_sent_request_gets_a_4xx_with_a_reason(client, digits, request_kwargs, status, reason):
    response = client.post("/predict", **request_kwargs)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
    assert_still_serving(client, digits)


def test_an_unforeseen_failure_reading_an_image_is_a_json_500_and_the_server_goes_on(client, digits, monkeypatch):
    def broken_prepare(source):
        raise struct.error("a decoder bug")

    monkeypatch.setattr("digitlab.serving.reader.prepare_or_why", broken_prepare)
    response = post_file(client, digits[0][1])
    assert response.status_code == 500 and "log says why" in response.json()["error"]
    monkeypatch.undo()
    assert_still_serving(client, digits)


# --- Load: many requests at once, and slow clients ---------------------------------------------------


class CountingModel:
    """The reader's model, counting its calls and the images of each."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def __call__(self, batch):
        self.batches.append(len(batch))
        return self.model(batch)


def post_together(app, uploads: list[bytes]) -> list:
    """Send all the uploads at once, each its own request, through the app; their responses in order."""
    import asyncio

    import httpx

    async def send_all():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app", timeout=60) as client:
            return await asyncio.gather(
                *(client.post("/predict", files={"image": ("d.png", data, "image/png")}) for data in uploads)
            )

    return asyncio.run(send_all())


def test_requests_that_arrive_together_are_predicted_in_one_model_call(small_model, digits):
    app = web.create_app(small_model, views=1, batch_window_s=1.0)  # a long window: all 10 are there in time
    model = app.state.batcher.reader.model = CountingModel(app.state.batcher.reader.model)

    responses = post_together(app, [png for _, png in digits])

    assert [response.status_code for response in responses] == [200] * 10
    assert [response.json()["digit"] for response in responses] == [label for label, _ in digits]
    assert app.state.batcher.model_calls == 1 and model.batches == [10]  # one call, all ten images in it


def test_a_lone_request_waits_no_longer_than_the_window(small_model, digits):
    app = web.create_app(small_model, views=1)
    model = app.state.batcher.reader.model = CountingModel(app.state.batcher.reader.model)
    responses = post_together(app, [digits[7][1]])
    assert responses[0].json()["digit"] == 7 and model.batches == [1]
    assert batcher.BATCH_WINDOW_S <= 0.01


def test_beyond_the_request_cap_an_upload_gets_503_with_retry_after_and_the_rest_are_served(
    small_model, digits, monkeypatch
):
    monkeypatch.setattr(limits, "MAX_REQUESTS", 4)
    app = web.create_app(small_model, views=1, batch_window_s=1.0)  # the first four wait for the window

    responses = post_together(app, [png for _, png in digits[:6]])

    statuses = [response.status_code for response in responses]
    assert sorted(statuses) == [200] * 4 + [503] * 2, statuses
    busy = next(response for response in responses if response.status_code == 503)
    assert busy.headers["retry-after"] == str(limits.RETRY_AFTER_S)
    assert "busy" in busy.json()["error"] and "4 images" in busy.json()["error"]
    assert app.state.load.requests == 0 and app.state.load.body_bytes == 0  # all given back
    assert post_together(app, [digits[2][1]])[0].json()["digit"] == 2  # and served again once they are done


def test_beyond_the_memory_cap_an_upload_gets_503(small_model, digits, monkeypatch):
    monkeypatch.setattr(limits, "MAX_BODY_BYTES", len(digits[0][1]) + 1000)  # room for about one upload
    app = web.create_app(small_model, views=1, batch_window_s=1.0)
    statuses = sorted(response.status_code for response in post_together(app, [digits[0][1]] * 3))
    assert statuses[0] == 200 and 503 in statuses, statuses
    assert app.state.load.body_bytes == 0


@contextlib.contextmanager
def real_server(app):
    """The app served by uvicorn on 127.0.0.1 (a thread of this process, so that tests can change its
    limits); its base URL."""
    sock = web.listen_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=limits.MAX_CONNECTIONS))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def slow_upload(port: int, sent: bytes = b"\x89PN") -> socket.socket:
    """A client that sends the headers of a 100,000-byte upload and its first bytes, then waits."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n" + sent
    )
    return sock


def answer_of(sock: socket.socket) -> bytes:
    """All the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_slow_clients_get_408_and_are_dropped_while_others_are_served(small_model, digits, monkeypatch):
    monkeypatch.setattr(limits, "BODY_IDLE_TIMEOUT_S", 1.5)
    with real_server(web.create_app(small_model, views=1)) as (url, port):
        slow = [slow_upload(port) for _ in range(40)]
        started = time.monotonic()
        response = httpx.post(f"{url}/predict", files={"image": ("d.png", digits[3][1], "image/png")}, timeout=30)
        answered_in = time.monotonic() - started
        assert response.status_code == 200 and response.json()["digit"] == 3
        assert answered_in < 1.0  # not after the slow ones' timeout
        answers = [answer_of(sock) for sock in slow]  # each ends: the server closes the connection
        for sock in slow:
            sock.close()
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[0]
    assert b"sent no byte for 1.5 s (3 bytes received)" in answers[0]


def test_a_body_trickled_byte_by_byte_gets_408_at_the_deadline(small_model, digits, monkeypatch):
    monkeypatch.setattr(limits, "BODY_IDLE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(limits, "BODY_TIMEOUT_S", 2.0)
    with real_server(web.create_app(small_model, views=1)) as (url, port):
        sock = slow_upload(port)
        started = time.monotonic()
        with contextlib.suppress(OSError):  # the server closes while we still send: the loop ends there
            while time.monotonic() - started < 6:
                sock.sendall(b"x")  # one byte every half second: never idle for the idle timeout
                time.sleep(0.5)
        stopped_after = time.monotonic() - started
        answer = answer_of(sock)
        sock.close()
        assert post_file(httpx.Client(base_url=url), digits[4][1]).json()["digit"] == 4
    assert answer.startswith(b"HTTP/1.1 408 ") and b"was not all sent within 2.0 s" in answer, answer
    assert stopped_after < 4.5  # dropped at the 2 s deadline, not once the trickle ended


# --- The command -----------------------------------------------------------------------------------


def test_create_app_with_a_missing_model_says_so(tmp_path):
    with pytest.raises(UserError, match="not found"):
        web.create_app(tmp_path / "missing.onnx")


def test_mnist_app_with_a_missing_model_prints_one_line_on_stderr_and_exits_1(tmp_path):
    """The real command: nothing else on stderr buries the error."""
    missing = tmp_path / "missing.onnx"
    command = [sys.executable, "-m", "digitlab.serving.app", "--port", "0", "--model", str(missing)]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: model file {missing} not found; run `dvc repro train` to export it"]


@pytest.mark.parametrize(
    "name, reason",
    [
        ("model.onnx", "not a readable ONNX model"),
        ("model.keras", "is a Keras model; digits are read with the ONNX model"),
    ],
)
def test_mnist_app_with_a_bad_model_prints_one_error_line_and_exits_1(name, reason, tmp_path, capsys):
    not_a_model = tmp_path / name
    not_a_model.write_text("not a model")
    with pytest.raises(SystemExit) as exit_:
        web.main(["--port", "0", "--model", str(not_a_model)])
    assert exit_.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and reason in error and "\n" not in error


def test_mnist_app_on_a_port_in_use_prints_one_error_line_and_exits_1(tmp_path, capsys):
    busy = web.listen_socket("127.0.0.1", 0)
    busy.listen()
    try:
        with pytest.raises(SystemExit) as exit_:
            web.main(["--port", str(busy.getsockname()[1]), "--model", str(tmp_path / "never-loaded.onnx")])
    finally:
        busy.close()
    assert exit_.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: cannot listen on 127.0.0.1:") and "\n" not in error


def test_the_listening_socket_says_tcp_so_that_answers_do_not_wait_for_delayed_acks():
    """asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP (test_browser.py times it)."""
    sock = web.listen_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


@pytest.mark.parametrize("port", ["http", "-1", "65536"])
def test_mnist_app_refuses_a_port_that_is_not_one(port, capsys):
    with pytest.raises(SystemExit) as exit_:
        web.main(["--port", port])
    assert exit_.value.code == 2
    assert "is not a port number" in capsys.readouterr().err


def test_views_reach_the_reader_the_app_predicts_with(small_model, digits):
    """mnist-app --views 5: the endpoint answers the mean over the image and its four shifts, as mnist-predict does."""
    from digitlab.serving.reader import DigitReader

    with TestClient(web.create_app(small_model, views=5)) as client:
        answer = post_file(client, digits[3][1]).json()
    with DigitReader(small_model, views=5) as reader:
        expected = reader.read([digits[3][1]])[0].probabilities
    with DigitReader(small_model, views=1) as reader:
        one_view = reader.read([digits[3][1]])[0].probabilities
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-6)
    assert not np.allclose(answer["probabilities"], one_view, atol=1e-6)
    # By default the app and DigitReader predict as the evaluate stage does (evaluate.tta_views: 5).
    with TestClient(web.create_app(small_model)) as client:
        np.testing.assert_allclose(post_file(client, digits[3][1]).json()["probabilities"], expected, atol=1e-6)
    with DigitReader(small_model) as reader:
        np.testing.assert_allclose(reader.read([digits[3][1]])[0].probabilities, expected, atol=1e-6)


@pytest.mark.parametrize(
    "argv, views, accept_all", [([], 5, False), (["--views", "1"], 1, False), (["--accept-all"], 5, True)]
)
def test_mnist_app_predicts_with_the_evaluate_stages_views_and_says_not_a_digit_unless_told(
    argv, views, accept_all, monkeypatch, capsys
):
    given = []

    def create_app(model_path, views, accept_all):  # records what mnist-app asks for, then stops it before serving
        given.append((views, accept_all))
        raise UserError("stop here")

    monkeypatch.setattr(web, "create_app", create_app)
    with pytest.raises(SystemExit):
        web.main(["--port", "0", *argv])
    assert given == [(views, accept_all)]


def test_the_app_shares_options_with_mnist_predict_without_importing_it():
    """mnist-app's --views and --accept-all are mnist-predict's (digitlab/serving/options.py), and the app
    does not reach into the command for them."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys, digitlab.serving.app; print('digitlab.serving.cli' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr
    from digitlab.serving import cli, options

    for name in ("add_views_option", "add_accept_all_option", "native_stderr_hidden", "threshold_note"):
        assert getattr(web, name) is getattr(cli, name) is getattr(options, name)
