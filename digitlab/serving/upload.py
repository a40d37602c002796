"""An upload to POST /predict: its bytes taken from the request (the multipart form field `image`, or
the raw body of an image/* request), then its image prepared for the model, within the limits of limits.py.
Nothing in an upload is executed: Pillow only decodes it, and the model is an ONNX graph, which holds no code."""

from fastapi import Request
from starlette.exceptions import HTTPException

from digitlab.serving import limits
from digitlab.serving.reader import DigitReader, Reading


async def read_upload(request: Request, receive: limits.BodyReceiver) -> tuple[bytes, str | None]:
    """The uploaded file's bytes and name (None for a raw body), at most MAX_UPLOAD_BYTES of them."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise HTTPException(400, f"the Content-Length header {declared!r} is not a number")
    if declared is not None and int(declared) > limits.MAX_UPLOAD_BYTES:
        raise HTTPException(413, limits.too_large(int(declared)))
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


def prepare_upload(reader: DigitReader, data: bytes, filename: str | None) -> Reading:
    """One uploaded image in the MNIST look, or why it has none. Runs in a worker thread: it is CPU-bound."""
    too_many_pixels = limits.check_pixels(data)
    if too_many_pixels:
        return Reading(filename, error=too_many_pixels)
    return reader.prepare([data], paths=[filename])[0]
