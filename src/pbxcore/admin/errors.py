"""The API's error shape: ``{"error": {"code", "message", "details"}}`` with a 4xx status.

Every failure leaves through here: tenancy errors with their own status, validation errors
as 422 naming the field, an unreachable or locked database as 503, an unexpected exception
as a logged 500 with no internals in the body.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from pbxcore.tenancy.db import DatabaseUnavailableError
from pbxcore.tenancy.errors import TenancyError

__all__ = ["ApiError", "error_response", "install_error_handlers"]

log = logging.getLogger("pbxcore.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the API layer itself raises (authentication, rate limits ...)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or {}
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return Response(
        json.dumps(body, separators=(",", ":"), default=str).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


def validation_details(errors: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    fields = []
    for err in errors:
        field = _field(err.get("loc", ()))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        fields.append({"field": field, "message": message})
    first = fields[0] if fields else {"field": "body", "message": "invalid"}
    return f"{first['field']}: {first['message']}", {"field": first["field"], "errors": fields}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TenancyError)
    async def _tenancy(_request: Request, exc: TenancyError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(ApiError)
    async def _api(_request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        message, details = validation_details(list(exc.errors()))
        return error_response(422, "validation_error", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, message, headers=headers)

    @app.exception_handler(DatabaseUnavailableError)
    async def _unavailable(_request: Request, exc: DatabaseUnavailableError) -> Response:
        log.warning("database unavailable: %s", exc)
        return error_response(503, "database_unavailable", str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "an internal error; it has been logged")
