"""The FastAPI application of the admin API (``/api/v1``), on the server's asyncio loop.

``create_app(AdminContext(db, secrets, ...))`` builds it; ``pbxcore serve`` runs it with
uvicorn next to SIP.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pbxcore.admin.deps import AdminContext, ApiSettings
from pbxcore.admin.errors import error_response, install_error_handlers
from pbxcore.admin.routes import ROOT_ROUTERS, ROUTERS
from pbxcore.admin.schemas import ERROR_RESPONSES

__all__ = ["API", "AdminContext", "ApiSettings", "create_app"]

API = "/api/v1"


UPLOAD_PATHS = ("/prompts",)  # the collections that take files (multipart)


class BodyLimit:
    """413 for a request whose Content-Length is not a number or more than ``max_bytes``.

    A plain ASGI middleware: it reads one header and passes the request on untouched (no
    task group, no wrapped request or response, as Starlette's BaseHTTPMiddleware has).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int = 0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max(max_bytes, max_upload_bytes)  # file uploads: prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limit = self.max_bytes
            if scope["method"] == "POST" and scope["path"].endswith(UPLOAD_PATHS):
                limit = self.max_upload_bytes
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if not value.isdigit() or int(value) > limit:
                        response = error_response(413, "too_large", "the request body is too large")
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


def create_app(ctx: AdminContext) -> FastAPI:
    """The admin API application for one server."""
    app = FastAPI(
        title="pbxcore admin API",
        version="1",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.pbx = ctx
    install_error_handlers(app)

    app.add_middleware(
        BodyLimit,
        max_bytes=ctx.settings.max_body_bytes,
        max_upload_bytes=ctx.settings.max_upload_bytes,
    )

    for router in ROUTERS:
        app.include_router(router, prefix=API, responses=ERROR_RESPONSES)
    for router in ROOT_ROUTERS:
        app.include_router(router)

    # a page listing the operations of the OpenAPI document; no CDN, nothing fetched
    docs_page = (resources.files("pbxcore.admin") / "static" / "docs.html").read_text("utf-8")

    @app.get(f"{API}/docs", include_in_schema=False)
    async def _docs() -> HTMLResponse:
        return HTMLResponse(docs_page)

    return app
