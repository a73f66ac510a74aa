# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""G.711 μ-law and A-law, bit-exact with ITU-T G.191.

Encoding is computed, not looked up (``csrc/g711_encode.c``): a table lookup per sample is a
gather, which does not vectorize, while the segment and mantissa come out of the exponent and
top mantissa bits of the magnitude converted to float, sixteen or thirty-two samples at a time.
The kernel (portable C, SSE2 or AVX2) is chosen at import by the CPU's features.

Decoding is a 256-entry table. μ-law ↔ A-law goes through 256-entry tables built
*decode-then-encode* (a code is expanded to its linear value by G.191 and compressed in the
other law), the same definition as ``audioop.ulaw2alaw``; it is not G.711's Tables 3/4.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from *:
    """
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define PBX_BIG_ENDIAN 1
    #else
    #define PBX_BIG_ENDIAN 0
    #endif
    static inline uint16_t pbx_bswap16(uint16_t v) { return (uint16_t)((v >> 8) | (v << 8)); }
    """
    const int PBX_BIG_ENDIAN
    uint16_t pbx_bswap16(uint16_t v) noexcept nogil

cdef extern from "csrc/g711_encode.h" nogil:
    enum:
        PBX_G711_NVARIANTS
    void pbx_g711_lin2ulaw_le(const uint8_t* src, size_t n, uint8_t* dst) noexcept
    void pbx_g711_lin2alaw_le(const uint8_t* src, size_t n, uint8_t* dst) noexcept
    void pbx_g711_lin2ulaw_native(const int16_t* src, size_t n, uint8_t* dst) noexcept
    void pbx_g711_lin2alaw_native(const int16_t* src, size_t n, uint8_t* dst) noexcept
    void pbx_g711_init() noexcept
    const char* pbx_g711_variant_name(int variant) noexcept
    int pbx_g711_variant_supported(int variant) noexcept
    int pbx_g711_select(int variant) noexcept
    int pbx_g711_selected() noexcept

# Bulk calls release the GIL above this many bytes; per-packet calls never pay for it.
cdef enum:
    NOGIL_BYTES = 65536

cdef int16_t ULAW_DEC[256]
cdef int16_t ALAW_DEC[256]
cdef uint16_t ULAW_DEC_LE[256]  # decoded value as it lies in little-endian memory
cdef uint16_t ALAW_DEC_LE[256]
cdef uint8_t ULAW_TO_ALAW[256]
cdef uint8_t ALAW_TO_ULAW[256]


# ---- G.191 reference algorithms (used only to fill the decode and transcode tables) ----

cdef uint8_t _ulaw_compress(int16_t x) noexcept nogil:
    cdef int absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    cdef int i, segno, low, high
    if absno > 0x1FFF:
        absno = 0x1FFF
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high = 0x0008 - segno
    low = 0x000F - ((absno >> segno) & 0x000F)
    cdef int code = (high << 4) | low
    if x >= 0:
        code |= 0x0080
    return <uint8_t>(code & 0xFF)


