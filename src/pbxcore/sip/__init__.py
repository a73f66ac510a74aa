"""SIP stack (RFC 3261): messages, transports, transactions, dialogs, the stack with its
per-method handlers (:class:`SipStack`), the registrar.

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

# transports, transactions, digest auth and the registrar (issue 4, parts 2-5)
from pbxcore.sip.auth import (
    AuthOutcome,
    DigestAlgorithm,
    DigestAuthenticator,
    DigestCredentials,
    NonceStore,
    compute_ha1,
    compute_response,
    parse_authorization,
)
from pbxcore.sip.credentials import (
    CredentialStore,
    FileCredentialStore,
    RealmPolicy,
    UserCredentials,
)
from pbxcore.sip.dialog import Dialog, DialogError, DialogId, DialogState
from pbxcore.sip.guard import BruteForceGuard, GuardAction, GuardPolicy, GuardVerdict
from pbxcore.sip.location import Binding, LocationService, MemoryLocationService
from pbxcore.sip.registrar import Registrar, RegistrarError, RegistrarPolicy
from pbxcore.sip.server import SipServer
from pbxcore.sip.stack import (
    ClientCredentials,
    ClientInvite,
    Handler,
    IncomingRequest,
    SipStack,
    StaticCredentials,
    Target,
)
from pbxcore.sip.transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    TimerSettings,
    TransactionState,
    TransactionTimeoutError,
)
from pbxcore.sip.transport import (
    ListenAddress,
    RateLimit,
    Source,
    TransportLayer,
    TransportLimits,
)

__all__ += [
    "AuthOutcome",
    "Binding",
    "BruteForceGuard",
    "ClientCredentials",
    "ClientInvite",
    "CredentialStore",
    "Dialog",
    "DialogError",
    "DialogId",
    "DialogState",
    "DigestAlgorithm",
    "DigestAuthenticator",
    "DigestCredentials",
    "FileCredentialStore",
    "GuardAction",
    "GuardPolicy",
    "GuardVerdict",
    "Handler",
    "IncomingRequest",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "ListenAddress",
    "LocationService",
    "MemoryLocationService",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "NonceStore",
    "RateLimit",
    "RealmPolicy",
    "Registrar",
    "RegistrarError",
    "RegistrarPolicy",
    "SipServer",
    "SipStack",
    "Source",
    "StaticCredentials",
    "Target",
    "TimerSettings",
    "TransactionState",
    "TransactionTimeoutError",
    "TransportLayer",
    "TransportLimits",
    "UserCredentials",
    "compute_ha1",
    "compute_response",
    "parse_authorization",
]
