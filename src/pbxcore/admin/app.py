"""The FastAPI application of the admin API (``/api/v1``), on the server's asyncio loop.

``create_app(AdminContext(db, secrets, ...))`` builds it; ``pbxcore serve`` runs it with
uvicorn next to SIP.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from pbxcore.admin.deps import AdminContext, ApiSettings
from pbxcore.admin.errors import error_response, install_error_handlers
from pbxcore.admin.routes import ROUTERS
from pbxcore.admin.schemas import ERROR_RESPONSES

__all__ = ["API", "AdminContext", "ApiSettings", "create_app"]

API = "/api/v1"


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

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Callable[[Request], Any]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (
            not length.isdigit() or int(length) > ctx.settings.max_body_bytes
        ):
            return error_response(413, "too_large", "the request body is too large")
        response: Response = await call_next(request)
        return response

    for router in ROUTERS:
        app.include_router(router, prefix=API, responses=ERROR_RESPONSES)

    # a page listing the operations of the OpenAPI document; no CDN, nothing fetched
    docs_page = (resources.files("pbxcore.admin") / "static" / "docs.html").read_text("utf-8")

    @app.get(f"{API}/docs", include_in_schema=False)
    async def _docs() -> HTMLResponse:
        return HTMLResponse(docs_page)

    return app
