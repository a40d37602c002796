"""The draw-a-digit page: the three files of static/, their ETags, and the routes that serve them.

They are read once when the app is made (a missing one fails then, not on a visitor) and answered from
memory by routes of their own: a fixed set of URLs, each with its content type spelled out here rather
than guessed from the platform's MIME table, as StaticFiles would. Any other path is a 404.
"""

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import Response

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


def add_page_routes(app: FastAPI, files: dict[str, PageFile]) -> None:
    """A GET route for each of `files` (read_page_files), and an empty answer to the favicon request."""
    for url, file in files.items():
        app.add_api_route(url, _page_file_route(file), methods=["GET"], include_in_schema=False)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)  # no icon: browsers ask for one, and a 404 would log an error


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
