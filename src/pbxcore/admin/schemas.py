"""Request and response schemas shared by the API's routers.

Field types wrap the rules of :mod:`pbxcore.tenancy.rules`, so a bad value is a 422 that
names the field with the rule's message. Request bodies forbid unknown fields (a typo is an
error, not a silently ignored setting). Responses are the tenancy views
(:mod:`pbxcore.tenancy.views`); the ``*Out`` models here describe them for the OpenAPI
document and are not used to serialize.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)

from pbxcore.tenancy import rules

__all__ = [
    "E164",
    "ERROR_RESPONSES",
    "Cidr",
    "Colour",
    "Destination",
    "DestinationOut",
    "DigestAlgorithms",
    "Domain",
    "ErrorOut",
    "ExtensionNumber",
    "Features",
    "In",
    "ListOf",
    "Name",
    "Out",
    "Prefix",
    "SipPassword",
    "Slug",
    "Text",
    "TimeZone",
    "Username",
]

T = TypeVar("T")

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(rules.check_text),
]
Slug = Annotated[str, AfterValidator(rules.check_slug)]
Domain = Annotated[str, AfterValidator(rules.check_domain)]
Colour = Annotated[str, AfterValidator(rules.check_colour)]
E164 = Annotated[str, AfterValidator(rules.check_e164)]
Prefix = Annotated[str, AfterValidator(rules.check_prefix)]
ExtensionNumber = Annotated[str, AfterValidator(rules.check_extension_number)]
SipPassword = Annotated[str, AfterValidator(rules.check_sip_password)]
Username = Annotated[str, AfterValidator(rules.check_username)]
Cidr = Annotated[str, AfterValidator(rules.check_cidr)]
TimeZone = Annotated[str, AfterValidator(rules.check_time_zone)]
Features = Annotated[list[str], AfterValidator(rules.check_features)]
DigestAlgorithms = Annotated[list[str], AfterValidator(rules.check_digest_algorithms)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
Email = EmailStr
Text = Annotated[str, AfterValidator(rules.check_text)]
Id = Annotated[
    str, StringConstraints(min_length=1, max_length=40), AfterValidator(rules.check_text)
]


class In(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    def changes(self) -> dict[str, Any]:
        """The fields the request set (a PATCH changes only these)."""
        return self.model_dump(exclude_unset=True)


class Out(BaseModel):
    """A response object: every object has an id and its times."""

    id: str
    created_at: str
    updated_at: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(BaseModel):
    """Every 4xx and 503: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorBody


_ERROR_STATUSES = {
    400: "Bad request",
    401: "Not logged in, or the token expired",
    403: "Not allowed here (within the caller's own scope)",
    404: "Not found, or outside the caller's scope",
    409: "Conflict: a duplicate, in use, or a limit reached",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Validation error, naming the field",
    429: "Too many failed logins (Retry-After)",
    503: "The database is unavailable or locked (Retry-After)",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text} for status, text in _ERROR_STATUSES.items()
}


class ListOf(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(ge=0)


DestinationType = Literal[
    "extension", "ivr", "ring_group", "voicemail", "schedule", "external", "hangup"
]


class Destination(In):
    type: DestinationType
    id: Id | None = None
    number: str | None = Field(default=None, max_length=16)

    @model_validator(mode="after")
    def _shape(self) -> Destination:
        rules.check_destination(self.model_dump())
        return self

    def stored(self) -> dict[str, Any]:
        return rules.check_destination(self.model_dump())


class DestinationOut(BaseModel):
    type: str
    id: str | None = None
    number: str | None = None
