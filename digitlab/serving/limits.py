"""What the app takes on: bytes, pixels and time for one upload, and how much of it all uploads may hold.

Over a limit, an upload gets 413 (too many bytes), 422 (too many pixels), 408 (too slow, and its
connection closed) or 503 with Retry-After (the app holds as much as it may); beyond MAX_CONNECTIONS open
connections, uvicorn answers 503. The app's behaviour at these limits is measured in benchmarks/README.md,
"The app under load".
"""

import asyncio
import io
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # room for a full-size photo from a phone; the canvas's PNG is far smaller
# Pillow's own decompression-bomb check first only warns, and refuses only far larger images; a 40-megapixel
# image is larger than any ordinary photo and decodes to at most 160 MB (4 bytes a pixel, as RGBA).
MAX_PIXELS = 40_000_000

MAX_REQUESTS = 256  # uploads being received, decoded or predicted at once; more get 503 and Retry-After
MAX_BODY_BYTES = 256 * 1024 * 1024  # their bodies held in memory, all together; beyond, 503 and Retry-After
RETRY_AFTER_S = 1  # what a 503 tells the client to wait, for the uploads above to drain
BODY_IDLE_TIMEOUT_S = 10  # an upload that sends no byte for this long gets 408 and its connection closed...
BODY_TIMEOUT_S = 60  # ...as does one not all received this long after its headers (a trickle, byte by byte)
MAX_CONNECTIONS = 1000  # open connections (uvicorn's limit_concurrency; more get 503): idle ones cost little


class Busy(Exception):
    """The app holds as much as it may; the message says what. Answered 503 with Retry-After."""


def busy(why: str) -> JSONResponse:
    """The 503 that says why the app is busy and when to try again."""
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
            raise HTTPException(413, too_large(self.received, so_far=True))
        if self.load.body_bytes > MAX_BODY_BYTES:
            raise Busy(f"uploads hold {MAX_BODY_BYTES // (1024 * 1024)} MB already")
        return message


def too_large(size: int, so_far: bool = False) -> str:
    """The 413's message for an upload of `size` bytes (`so_far`: counted while it streams in)."""
    return (
        f"the upload is {'over ' if so_far else ''}{size:,} bytes; the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MB"
    )


def check_pixels(data: bytes) -> str | None:
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
