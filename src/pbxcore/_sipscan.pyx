# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The REGISTER fast path's scanner in C: one pass over the datagram, no regular expressions.

:func:`nth_crlf` is the general parser's header-count guard (same result as
:func:`pbxcore._sipscan_ref.nth_crlf`).

:func:`scan_register` accepts exactly the messages :func:`pbxcore._sipscan_ref.scan_register`
accepts and returns the same fields (the tests run both on the same inputs); see that
module for the grammar. Anything outside it returns None, and the general parser decides.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memchr

cdef enum:
    MAX_SIZE = 4096
    H_VIA = 0
    H_FROM = 1
    H_TO = 2
    H_CALL_ID = 3
    H_CSEQ = 4
    H_CONTACT = 5
    H_MAX_FORWARDS = 6
    H_EXPIRES = 7
    H_CONTENT_LENGTH = 8
    H_AUTHORIZATION = 9
    H_USER_AGENT = 10
    H_ALLOW = 11
    H_SUPPORTED = 12
    H_COUNT = 13
    MANDATORY = 0x3F  # Via, From, To, Call-ID, CSeq, Contact

cdef tuple NAMES = (
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Expires",
    "Content-Length", "Authorization", "User-Agent", "Allow", "Supported",
)


cdef inline bint is_alnum(unsigned char c) noexcept nogil:
    return (b"0"[0] <= c <= b"9"[0]) or (b"a"[0] <= c <= b"z"[0]) or (b"A"[0] <= c <= b"Z"[0])


cdef inline bint is_digit(unsigned char c) noexcept nogil:
    return b"0"[0] <= c <= b"9"[0]


cdef inline bint is_host_char(unsigned char c) noexcept nogil:
    return is_alnum(c) or c == b"."[0] or c == b"-"[0]


cdef inline bint is_user_char(unsigned char c) noexcept nogil:
    return is_alnum(c) or c == b"."[0] or c == b"_"[0] or c == b"~"[0] or c == b"-"[0]


cdef inline bint is_token_char(unsigned char c) noexcept nogil:
    return is_alnum(c) or c in b".!%*_+`'~-"


cdef inline bint is_name_char(unsigned char c) noexcept nogil:
    return (b"a"[0] <= c <= b"z"[0]) or (b"A"[0] <= c <= b"Z"[0]) or c == b"-"[0]


cdef inline Py_ssize_t literal(
    const unsigned char* p, Py_ssize_t i, Py_ssize_t n, const char* text, Py_ssize_t size
) noexcept nogil:
    """The end of ``text`` matched at i, or -1."""
    cdef Py_ssize_t k
    if n - i < size:
        return -1
    for k in range(size):
        if p[i + k] != <unsigned char>text[k]:
            return -1
    return i + size


