"""SIP stack (RFC 3261): messages, transports, transactions, registrar.

The message layer is public here: :func:`parse_message`, :class:`Request`,
:class:`Response`, :class:`Headers`, :class:`Uri`, :class:`Address`, :class:`Via`,
:func:`make_response`, :func:`validate_request` and :class:`SipParseError`.
"""

from pbxcore.sip.errors import SipParseError
from pbxcore.sip.headers import (
    BRANCH_MAGIC,
    COMPACT_FORMS,
    Address,
    Headers,
    Via,
    header_key,
    new_branch,
    new_tag,
    split_list,
)
from pbxcore.sip.message import (
    DEFAULT_LIMITS,
    REASON_PHRASES,
    Message,
    ParseLimits,
    Request,
    Response,
    make_response,
    message_length,
    parse_message,
    validate_request,
    validate_response,
)
from pbxcore.sip.uri import Uri, escape_user, unescape

__all__ = [
    "BRANCH_MAGIC",
    "COMPACT_FORMS",
    "DEFAULT_LIMITS",
    "REASON_PHRASES",
    "Address",
    "Headers",
    "Message",
    "ParseLimits",
    "Request",
    "Response",
    "SipParseError",
    "Uri",
    "Via",
    "escape_user",
    "header_key",
    "make_response",
    "message_length",
    "new_branch",
    "new_tag",
    "parse_message",
    "split_list",
    "unescape",
    "validate_request",
    "validate_response",
]
