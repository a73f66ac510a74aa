# cython: language_level=3
# C-level G.711 interface. Other extensions (the RTP relay, the jitter buffer) cimport these
# and call them with no Python in between: native-order int16 PCM, one call per packet.
from libc.stdint cimport int16_t, uint8_t

cdef void g711_lin2ulaw(const int16_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil
cdef void g711_lin2alaw(const int16_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil
cdef void g711_ulaw2lin(const uint8_t* src, Py_ssize_t n, int16_t* dst) noexcept nogil
cdef void g711_alaw2lin(const uint8_t* src, Py_ssize_t n, int16_t* dst) noexcept nogil
# In-place is allowed (src == dst).
cdef void g711_ulaw2alaw(const uint8_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil
cdef void g711_alaw2ulaw(const uint8_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil
