# cython: language_level=3
# C-level interface of the LCR prefix trie. Call-routing and CDR-rating code cimports RouteTrie
# and calls find() / find_all() on ASCII digit strings with no Python in between.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

cdef enum:
    LCR_MAX_DIGITS = 32    # longest number (and prefix) accepted, '+' not counted
    LCR_NO_MATCH = -1      # find(): no prefix matches
    LCR_INVALID = -2       # find(): not a number (empty, too long, not digits)


# One trie node in 64 bits: first child (27), value field (26), own-value flag, child mask
# (10; bit d: a child for digit d). Children of a node are contiguous in digit order, so the
# child for digit d is at child + popcount(mask & ((1 << d) - 1)).
ctypedef uint64_t LcrNode


# Sort record of the build: the packed digits (a nibble per digit, digit + 1, most significant
# first, 0 = end) and the position in the input (the last of equal prefixes wins).
cdef struct BuildKey:
    uint64_t hi         # digits 0-15
    uint64_t lo         # digits 16-31
    uint32_t seq
    uint8_t length


cdef class RouteTrie:
    cdef LcrNode* nodes
    # per first jump_depth digits: a copy of the node they reach (childless if the number
    # leaves the trie before that depth)
    cdef LcrNode* jump
    cdef int64_t* slots     # values by slot when they do not fit the node (not direct)
    cdef size_t nodes_size  # bytes reserved for nodes / jump / slots
    cdef size_t jump_size
    cdef size_t slots_size
    cdef bint direct        # node value fields hold the values themselves
    cdef Py_ssize_t n_nodes
    cdef Py_ssize_t n_prefixes
    cdef Py_ssize_t n_jump
    cdef int jump_depth

    # Value of the longest prefix of number[0:n] (ASCII, one leading '+' allowed),
    # LCR_NO_MATCH, or LCR_INVALID.
    cdef int64_t find(self, const char* number, Py_ssize_t n) noexcept nogil
    # Every matching prefix, longest first: fills lengths[] and values[] (room for
    # LCR_MAX_DIGITS + 1 each) and returns the count, or LCR_INVALID.
    cdef int find_all(self, const char* number, Py_ssize_t n,
                      int* lengths, int64_t* values) noexcept nogil

    # build and batch internals
    cdef int _build(self, BuildKey* keys, BuildKey* tmp, const int64_t* values,
                    Py_ssize_t count, Py_ssize_t digits) except -1
    cdef int64_t _value(self, LcrNode w) noexcept nogil
    cdef object _many_fixed(self, object array, int width)
    cdef Py_ssize_t _walk_batch(self, const char** ptrs, const Py_ssize_t* lens, Py_ssize_t n,
                                int64_t* out) noexcept nogil


cdef class CandidateIndex:
    cdef RouteTrie trie           # prefix -> group
    cdef tuple trunks             # trunk id per entry
    cdef uint32_t* group_starts   # entries of group g: group_starts[g]:group_starts[g + 1]
    cdef uint32_t* tier_ends      # end of the priority tier of each entry
    cdef double* inv_weights      # 1 / weight for weighted draws, 0: stored order
    cdef Py_ssize_t n_groups
    cdef bint fallthrough
    cdef uint64_t state           # splitmix64 state for calls without a seed

    cdef int _groups(self, object number, int64_t* found) except -1
    cdef Py_ssize_t _order(self, int64_t group, uint64_t* state, uint32_t* out,
                           double* keys) noexcept nogil
    cdef uint64_t _seed(self, object seed) except? 0
    cdef object _walk_groups(self, object number, object down, object seed, bint indices)
