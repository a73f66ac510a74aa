"""Errors of the tenancy layer; the API turns each into its JSON error and status."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConflictError",
    "ForbiddenError",
    "InvalidError",
    "LimitReachedError",
    "NotFoundError",
    "TenancyError",
]


class TenancyError(Exception):
    """Base: ``status`` and ``code`` are what the API answers."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFoundError(TenancyError):
    """Absent, or outside the caller's scope (the two are not told apart)."""

    status = 404
    code = "not_found"

    def __init__(self, entity: str, ident: str | None = None) -> None:
        what = entity.replace("_", " ")
        super().__init__(f"{what} not found", {"entity": entity} | ({"id": ident} if ident else {}))


class ConflictError(TenancyError):
    """A duplicate (a unique name, number or domain), or an object still in use."""

    status = 409
    code = "conflict"

    def __init__(
        self, message: str, details: dict[str, Any] | None = None, *, code: str = ""
    ) -> None:
        super().__init__(message, details)
        if code:
            self.code = code


class LimitReachedError(ConflictError):
    """A limit the operator set for the tenant would be passed (``max_extensions`` ...)."""

    code = "limit_reached"

    def __init__(self, limit: str, value: int) -> None:
        super().__init__(
            f"the tenant's {limit} ({value}) is reached", {"limit": limit, "value": value}
        )


class InvalidError(TenancyError):
    """A value that breaks a rule the schema cannot see (a range overlapping the pool ...)."""

    status = 422
    code = "validation_error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", {"field": field})
        self.field = field


class ForbiddenError(TenancyError):
    """Inside the caller's scope but not allowed (a suspended tenant's admin writing ...)."""

    status = 403
    code = "forbidden"

    def __init__(self, message: str, *, code: str = "forbidden") -> None:
        super().__init__(message)
        self.code = code