cdef inline Py_ssize_t host(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    # [A-Za-z0-9](?:[A-Za-z0-9.-]{0,62}[A-Za-z0-9])? followed by a non-host character
    cdef Py_ssize_t j = i
    while j < n and is_host_char(p[j]):
        j += 1
    if j == i or j - i > 64 or not is_alnum(p[i]) or not is_alnum(p[j - 1]):
        return -1
    return j


cdef inline Py_ssize_t user(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    # [A-Za-z0-9._~-]{1,64}
    cdef Py_ssize_t j = i
    while j < n and is_user_char(p[j]):
        j += 1
    if j == i or j - i > 64:
        return -1
    return j


cdef inline Py_ssize_t token(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j = i
    while j < n and is_token_char(p[j]):
        j += 1
    return -1 if j == i else j


cdef inline Py_ssize_t digits(
    const unsigned char* p, Py_ssize_t i, Py_ssize_t n, Py_ssize_t most, long* value
) noexcept nogil:
    # [0-9]{1,most}, a maximal run
    cdef Py_ssize_t j = i
    value[0] = 0
    while j < n and is_digit(p[j]):
        value[0] = value[0] * 10 + (p[j] - b"0"[0])
        j += 1
        if j - i > most:
            return -1
    return -1 if j == i else j


cdef inline Py_ssize_t port(
    const unsigned char* p, Py_ssize_t i, Py_ssize_t n, long* value
) noexcept nogil:
    # [1-9][0-9]{0,4}
    if i >= n or p[i] == b"0"[0]:
        return -1
    return digits(p, i, n, 5, value)


cdef inline Py_ssize_t sip_user_host(
    const unsigned char* p, Py_ssize_t i, Py_ssize_t n, Py_ssize_t* at
) noexcept nogil:
    # <sip:USER@HOST (after "<"): the end of HOST, and where "@" is
    i = literal(p, i, n, b"sip:", 4)
    if i < 0:
        return -1
    i = user(p, i, n)
    if i < 0 or i >= n or p[i] != b"@"[0]:
        return -1
    at[0] = i
    return host(p, i + 1, n)


cdef inline str text(const unsigned char* p, Py_ssize_t start, Py_ssize_t end):
    return PyUnicode_DecodeASCII(<const char*>p + start, end - start, NULL)


cdef dict digest(const unsigned char* p, Py_ssize_t i, Py_ssize_t n):
    # Digest [a-z]+=("[^"\\]*"|[^ ,"]+)(, ?[a-z]+=("[^"\\]*"|[^ ,"]+))*: the parameters,
    # unquoted, or None (also for a repeated parameter)
    cdef Py_ssize_t j, name_start, name_end, value_start, value_end
    cdef dict params = {}
    cdef str name
    i = literal(p, i, n, b"Digest ", 7)
    if i < 0:
        return None
    while True:
        j = i
        while j < n and b"a"[0] <= p[j] <= b"z"[0]:
            j += 1
        if j == i or j >= n or p[j] != b"="[0]:
            return None
        name_start, name_end = i, j
        i = j + 1
        if i < n and p[i] == b'"'[0]:
            i += 1
            value_start = i
            while i < n and p[i] != b'"'[0]:
                if p[i] == b"\\"[0]:
                    return None
                i += 1
            if i >= n:
                return None
            value_end = i
            i += 1
        else:
            j = i
            while j < n and p[j] != b" "[0] and p[j] != b","[0] and p[j] != b'"'[0]:
                j += 1
            if j == i:
                return None
            value_start, value_end = i, j
            i = j
        name = text(p, name_start, name_end)
        if name in params:
            return None
        params[name] = text(p, value_start, value_end)
        if i == n:
            return params
        if p[i] != b","[0]:
            return None
        i += 1
        if i < n and p[i] == b" "[0]:
            i += 1


cdef inline int header_index(const unsigned char* p, Py_ssize_t size) noexcept nogil:
    cdef int k
    cdef const char* name
    for k in range(H_COUNT):
        name = KNOWN[k]
        if KNOWN_LEN[k] == size and literal(p, 0, size, name, size) == size:
            return k
    return -1


cdef const char* KNOWN[13]
cdef Py_ssize_t KNOWN_LEN[13]
cdef list _parts = [name.encode() for name in NAMES]
cdef Py_ssize_t _k
for _k in range(H_COUNT):
    KNOWN[_k] = PyBytes_AS_STRING(_parts[_k])
    KNOWN_LEN[_k] = PyBytes_GET_SIZE(_parts[_k])


cdef inline object optional(
    const unsigned char* p, Py_ssize_t* start, Py_ssize_t* stop, unsigned int seen, int k
):
    return text(p, start[k], stop[k]) if seen & (1u << k) else None


cpdef object scan_register(bytes data):
    """The fields of the plain REGISTER in ``data``, or None if it is not one."""
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef Py_ssize_t i, j, end, name_end, at_to, contact_end
    cdef Py_ssize_t start[13]
    cdef Py_ssize_t stop[13]
    cdef int order[16]
    cdef int count = 0, k
    cdef unsigned int seen = 0
    cdef long value, via_port = -1, cseq, contact_expires = -1, expires = -1
    cdef bint rport = False
    if data is None:
        raise TypeError("scan_register() needs bytes, not None")
    p = <const unsigned char*>PyBytes_AS_STRING(data)
    n = PyBytes_GET_SIZE(data)
    if n > MAX_SIZE or n < 4 or literal(p, n - 4, n, b"\r\n\r\n", 4) < 0:
        return None
    # request line: REGISTER sip:HOST SIP/2.0
    i = literal(p, 0, n, b"REGISTER sip:", 13)
    if i < 0:
        return None
    i = host(p, i, n)
    if i < 0:
        return None
    i = literal(p, i, n, b" SIP/2.0\r\n", 10)
    if i < 0:
        return None
    end = n - 2
    while i < end:  # Name: printable ASCII value CRLF
        j = i
        while j < end and is_name_char(p[j]):
            j += 1
        if j == i:
            return None
        name_end = j
        j = literal(p, j, end, b": ", 2)
        if j < 0:
            return None
        k = header_index(p + i, name_end - i)
        if k < 0 or seen & (1u << k):
            return None
        seen |= 1u << k
        start[k] = j
        while j < end and 0x20 <= p[j] <= 0x7E:
            j += 1
        stop[k] = j
        if literal(p, j, end, b"\r\n", 2) < 0:
            return None
        if k <= H_CSEQ:
            order[count] = k
            count += 1
        i = j + 2
    if (seen & MANDATORY) != MANDATORY:
        return None
    # Via: SIP/2.0/UDP HOST[:PORT];branch=z9hG4bKTOKEN[;rport]
    cdef Py_ssize_t via_host_start, via_host_end, branch_start, branch_end
    i = literal(p, start[H_VIA], stop[H_VIA], b"SIP/2.0/UDP ", 12)
    if i < 0:
        return None
    via_host_start = i
    i = host(p, i, stop[H_VIA])
    if i < 0:
        return None
    via_host_end = i
    if i < stop[H_VIA] and p[i] == b":"[0]:
        i = port(p, i + 1, stop[H_VIA], &via_port)
        if i < 0 or via_port > 65535:
            return None
    i = literal(p, i, stop[H_VIA], b";branch=z9hG4bK", 15)
    if i < 0:
        return None
    branch_start = i - 7
    i = token(p, i, stop[H_VIA])
    if i < 0:
        return None
    branch_end = i
    if i != stop[H_VIA]:
        if literal(p, i, stop[H_VIA], b";rport", 6) != stop[H_VIA]:
            return None
        rport = True
    # From: <sip:USER@HOST>;tag=TOKEN
    i = literal(p, start[H_FROM], stop[H_FROM], b"<", 1)
    if i < 0:
        return None
    i = sip_user_host(p, i, stop[H_FROM], &at_to)
    if i < 0:
        return None
    i = literal(p, i, stop[H_FROM], b">;tag=", 6)
    if i < 0 or token(p, i, stop[H_FROM]) != stop[H_FROM]:
        return None
    # To: <sip:USER@HOST>
    i = literal(p, start[H_TO], stop[H_TO], b"<", 1)
    if i < 0:
        return None
    i = sip_user_host(p, i, stop[H_TO], &at_to)
    if i < 0 or literal(p, i, stop[H_TO], b">", 1) != stop[H_TO]:
        return None
    cdef Py_ssize_t to_host_end = i
    # Call-ID: TOKEN[@TOKEN]
    i = token(p, start[H_CALL_ID], stop[H_CALL_ID])
    if i < 0:
        return None
    if i != stop[H_CALL_ID]:
        if p[i] != b"@"[0] or token(p, i + 1, stop[H_CALL_ID]) != stop[H_CALL_ID]:
            return None
    # CSeq: DIGITS REGISTER
    i = digits(p, start[H_CSEQ], stop[H_CSEQ], 9, &cseq)
    if i < 0 or literal(p, i, stop[H_CSEQ], b" REGISTER", 9) != stop[H_CSEQ]:
        return None
    # Contact: <sip:USER@HOST[:PORT]>[;expires=DIGITS]
    cdef Py_ssize_t at_contact
    i = literal(p, start[H_CONTACT], stop[H_CONTACT], b"<", 1)
    if i < 0:
        return None
    i = sip_user_host(p, i, stop[H_CONTACT], &at_contact)
    if i < 0:
        return None
    if i < stop[H_CONTACT] and p[i] == b":"[0]:
        i = port(p, i + 1, stop[H_CONTACT], &value)
        if i < 0 or value > 65535:
            return None
    contact_end = i
    i = literal(p, i, stop[H_CONTACT], b">", 1)
    if i < 0:
        return None
    if i != stop[H_CONTACT]:
        i = literal(p, i, stop[H_CONTACT], b";expires=", 9)
        if i < 0 or digits(p, i, stop[H_CONTACT], 9, &contact_expires) != stop[H_CONTACT]:
            return None
    # the optional ones
    cdef dict params = None
    if seen & (1u << H_AUTHORIZATION):
        params = digest(p, start[H_AUTHORIZATION], stop[H_AUTHORIZATION])
        if params is None:
            return None
    k = H_CONTENT_LENGTH
    if seen & (1u << k) and (stop[k] - start[k] != 1 or p[start[k]] != b"0"[0]):
        return None
    k = H_MAX_FORWARDS
    if seen & (1u << k) and (digits(p, start[k], stop[k], 9, &value) != stop[k] or value > 255):
        return None
    if seen & (1u << H_EXPIRES):
        if digits(p, start[H_EXPIRES], stop[H_EXPIRES], 9, &expires) != stop[H_EXPIRES]:
            return None
    for k in (H_USER_AGENT, H_ALLOW, H_SUPPORTED):  # free text: no edge spaces
        if seen & (1u << k) and stop[k] > start[k]:
            if p[start[k]] == b" "[0] or p[stop[k] - 1] == b" "[0]:
                return None
    cdef list copied = []
    for k in range(count):
        copied.append((NAMES[order[k]], text(p, start[order[k]], stop[order[k]])))
    return (
        text(p, branch_start, branch_end),
        text(p, via_host_start, via_host_end),
        None if via_port < 0 else via_port,
        rport,
        text(p, start[H_TO] + 5, at_to),
        text(p, at_to + 1, to_host_end),
        text(p, start[H_CALL_ID], stop[H_CALL_ID]),
        cseq,
        text(p, start[H_CONTACT] + 1, contact_end),
        None if contact_expires < 0 else contact_expires,
        None if expires < 0 else expires,
        params,
        optional(p, start, stop, seen, H_USER_AGENT),
        copied,
    )


cpdef Py_ssize_t nth_crlf(bytes data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t n):
    """The offset of the ``n``-th CRLF (its CR) in ``data[start:end]``, or -1 if there are
    fewer; the scan stops there (a flood of lines is refused after reading ``n`` of them)."""
    cdef const unsigned char* p
    cdef Py_ssize_t size
    cdef Py_ssize_t found = 0
    cdef const unsigned char* hit
    if data is None:
        raise TypeError("nth_crlf() needs bytes, not None")
    if start < 0 or n < 1:
        raise ValueError("start must not be negative and n must be positive")
    p = <const unsigned char*>PyBytes_AS_STRING(data)
    size = PyBytes_GET_SIZE(data)
    if end > size:
        end = size
    with nogil:
        # a CRLF's LF is never at start: its CR would be outside the range
        start += 1
        while start < end:
            hit = <const unsigned char*>memchr(p + start, 10, <size_t>(end - start))
            if hit == NULL:
                break
            start = hit - p + 1
            if hit[-1] == 13:
                found += 1
                if found == n:
                    return hit - p - 1
    return -1


# -- the general parser's header block splitter -------------------------------------------

# compact form -> key (RFC 3261 §7.3.3 and the IANA registry; pbxcore.sip.headers.COMPACT_FORMS,
# a test holds them equal)
cdef dict COMPACT = {
    "a": "accept-contact", "b": "referred-by", "c": "content-type",
    "d": "request-disposition", "e": "content-encoding", "f": "from", "i": "call-id",
    "j": "reject-contact", "k": "supported", "l": "content-length", "m": "contact",
    "n": "identity-info", "o": "event", "r": "refer-to", "s": "subject", "t": "to",
    "u": "allow-events", "v": "via", "x": "session-expires", "y": "identity",
}

# common spellings: their (name, key) come from this table with no allocation
cdef tuple COMMON_NAMES = (
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Expires",
    "Content-Length", "Content-Type", "Authorization", "Proxy-Authorization",
    "WWW-Authenticate", "Proxy-Authenticate", "User-Agent", "Server", "Allow", "Supported",
    "Require", "Proxy-Require", "Unsupported", "Route", "Record-Route", "Accept",
    "Accept-Encoding", "Accept-Language", "Allow-Events", "Event", "Subscription-State",
    "Date", "Timestamp", "Min-Expires", "Session-Expires", "Min-SE", "Refer-To",
    "Referred-By", "Replaces", "P-Asserted-Identity", "P-Preferred-Identity", "Privacy",
    "Reason", "Warning", "Retry-After", "Subject", "Organization", "Priority", "Call-Info",
    "Alert-Info", "Error-Info", "Content-Disposition", "Content-Encoding", "RSeq", "RAck",
    "Path", "Service-Route", "Call-Id", "Cseq", "Content-length", "Max-forwards",
    "User-agent", "Content-type", "Record-route", "v", "f", "t", "i", "m", "l", "c", "k",
    "s", "e", "o", "r", "u", "x", "b", "via", "from", "to", "call-id", "cseq", "contact",
    "max-forwards", "expires", "content-length", "content-type", "user-agent",
)
cdef enum:
    MAX_COMMON = 128
cdef const char* COMMON_C[MAX_COMMON]
cdef Py_ssize_t COMMON_LEN[MAX_COMMON]
cdef int N_COMMON = len(COMMON_NAMES)
assert N_COMMON <= MAX_COMMON
cdef list _common_bytes = [name.encode() for name in COMMON_NAMES]
cdef list _common_pairs = []
for _k in range(N_COMMON):
    COMMON_C[_k] = PyBytes_AS_STRING(_common_bytes[_k])
    COMMON_LEN[_k] = PyBytes_GET_SIZE(_common_bytes[_k])
    _common_pairs.append(
        (COMMON_NAMES[_k], COMPACT.get(COMMON_NAMES[_k].lower(), COMMON_NAMES[_k].lower()))
    )
cdef tuple COMMON_PAIRS = tuple(_common_pairs)
# names seen and checked that are not in the table -> key (bounded: names come from peers)
cdef dict OTHER_KEYS = {}

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)


cdef inline bint is_wsp(unsigned char c) noexcept nogil:
    return c == 32 or c == 9


cdef inline str decode(const unsigned char* p, Py_ssize_t start, Py_ssize_t end):
    # the piece of the block as the general parser decodes it (UTF-8, surrogateescape; the
    # pieces are cut at ASCII octets, so they decode as they would in the whole block)
    return PyUnicode_DecodeUTF8(<const char*>p + start, end - start, "surrogateescape")


cdef inline int common_index(const unsigned char* p, Py_ssize_t size) noexcept nogil:
    cdef int k
    for k in range(N_COMMON):
        if COMMON_LEN[k] == size and p[0] == <unsigned char>COMMON_C[k][0]:
            if literal(p, 0, size, COMMON_C[k], size) == size:
                return k
    return -1


cpdef object split_headers(bytes data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t max_line):
    """The start line, the (name, key, value) triples of the header block ``data[start:end]``
    (``end``: where its CRLFCRLF begins) and the Content-Length values, or None when the
    general loop of :func:`pbxcore.sip.parse_message` must decide (see
    :mod:`pbxcore._sipscan_ref`)."""
    cdef const unsigned char* p
    cdef Py_ssize_t i, line_end, name_end, colon, v0, v1
    cdef const unsigned char* hit
    cdef int k
    cdef list items = []
    cdef str first, name, key, value
    cdef tuple last
    if data is None:
        raise TypeError("split_headers() needs bytes, not None")
    if start < 0 or end > PyBytes_GET_SIZE(data) - 2 or start > end:
        raise ValueError("the block must lie inside data and end before a CRLF")
    p = <const unsigned char*>PyBytes_AS_STRING(data)
    # the start line
    hit = <const unsigned char*>memchr(p + start, 10, <size_t>(end + 2 - start))
    line_end = hit - p - 1 if hit != NULL else end
    if line_end < start or (hit != NULL and p[line_end] != 13) or line_end - start > max_line:
        return None
    if memchr(p + start, 13, <size_t>(line_end - start)) != NULL:
        return None
    first = decode(p, start, line_end)
    i = line_end + 2
    while i < end + 2 and line_end < end:
        # one physical line: i .. line_end (its CRLF)
        hit = <const unsigned char*>memchr(p + i, 10, <size_t>(end + 2 - i))
        if hit == NULL:
            return None
        line_end = hit - p - 1
        if line_end < i or p[line_end] != 13 or line_end - i > max_line:
            return None  # a bare LF (or an empty line inside the block), or a long line
        if memchr(p + i, 13, <size_t>(line_end - i)) != NULL:
            return None  # a bare CR
        if is_wsp(p[i]):  # a continuation line: folded into the previous field
            v0 = i
            while v0 < line_end and is_wsp(p[v0]):
                v0 += 1
            if not items or v0 == line_end:
                return None
            v1 = line_end
            while is_wsp(p[v1 - 1]):
                v1 -= 1
            last = <tuple>items[len(items) - 1]
            value = <str>last[2]
            value = value + decode(p, i, v1) if value else decode(p, v0, v1)
            items[len(items) - 1] = (last[0], last[1], value)
            i = line_end + 2
            continue
        colon = i
        while colon < line_end and is_token_char(p[colon]):
            colon += 1
        name_end = colon
        while colon < line_end and is_wsp(p[colon]):
            colon += 1
        if name_end == i or colon == line_end or p[colon] != b":"[0]:
            return None  # no colon, or a name that is not a token
        k = common_index(p + i, name_end - i)
        if k >= 0:
            last = <tuple>COMMON_PAIRS[k]
            name = <str>last[0]
            key = <str>last[1]
        else:
            name = PyUnicode_DecodeASCII(<const char*>p + i, name_end - i, NULL)
            key = OTHER_KEYS.get(name)
            if key is None:
                key = name.lower()
                key = COMPACT.get(key, key)
                if len(OTHER_KEYS) < 4096:
                    OTHER_KEYS[name] = key
        v0 = colon + 1
        v1 = line_end
        while v0 < v1 and is_wsp(p[v0]):
            v0 += 1
        while v1 > v0 and is_wsp(p[v1 - 1]):
            v1 -= 1
        items.append((name, key, decode(p, v0, v1)))
        i = line_end + 2
    cdef list lengths = []
    for last in items:
        if <str>last[1] == "content-length":
            lengths.append(last[2])
    return first, items, lengths


# -- the common Via and name-addr shapes (the fast paths of pbxcore.sip.headers) ----------

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)


cdef inline bint is_hostname_char(unsigned char c) noexcept nogil:
    return is_alnum(c) or c == b"_"[0] or c == b"-"[0] or c == b"."[0]


cdef inline bint is_plain_char(unsigned char c) noexcept nogil:
    # [A-Za-z0-9\-_.!~*'()&=+$,%]
    return is_alnum(c) or c in b"-_.!~*'()&=+$,%"


cdef inline bint is_pchar(unsigned char c) noexcept nogil:
    # [^;?=@\x00-\x20\x7f<>"] (ASCII input)
    return c > 0x20 and c != 0x7F and c not in b';?=@<>"'


cdef inline bint is_pvalue_char(unsigned char c) noexcept nogil:
    return is_token_char(c) or c == b":"[0] or c == b"["[0] or c == b"]"[0]


cdef inline Py_ssize_t header_params(
    const unsigned char* p, Py_ssize_t i, Py_ssize_t n, dict params
):
    # (;token[=pvalue])* to n: the parameters into params, or -1
    cdef Py_ssize_t j, k
    while i < n:
        if p[i] != b";"[0]:
            return -1
        j = i + 1
        while j < n and is_token_char(p[j]):
            j += 1
        if j == i + 1:
            return -1
        if j < n and p[j] == b"="[0]:
            k = j + 1
            while k < n and is_pvalue_char(p[k]):
                k += 1
            if k == j + 1:
                return -1
            params[text(p, i + 1, j)] = text(p, j + 1, k)
            i = k
        else:
            params[text(p, i + 1, j)] = None
            i = j
    return i


cdef inline Py_ssize_t port_digits(
    const unsigned char* p, Py_ssize_t i, Py_ssize_t n, long* value
) noexcept nogil:
    # [0-9]{1,5} (a maximal run), at most 65535 (the general parser explains the rest)
    i = digits(p, i, n, 5, value)
    if i < 0 or value[0] > 65535:
        return -1
    return i


cpdef object parse_via(str value):
    """(transport, host, port, params) of ``SIP/2.0/TRANSPORT host[:port];params`` (see
    :func:`pbxcore._sipscan_ref.parse_via`), or None for anything else."""
    cdef const unsigned char* p
    cdef Py_ssize_t n, i, j
    cdef object port = None
    cdef long port_value
    cdef dict params = {}
    if value is None:
        raise TypeError("parse_via() needs a str, not None")
    if not PyUnicode_IS_ASCII(value):
        return None
    p = <const unsigned char*>PyUnicode_DATA(value)
    n = PyUnicode_GET_LENGTH(value)
    i = literal(p, 0, n, b"SIP/2.0/", 8)
    if i < 0:
        return None
    j = i
    while j < n and b"A"[0] <= p[j] <= b"Z"[0]:
        j += 1
    if j == i or j >= n or p[j] != b" "[0]:
        return None
    transport = text(p, i, j)
    i = j + 1
    j = i
    if j >= n or not (is_alnum(p[j]) or p[j] == b"_"[0]):
        return None
    while j < n and is_hostname_char(p[j]):
        j += 1
    host = text(p, i, j)
    if j < n and p[j] == b":"[0]:
        j = port_digits(p, j + 1, n, &port_value)
        if j < 0:
            return None
        port = port_value
    if header_params(p, j, n, params) < 0:
        return None
    return transport, host, port, params


cpdef object parse_name_addr(str value):
    """(display name, scheme, user, password, host, port, URI params, params) of
    ``["name"] <sip:user[:password]@host[:port];uri-params>;params`` (see
    :func:`pbxcore._sipscan_ref.parse_name_addr`), or None for anything else."""
    cdef const unsigned char* p
    cdef Py_ssize_t n, i, j, k, e
    cdef object display = None, user = None, password = None, port = None
    cdef long port_value
    cdef dict uri_params = {}
    cdef dict params = {}
    if value is None:
        raise TypeError("parse_name_addr() needs a str, not None")
    if not PyUnicode_IS_ASCII(value):
        return None
    p = <const unsigned char*>PyUnicode_DATA(value)
    n = PyUnicode_GET_LENGTH(value)
    i = 0
    while i < n and is_wsp(p[i]):
        i += 1
    if i < n and p[i] == b'"'[0]:
        j = i + 1
        while j < n and p[j] != b'"'[0]:
            if p[j] == b"\\"[0]:
                return None
            j += 1
        if j >= n:
            return None
        display = text(p, i + 1, j)
        i = j + 1
        while i < n and is_wsp(p[i]):
            i += 1
    if i >= n or p[i] != b"<"[0]:
        return None
    i += 1
    if literal(p, i, n, b"sips:", 5) > 0:
        scheme = "sips"
        i += 5
    elif literal(p, i, n, b"sip:", 4) > 0:
        scheme = "sip"
        i += 4
    else:
        return None
    # user[:password]@ (maximal runs: '@' and ':' are not plain characters)
    j = i
    while j < n and is_plain_char(p[j]):
        j += 1
    k = j
    if k < n and p[k] == b":"[0]:
        k += 1
        while k < n and is_plain_char(p[k]):
            k += 1
    if j > i and k < n and p[k] == b"@"[0]:
        user = text(p, i, j)
        if k > j:
            password = text(p, j + 1, k)
        i = k + 1
    # hostname or IPv4 (IPv6 references go to the general parser)
    j = i
    if j >= n or not (is_alnum(p[j]) or p[j] == b"_"[0]):
        return None
    while j < n and is_hostname_char(p[j]):
        j += 1
    host = text(p, i, j)
    if j < n and p[j] == b":"[0]:
        j = port_digits(p, j + 1, n, &port_value)
        if j < 0:
            return None
        port = port_value
    # ;uri-params up to '>'
    while j < n and p[j] == b";"[0]:
        k = j + 1
        while k < n and is_pchar(p[k]):
            k += 1
        if k == j + 1:
            return None
        e = k
        if k < n and p[k] == b"="[0]:
            e = k + 1
            while e < n and is_pchar(p[e]):
                e += 1
            uri_params[text(p, j + 1, k)] = text(p, k + 1, e)
        else:
            uri_params[text(p, j + 1, k)] = None
        j = e
    if j >= n or p[j] != b">"[0]:
        return None
    if header_params(p, j + 1, n, params) < 0:
        return None
    return display, scheme, user, password, host, port, uri_params, params


# -- serialization ------------------------------------------------------------------------

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.string cimport memcpy


cdef inline char* put(char* out, str s) noexcept:
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
    memcpy(out, PyUnicode_DATA(s), n)
    return out + n


cpdef object serialize(str start_line, list items, bytes body):
    """The wire form of a message (see :func:`pbxcore._sipscan_ref.serialize`), or None
    when some text is not ASCII (the caller encodes it)."""
    cdef Py_ssize_t total, size, k
    cdef Py_ssize_t body_size
    cdef bint seen = False
    cdef char digits_buf[24]
    cdef int n_digits = 0
    cdef str name, key, value
    cdef tuple item
    cdef char* out
    cdef bytes result
    if start_line is None or items is None or body is None:
        raise TypeError("serialize() needs a str, a list and bytes")
    body_size = PyBytes_GET_SIZE(body)
    size = body_size
    while True:  # the decimal digits of the body size, backwards
        digits_buf[n_digits] = <char>(48 + size % 10)
        n_digits += 1
        size //= 10
        if size == 0:
            break
    if not PyUnicode_IS_ASCII(start_line):
        return None
    total = PyUnicode_GET_LENGTH(start_line) + 2
    for k in range(len(items)):
        item = <tuple?>items[k]
        name = item[0]
        key = item[1]
        value = item[2]
        if not PyUnicode_IS_ASCII(name) or not PyUnicode_IS_ASCII(value):
            return None
        if key == "content-length":
            if seen:
                continue
            seen = True
            total += PyUnicode_GET_LENGTH(name) + 2 + n_digits + 2
        else:
            total += PyUnicode_GET_LENGTH(name) + 2 + PyUnicode_GET_LENGTH(value) + 2
    if not seen:
        total += 16 + n_digits + 2
    total += 2 + body_size
    result = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(result)
    out = put(out, start_line)
    out[0] = 13
    out[1] = 10
    out += 2
    seen = False
    for k in range(len(items)):
        item = <tuple>items[k]
        key = <str>item[1]
        if key == "content-length":
            if seen:
                continue
            seen = True
        out = put(out, <str>item[0])
        out[0] = b":"[0]
        out[1] = b" "[0]
        out += 2
        if key == "content-length":
            for size in range(n_digits):
                out[size] = digits_buf[n_digits - 1 - size]
            out += n_digits
        else:
            out = put(out, <str>item[2])
        out[0] = 13
        out[1] = 10
        out += 2
    if not seen:
        memcpy(out, b"Content-Length: ", 16)
        out += 16
        for size in range(n_digits):
            out[size] = digits_buf[n_digits - 1 - size]
        out += n_digits
        out[0] = 13
        out[1] = 10
        out += 2
    out[0] = 13
    out[1] = 10
    out += 2
    memcpy(out, PyBytes_AS_STRING(body), body_size)
    return result


cpdef object first_value(list items, str key):
    """The value of the first (name, key, value) triple with this key, or None."""
    cdef tuple item
    if items is None:
        raise TypeError("first_value() needs a list, not None")
    for item in items:
        if <str?>item[1] == key:
            return item[2]
    return None


cpdef list all_values(list items, str key):
    """The values of every (name, key, value) triple with this key, in order."""
    cdef tuple item
    cdef list out = []
    if items is None:
        raise TypeError("all_values() needs a list, not None")
    for item in items:
        if <str?>item[1] == key:
            out.append(item[2])
    return out


cpdef object parse_cseq(str value):
    """(number, method) of ``DIGITS SP TOKEN`` with at most 10 digits and a number up to
    2**31-1, or None for anything else (the general parser decides)."""
    cdef const unsigned char* p
    cdef Py_ssize_t n, i, j
    cdef long number
    if value is None:
        raise TypeError("parse_cseq() needs a str, not None")
    if not PyUnicode_IS_ASCII(value):
        return None
    p = <const unsigned char*>PyUnicode_DATA(value)
    n = PyUnicode_GET_LENGTH(value)
    i = digits(p, 0, n, 10, &number)
    if i < 0 or number > 2147483647 or i >= n or p[i] != b" "[0]:
        return None
    j = token(p, i + 1, n)
    if j != n:
        return None
    return number, text(p, i + 1, n)