cdef int16_t _ulaw_expand(uint8_t code) noexcept nogil:
    cdef int sign = -1 if code < 0x80 else 1
    cdef int mantissa = ~(<int>code)
    cdef int exponent = (mantissa >> 4) & 0x0007
    cdef int segment = exponent + 1
    mantissa &= 0x000F
    cdef int step = 4 << segment
    return <int16_t>(sign * ((0x0080 << exponent) + step * mantissa + step // 2 - 4 * 33))


cdef uint8_t _alaw_compress(int16_t x) noexcept nogil:
    cdef int ix = ((~x) >> 4) if x < 0 else (x >> 4)
    cdef int iexp
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x0080
    return <uint8_t>((ix ^ 0x0055) & 0xFF)


cdef int16_t _alaw_expand(uint8_t code) noexcept nogil:
    cdef int ix = (code ^ 0x0055) & 0x007F
    cdef int iexp = ix >> 4
    cdef int mant = ix & 0x000F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x0008
    if iexp > 1:
        mant <<= iexp - 1
    return <int16_t>(mant if code > 127 else -mant)


cdef void _fill_tables() noexcept nogil:
    cdef int i
    cdef uint16_t le
    for i in range(256):
        ULAW_DEC[i] = _ulaw_expand(<uint8_t>i)
        ALAW_DEC[i] = _alaw_expand(<uint8_t>i)
        le = <uint16_t>ULAW_DEC[i]
        ULAW_DEC_LE[i] = pbx_bswap16(le) if PBX_BIG_ENDIAN else le
        le = <uint16_t>ALAW_DEC[i]
        ALAW_DEC_LE[i] = pbx_bswap16(le) if PBX_BIG_ENDIAN else le
    for i in range(256):
        ULAW_TO_ALAW[i] = _alaw_compress(ULAW_DEC[i])
        ALAW_TO_ULAW[i] = _ulaw_compress(ALAW_DEC[i])


_fill_tables()
pbx_g711_init()


# ---- table kernels (any alignment, any host order) ----

cdef inline void _decode(const uint8_t* src, Py_ssize_t n, uint8_t* dst,
                         const uint16_t* table) noexcept nogil:
    # dst gets each table entry as it lies in memory (the *_LE tables: little-endian PCM).
    # Four samples per 8-byte store, and eight codes per store in _translate: with a store per
    # sample the same loop ran at 1.6 to 2.7 GS/s on one CPU depending only on where the
    # linker put the tables (probably table loads waiting on stores that match their address
    # modulo 4 KiB); with wide stores it ran at 2.4-2.9 GS/s in both layouts measured.
    cdef Py_ssize_t i = 0
    cdef uint32_t w
    cdef uint64_t out
    cdef int shift
    while i + 4 <= n:
        # code j of the word (by shift) goes to sample j of the output word (by shift): the
        # same memory order on little- and big-endian hosts
        memcpy(&w, src + i, 4)
        out = 0
        for shift in range(4):
            out |= (<uint64_t>table[(w >> (8 * shift)) & 0xFF]) << (16 * shift)
        memcpy(dst + 2 * i, &out, 8)
        i += 4
    while i < n:
        memcpy(dst + 2 * i, &table[src[i]], 2)
        i += 1


cdef inline void _translate(const uint8_t* src, Py_ssize_t n, uint8_t* dst,
                            const uint8_t* table) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef uint64_t w, out
    cdef int shift
    while i + 8 <= n:
        memcpy(&w, src + i, 8)  # read before written: in place (src == dst) works
        out = 0
        for shift in range(0, 64, 8):
            out |= (<uint64_t>table[(w >> shift) & 0xFF]) << shift
        memcpy(dst + i, &out, 8)
        i += 8
    while i < n:
        dst[i] = table[src[i]]
        i += 1


# ---- C-level API (see _g711.pxd) ----

cdef void g711_lin2ulaw(const int16_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil:
    if n > 0:
        pbx_g711_lin2ulaw_native(src, <size_t>n, dst)


cdef void g711_lin2alaw(const int16_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil:
    if n > 0:
        pbx_g711_lin2alaw_native(src, <size_t>n, dst)


# the decode tables in host order give native-order samples through the same kernel
cdef void g711_ulaw2lin(const uint8_t* src, Py_ssize_t n, int16_t* dst) noexcept nogil:
    _decode(src, n, <uint8_t*>dst, <const uint16_t*>ULAW_DEC)


cdef void g711_alaw2lin(const uint8_t* src, Py_ssize_t n, int16_t* dst) noexcept nogil:
    _decode(src, n, <uint8_t*>dst, <const uint16_t*>ALAW_DEC)


cdef void g711_ulaw2alaw(const uint8_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil:
    _translate(src, n, dst, ULAW_TO_ALAW)


cdef void g711_alaw2ulaw(const uint8_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil:
    _translate(src, n, dst, ALAW_TO_ULAW)


# ---- Python API ----

cdef enum Op:
    OP_LIN2ULAW
    OP_LIN2ALAW
    OP_ULAW2LIN
    OP_ALAW2LIN
    OP_ULAW2ALAW
    OP_ALAW2ULAW


cdef inline int _check_width(int width) except -1:
    if width != 2:
        raise ValueError(f"only 16-bit PCM is supported (width=2), got width={width}")
    return 0


cdef inline Py_ssize_t _out_len(Op op, Py_ssize_t n) except -1:
    if op == OP_LIN2ULAW or op == OP_LIN2ALAW:
        if n & 1:
            raise ValueError(f"PCM16 data has an odd length of {n} bytes")
        return n >> 1
    if op == OP_ULAW2LIN or op == OP_ALAW2LIN:
        return n << 1
    return n


cdef inline void _run(Op op, const uint8_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil:
    # n is the input length in bytes
    if op == OP_LIN2ULAW:
        pbx_g711_lin2ulaw_le(src, <size_t>(n >> 1), dst)
    elif op == OP_LIN2ALAW:
        pbx_g711_lin2alaw_le(src, <size_t>(n >> 1), dst)
    elif op == OP_ULAW2LIN:
        _decode(src, n, dst, ULAW_DEC_LE)
    elif op == OP_ALAW2LIN:
        _decode(src, n, dst, ALAW_DEC_LE)
    elif op == OP_ULAW2ALAW:
        _translate(src, n, dst, ULAW_TO_ALAW)
    else:
        _translate(src, n, dst, ALAW_TO_ULAW)


cdef inline int _get_src(object obj, Py_buffer* view) except -1:
    if isinstance(obj, str):
        raise TypeError("a bytes-like object is required, not 'str'")
    PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    return 0


cdef inline void _run_maybe_nogil(Op op, const uint8_t* src, Py_ssize_t n, uint8_t* dst) noexcept:
    if n > NOGIL_BYTES:
        with nogil:
            _run(op, src, n, dst)
    else:
        _run(op, src, n, dst)


cdef bytes _convert(Op op, object fragment):
    cdef Py_ssize_t n, m
    cdef bytes out
    cdef Py_buffer view
    if type(fragment) is bytes:
        # fast path for the per-packet case: no buffer export
        n = len(<bytes>fragment)
        m = _out_len(op, n)
        out = PyBytes_FromStringAndSize(NULL, m)
        _run_maybe_nogil(op, <const uint8_t*>PyBytes_AS_STRING(fragment), n,
                         <uint8_t*>PyBytes_AS_STRING(out))
        return out
    _get_src(fragment, &view)
    try:
        n = view.len
        m = _out_len(op, n)
        out = PyBytes_FromStringAndSize(NULL, m)
        _run_maybe_nogil(op, <const uint8_t*>view.buf, n, <uint8_t*>PyBytes_AS_STRING(out))
    finally:
        PyBuffer_Release(&view)
    return out


cdef Py_ssize_t _convert_into(Op op, object src, object dst) except -1:
    cdef Py_buffer sview, dview
    cdef Py_ssize_t n, m
    _get_src(src, &sview)
    try:
        n = sview.len
        m = _out_len(op, n)
        try:
            PyObject_GetBuffer(dst, &dview, PyBUF_WRITABLE)
        except BufferError as exc:
            raise TypeError(f"dst must be a writable bytes-like object: {exc}") from None
        try:
            if dview.len < m:
                raise ValueError(f"dst too small: needs {m} bytes, has {dview.len}")
            _run_maybe_nogil(op, <const uint8_t*>sview.buf, n, <uint8_t*>dview.buf)
        finally:
            PyBuffer_Release(&dview)
    finally:
        PyBuffer_Release(&sview)
    return m


def lin2ulaw(fragment, int width=2):
    """Encode little-endian PCM16 to μ-law (G.191 bit-exact); ``width`` must be 2."""
    _check_width(width)
    return _convert(OP_LIN2ULAW, fragment)


def lin2alaw(fragment, int width=2):
    """Encode little-endian PCM16 to A-law (G.191 bit-exact); ``width`` must be 2."""
    _check_width(width)
    return _convert(OP_LIN2ALAW, fragment)


def ulaw2lin(fragment, int width=2):
    """Decode μ-law to little-endian PCM16; ``width`` must be 2."""
    _check_width(width)
    return _convert(OP_ULAW2LIN, fragment)


def alaw2lin(fragment, int width=2):
    """Decode A-law to little-endian PCM16; ``width`` must be 2."""
    _check_width(width)
    return _convert(OP_ALAW2LIN, fragment)


def ulaw2alaw(fragment):
    """Transcode μ-law to A-law through a 256-entry table (decode-then-encode)."""
    return _convert(OP_ULAW2ALAW, fragment)


def alaw2ulaw(fragment):
    """Transcode A-law to μ-law through a 256-entry table (decode-then-encode)."""
    return _convert(OP_ALAW2ULAW, fragment)


def lin2ulaw_into(src, dst):
    """Encode PCM16 ``src`` to μ-law into the writable buffer ``dst``; return bytes written."""
    return _convert_into(OP_LIN2ULAW, src, dst)


def lin2alaw_into(src, dst):
    """Encode PCM16 ``src`` to A-law into the writable buffer ``dst``; return bytes written."""
    return _convert_into(OP_LIN2ALAW, src, dst)


def ulaw2lin_into(src, dst):
    """Decode μ-law ``src`` to PCM16 into ``dst``; return bytes written."""
    return _convert_into(OP_ULAW2LIN, src, dst)


def alaw2lin_into(src, dst):
    """Decode A-law ``src`` to PCM16 into ``dst``; return bytes written."""
    return _convert_into(OP_ALAW2LIN, src, dst)


def ulaw2alaw_into(src, dst):
    """Transcode μ-law ``src`` to A-law into ``dst``; return bytes written."""
    return _convert_into(OP_ULAW2ALAW, src, dst)


def alaw2ulaw_into(src, dst):
    """Transcode A-law ``src`` to μ-law into ``dst``; return bytes written."""
    return _convert_into(OP_ALAW2ULAW, src, dst)


# ---- encoder variants (for tests and benchmarks) ----

def _encode_variants():
    """Names of the encode kernels this build and CPU can run; the default one first."""
    cdef int v
    names = [pbx_g711_variant_name(v).decode() for v in range(PBX_G711_NVARIANTS - 1, -1, -1)
             if pbx_g711_variant_supported(v)]
    return tuple(names)


def _encode_variant():
    """Name of the encode kernel in use."""
    return pbx_g711_variant_name(pbx_g711_selected()).decode()


def _set_encode_variant(str name):
    """Use the named encode kernel from now on (process-wide); for tests and benchmarks."""
    cdef int v
    for v in range(PBX_G711_NVARIANTS):
        if pbx_g711_variant_name(v).decode() == name:
            if pbx_g711_select(v) != 0:
                raise ValueError(f"G.711 encode variant {name!r} is not supported on this CPU")
            return
    raise ValueError(f"unknown G.711 encode variant {name!r}")
