"""The web playground at `/` (docs/playground.md): static files shipped in the package (frontend/playground/),
plain ES modules with no build step, served under a strict Content-Security-Policy.

Open to everyone, as /docs is: the page holds no data and no secret, and every API call it makes needs a key as
any other client's does. Not mounted at all when MODELGATE_PLAYGROUND=false (`/` is then a 404 envelope).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, Request, Response

FOLDER = Path(__file__).resolve().parent.parent / "playground"
PAGE = "index.html"
# Content types by suffix; a file of any other kind in the folder is not served.
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
ASSETS = "/playground/"  # where index.html loads its modules, style sheet and icon from

# Scripts and styles from this origin only: no inline script, no eval, no inline style; the page talks to this
# origin only (the key never leaves it); images are the page's own or data: URLs (generated PNGs, the upload's
# preview). Trusted Types with no policy: any HTML sink (innerHTML, ...) throws, so model output is text only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
       "require-trusted-types-for 'script'; trusted-types 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",  # revalidated (ETag) on every load: an upgraded server serves its own page
}

def _route(path: Path):
    """A GET handler for one file, read once; the request's path never reaches the file system."""
    body = path.read_bytes()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    media_type = TYPES[path.suffix]

    async def serve(request: Request) -> Response:
        headers = {**HEADERS, "ETag": etag}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    return serve


def build_router() -> APIRouter:
    """`GET /` (the page) and `GET /playground/<file>` for every file of a served type in the folder, read now:
    an app with the playground off reads nothing."""
    router = APIRouter(include_in_schema=False)
    for file in sorted(FOLDER.iterdir()):
        if file.suffix in TYPES:
            router.add_api_route("/" if file.name == PAGE else ASSETS + file.name, _route(file), methods=["GET"],
                                 name=f"playground:{file.name}")
    return router
