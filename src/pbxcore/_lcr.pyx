# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Digit trie for least-cost routing: longest-prefix match over flat arrays.

Layout: 8-byte nodes (first child, 10-bit child mask, value); the children of a node are one
contiguous block, so a step is one load and a popcount. Blocks are laid out depth-first, so
the single-child chains that make up the tails of long prefixes sit in consecutive nodes.
A node's value is that of the longest prefix ending at it or above it, so a lookup reads one
value, at the end; values that do not fit the node's 26-bit field live in a side array.
A jump table over the first few digits (10**k node copies, k chosen from the table size)
replaces the top of the walk with one load. Nothing is a Python object per node, and the trie
never changes after it is built: readers need no lock, an update builds a new trie and swaps
a reference.

Build: prefixes are packed into 128-bit keys (a nibble per digit, digit + 1, 0 = end); the
depth-first build partitions the keys by their next digit on the way down (an MSD radix sort
fused with the build), with no comparison sort.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLong
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    void* PyUnicode_DATA(object o)
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.math cimport log
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

import numpy as np

cdef extern from *:
    """
    static inline int pbx_popcount(unsigned int v) { return __builtin_popcount(v); }
    static inline int pbx_clzll(unsigned long long v) { return __builtin_clzll(v); }
    #define PBX_PREFETCH(p) __builtin_prefetch((p), 0, 1)
    /* Borrowed pointers, only prefetched: the list owns the objects, no Python code runs. */
    static inline void pbx_prefetch_pair(PyObject* list, Py_ssize_t near, Py_ssize_t far) {
        Py_ssize_t n = PyList_GET_SIZE(list);
        if (far < n) __builtin_prefetch(PyList_GET_ITEM(list, far), 0, 1);
        if (near < n) {
            PyObject* item = PyList_GET_ITEM(list, near);
            if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) {
                __builtin_prefetch(PyTuple_GET_ITEM(item, 0), 0, 1);
                __builtin_prefetch(PyTuple_GET_ITEM(item, 1), 0, 1);
            }
        }
    }
    """
    int pbx_popcount(unsigned int v) noexcept nogil
    int pbx_clzll(unsigned long long v) noexcept nogil
    void PBX_PREFETCH(const void* p) noexcept nogil
    void pbx_prefetch_pair(list lst, Py_ssize_t near, Py_ssize_t far) noexcept

cdef extern from *:
    """
    #include <stdlib.h>
    #include <sys/mman.h>
    static inline void* pbx_map(size_t n) {
        void* p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    static inline void pbx_unmap(void* p, size_t n) { munmap(p, n); }
    static inline void pbx_advise_huge(void* p, size_t n) {
    #ifdef MADV_HUGEPAGE
        madvise(p, n, MADV_HUGEPAGE);
    #endif
    }
    """
    void pbx_advise_huge(void* p, size_t n) noexcept nogil
    void* pbx_map(size_t n) noexcept nogil
    void pbx_unmap(void* p, size_t n) noexcept nogil

cdef enum:
    MAX_JUMP_DEPTH = 6      # 10**6 entries * 8 bytes: worth it from ~1M prefixes
    MAP_THRESHOLD = 1 << 20  # larger blocks are mapped: given back to the system when freed
    BATCH = 32              # lookups walked in lockstep by lookup_many (memory parallelism)
    SMALL_GROUP = 64        # route groups up to this size are ordered in stack buffers


# Node word: child index (27 bits) | value field (26 bits) | own-value flag | child mask (10).
cdef enum:
    N_OWN_SHIFT = 10
    N_VALUE_SHIFT = 11
    N_CHILD_SHIFT = 37
    N_NONE = 0x3FFFFFF          # value field: no prefix
    MAX_NODES = 1 << 27

cdef inline LcrNode _node(uint64_t child, uint64_t mask, uint64_t own,
                          uint64_t value) noexcept nogil:
    return ((child << N_CHILD_SHIFT) | (value << N_VALUE_SHIFT) | (own << N_OWN_SHIFT) | mask)


cdef inline unsigned int _mask(LcrNode w) noexcept nogil:
    return <unsigned int>(w & 0x3FF)


cdef inline uint32_t _child(LcrNode w) noexcept nogil:
    return <uint32_t>(w >> N_CHILD_SHIFT)


cdef inline uint32_t _field(LcrNode w) noexcept nogil:
    return <uint32_t>((w >> N_VALUE_SHIFT) & N_NONE)


# ---- number validation (shared by every entry point) ----

cdef inline Py_ssize_t _digits(const char* number, Py_ssize_t n,
                               const char** out) noexcept nogil:
    # Strip one leading '+'; return the digit count, or -1 if this is not a number.
    cdef Py_ssize_t i
    if n > 0 and number[0] == 43:   # '+'
        number += 1
        n -= 1
    if n == 0 or n > LCR_MAX_DIGITS:
        return -1
    for i in range(n):
        if <unsigned char>(number[i] - 48) > 9:
            return -1
    out[0] = number
    return n


cdef str _describe(object number):
    # The precise reason `number` is rejected (called only after validation failed).
    if isinstance(number, bytes):
        text = (<bytes>number).decode("ascii", "replace")
    else:
        text = number
    digits = text[1:] if text.startswith("+") else text
    if not digits:
        return f"empty number {number!r}"
    for ch in digits:
        if not ("0" <= ch <= "9"):
            return f"number {number!r} has {ch!r}, which is not a digit"
    return f"number {number!r} has {len(digits)} digits, more than {LCR_MAX_DIGITS}"


cdef inline const char* _as_chars(object number, Py_ssize_t* n) except NULL:
    if type(number) is str:
        if PyUnicode_IS_COMPACT_ASCII(number):
            # the common case: the characters are the object's own bytes, no call needed
            n[0] = PyUnicode_GET_LENGTH(number)
            return <const char*>PyUnicode_DATA(number)
        return PyUnicode_AsUTF8AndSize(number, n)
    if type(number) is bytes:
        n[0] = PyBytes_GET_SIZE(number)
        return PyBytes_AS_STRING(number)
    if isinstance(number, str):
        return PyUnicode_AsUTF8AndSize(number, n)
    raise TypeError(f"a number must be str, not {type(number).__name__}")


# ---- walks ----

cdef inline const LcrNode* _descend(const LcrNode* nodes, const LcrNode* jump,
                                    int jump_depth, const char* p,
                                    Py_ssize_t n) noexcept nogil:
    # the deepest node on the path of p[0:n] (digits only); its value is the answer
    cdef const LcrNode* node
    cdef Py_ssize_t i = 0
    cdef unsigned int c, m
    cdef size_t j = 0
    if n >= jump_depth:
        for i in range(jump_depth):
            j = j * 10 + <unsigned int>(p[i] - 48)
        node = &jump[j]
        i = jump_depth
    else:
        node = nodes
    while i < n:
        c = <unsigned int>(p[i] - 48)
        m = _mask(node[0])
        if not ((m >> c) & 1):
            break
        node = &nodes[_child(node[0]) + <uint32_t>pbx_popcount(m & ((1u << c) - 1))]
        i += 1
    return node


# One lookup of a lockstep batch (see RouteTrie._walk_batch).
cdef struct Cursor:
    const char* p
    Py_ssize_t n
    Py_ssize_t i            # next digit
    const LcrNode* node     # prefetched: read in the next round
    Py_ssize_t out


cdef class RouteTrie:
    """Longest-prefix match from digit prefixes to non-negative ints.

    ``RouteTrie(pairs)`` builds from an iterable of ``(prefix, value)``: a prefix is a string of
    digits 0-9 of at most 32 (``""`` is the default route), a value an int in
    ``0 <= value < 2**63``; when a prefix repeats, the last pair wins. The trie is immutable
    and may be read from any thread.

    A number is a str (or bytes) of 1-32 digits after an optional leading ``+``; anything else
    raises ``ValueError``.
    """

    def __cinit__(self, pairs):
        cdef BuildKey* keys = NULL
        cdef BuildKey* tmp = NULL
        cdef int64_t* values = NULL
        cdef Py_ssize_t count = 0, cap = 0, digits = 0
        cdef int64_t largest = -1
        self.nodes = NULL
        self.jump = NULL
        self.slots = NULL
        self.slots_size = 0
        self.nodes_size = 0
        self.jump_size = 0
        try:
            cap = len(pairs) if hasattr(pairs, "__len__") else 1024
            cap = max(cap, 16)
            keys = <BuildKey*>_acquire(cap * sizeof(BuildKey))
            values = <int64_t*>_acquire(cap * sizeof(int64_t))
            if keys == NULL or values == NULL:
                raise MemoryError()
            if type(pairs) is list:
                # index loop with prefetch: the pairs and their strings are scattered in
                # memory, and touching 1M of them one miss at a time is most of the build
                lst = <list>pairs
                while count < len(lst):
                    pbx_prefetch_pair(lst, count + 4, count + 8)
                    if count == cap:
                        _grow_keys(&keys, &values, &cap)
                    _parse_pair(lst[count], &keys[count], &values[count], count)
                    digits += keys[count].length
                    if values[count] > largest:
                        largest = values[count]
                    count += 1
            else:
                for item in pairs:
                    if count == cap:
                        _grow_keys(&keys, &values, &cap)
                    _parse_pair(item, &keys[count], &values[count], count)
                    digits += keys[count].length
                    if values[count] > largest:
                        largest = values[count]
                    count += 1
            if count >= <Py_ssize_t>MAX_NODES:
                raise ValueError("too many prefixes for one trie")
            tmp = <BuildKey*>_acquire(max(count, 1) * sizeof(BuildKey))
            if tmp == NULL:
                raise MemoryError()
            self.direct = largest < N_NONE
            self._build(keys, tmp, values, count, digits)
        finally:
            _release(keys, cap * sizeof(BuildKey))
            _release(values, cap * sizeof(int64_t))
            _release(tmp, max(count, 1) * sizeof(BuildKey))

    cdef int _build(self, BuildKey* keys, BuildKey* tmp, const int64_t* values,
                    Py_ssize_t count, Py_ssize_t digits) except -1:
        # Depth-first, partitioning the keys by their next digit on the way down (an MSD
        # radix sort fused with the build). A node's children get a contiguous block when the
        # node is visited, so a chain of single children lies in consecutive nodes.
        cdef Py_ssize_t bound = digits + 1, n_nodes
        cdef Py_ssize_t prefixes = 0, size = 10
        cdef int depth = 1
        if bound >= <Py_ssize_t>MAX_NODES or count >= <Py_ssize_t>N_NONE:
            raise ValueError(f"table too large: at most {MAX_NODES - 1} digits and "
                             f"{N_NONE - 1} prefixes")
        # jump table over k digits with 10**k close to the prefix count
        while depth < MAX_JUMP_DEPTH and size * 10 <= count:
            depth += 1
            size *= 10
        self.jump_size = size * sizeof(LcrNode)
        self.jump = <LcrNode*>_acquire(self.jump_size)
        if self.jump == NULL:
            raise MemoryError()
        self.jump_depth = depth
        self.n_jump = size
        if not self.direct:
            self.slots_size = max(count, 1) * sizeof(int64_t)
            self.slots = <int64_t*>_acquire(self.slots_size)
            if self.slots == NULL:
                raise MemoryError()
        # room for the worst case (no shared digits); the unused tail is given back below
        self.nodes_size = bound * sizeof(LcrNode)
        self.nodes = <LcrNode*>_acquire(self.nodes_size)
        if self.nodes == NULL:
            raise MemoryError()
        with nogil:
            n_nodes = _build_dfs(keys, tmp, values, count, self.nodes, self.jump, depth,
                                 self.slots, &prefixes)
            self.nodes = <LcrNode*>_shrink(self.nodes, &self.nodes_size,
                                           n_nodes * sizeof(LcrNode))
            if self.slots != NULL:
                self.slots = <int64_t*>_shrink(self.slots, &self.slots_size,
                                               max(prefixes, 1) * sizeof(int64_t))
        self.n_nodes = n_nodes
        self.n_prefixes = prefixes
        return 0

    def __dealloc__(self):
        _release(self.nodes, self.nodes_size)
        _release(self.jump, self.jump_size)
        _release(self.slots, self.slots_size)

    cdef inline int64_t _value(self, LcrNode w) noexcept nogil:
        cdef uint32_t v = _field(w)
        if v == N_NONE:
            return -1
        return v if self.direct else self.slots[v]

    # ---- C-level API (see _lcr.pxd) ----

    cdef int64_t find(self, const char* number, Py_ssize_t n) noexcept nogil:
        cdef const char* p = NULL
        n = _digits(number, n, &p)
        if n < 0:
            return LCR_INVALID
        return self._value(_descend(self.nodes, self.jump, self.jump_depth, p, n)[0])

    cdef int find_all(self, const char* number, Py_ssize_t n,
                      int* lengths, int64_t* values) noexcept nogil:
        cdef const char* p = NULL
        cdef int count = 0, depth = 0, k
        cdef LcrNode path[LCR_MAX_DIGITS + 1]
        cdef LcrNode w
        cdef Py_ssize_t i
        cdef unsigned int c, m
        n = _digits(number, n, &p)
        if n < 0:
            return LCR_INVALID
        w = self.nodes[0]
        path[0] = w
        for i in range(n):
            c = <unsigned int>(p[i] - 48)
            m = _mask(w)
            if not ((m >> c) & 1):
                break
            w = self.nodes[_child(w) + <uint32_t>pbx_popcount(m & ((1u << c) - 1))]
            depth += 1
            path[depth] = w
        # longest first
        for k in range(depth, -1, -1):
            if (path[k] >> N_OWN_SHIFT) & 1:
                lengths[count] = k
                values[count] = self._value(path[k])
                count += 1
        return count

    # ---- Python API ----

    def lookup(self, number):
        """Value of the longest prefix of ``number`` that is in the trie, or None."""
        cdef Py_ssize_t n
        cdef const char* p = _as_chars(number, &n)
        cdef int64_t v = self.find(p, n)
        if v >= 0:
            return v
        if v == LCR_INVALID:
            raise ValueError(_describe(number))
        return None

    def matches(self, number):
        """Every ``(prefix_length, value)`` matching ``number``, longest first."""
        cdef Py_ssize_t n
        cdef const char* p = _as_chars(number, &n)
        cdef int lengths[LCR_MAX_DIGITS + 1]
        cdef int64_t values[LCR_MAX_DIGITS + 1]
        cdef int count = self.find_all(p, n, lengths, values), i
        if count == LCR_INVALID:
            raise ValueError(_describe(number))
        return [(lengths[i], values[i]) for i in range(count)]

    def lookup_many(self, numbers):
        """Look up every number; int64 array with -1 where nothing matches.

        ``numbers`` is a sequence of str (or bytes) or a 1-D numpy array of ``S``/``U``
        strings. The walk runs with the GIL released. An invalid number raises ValueError
        naming its index.
        """
        cdef Py_ssize_t n, i, bad = -1
        cdef const char** ptrs = NULL
        cdef Py_ssize_t* lens = NULL
        cdef int64_t[::1] out
        if isinstance(numbers, np.ndarray):
            if numbers.ndim != 1:
                raise ValueError(f"numbers must be a 1-D array, got {numbers.ndim} dimensions")
            kind = numbers.dtype.kind
            if kind == "S":
                return self._many_fixed(numbers, 1)
            if kind == "U":
                return self._many_fixed(numbers, 4)
            if kind != "O":
                raise TypeError(f"numbers must be strings, got a {numbers.dtype} array")
        # a private tuple: its items stay alive while the walk runs without the GIL
        cdef tuple items = tuple(numbers)
        n = len(items)
        result = np.empty(n, dtype=np.int64)
        out = result
        if n == 0:
            return result
        ptrs = <const char**>PyMem_Malloc(n * sizeof(char*))
        lens = <Py_ssize_t*>PyMem_Malloc(n * sizeof(Py_ssize_t))
        try:
            if ptrs == NULL or lens == NULL:
                raise MemoryError()
            for i in range(n):
                try:
                    ptrs[i] = _as_chars(items[i], &lens[i])
                except TypeError:
                    raise TypeError(f"numbers[{i}] must be str, not "
                                    f"{type(items[i]).__name__}") from None
            with nogil:
                bad = self._walk_batch(ptrs, lens, n, &out[0])
        finally:
            PyMem_Free(ptrs)
            PyMem_Free(lens)
        if bad >= 0:
            raise ValueError(f"numbers[{bad}]: {_describe(items[bad])}")
        return result

    cdef object _many_fixed(self, object array, int width):
        # numpy S (width 1) or U (width 4, UCS4) array: fixed-size NUL-padded items
        cdef Py_ssize_t n = array.shape[0], i, j, size, bad = -1
        cdef Py_ssize_t chars = array.dtype.itemsize // width
        cdef const uint8_t[:, ::1] raw
        cdef const uint32_t[:, ::1] wide
        cdef int64_t[::1] out
        cdef char* buf = NULL
        cdef const char** ptrs = NULL
        cdef Py_ssize_t* lens = NULL
        cdef uint32_t ch
        result = np.empty(n, dtype=np.int64)
        out = result
        if n == 0:
            return result
        contiguous = np.ascontiguousarray(array)
        if chars == 0:
            raise ValueError(f"numbers[0]: {_describe('')}")
        ptrs = <const char**>PyMem_Malloc(n * sizeof(char*))
        lens = <Py_ssize_t*>PyMem_Malloc(n * sizeof(Py_ssize_t))
        try:
            if ptrs == NULL or lens == NULL:
                raise MemoryError()
            if width == 1:
                raw = contiguous.view(np.uint8).reshape(n, chars)
                with nogil:
                    for i in range(n):
                        size = chars
                        while size > 0 and raw[i, size - 1] == 0:
                            size -= 1
                        ptrs[i] = <const char*>&raw[i, 0]
                        lens[i] = size
                    bad = self._walk_batch(ptrs, lens, n, &out[0])
            else:
                wide = contiguous.view(np.uint32).reshape(n, chars)
                # UCS4 -> one byte per character (non-ASCII becomes 0xFF and fails validation)
                buf = <char*>PyMem_Malloc(n * chars)
                if buf == NULL:
                    raise MemoryError()
                with nogil:
                    for i in range(n):
                        size = chars
                        while size > 0 and wide[i, size - 1] == 0:
                            size -= 1
                        for j in range(size):
                            ch = wide[i, j]
                            buf[i * chars + j] = <char>(ch if ch < 128 else 255)
                        ptrs[i] = buf + i * chars
                        lens[i] = size
                    bad = self._walk_batch(ptrs, lens, n, &out[0])
        finally:
            PyMem_Free(ptrs)
            PyMem_Free(lens)
            PyMem_Free(buf)
        if bad >= 0:
            raise ValueError(f"numbers[{bad}]: {_describe(array[bad])}")
        return result

    cdef Py_ssize_t _walk_batch(self, const char** ptrs, const Py_ssize_t* lens, Py_ssize_t n,
                                int64_t* out) noexcept nogil:
        # BATCH walks advance in lockstep, one memory access each per round, prefetching the
        # next one: the cache misses of a large trie overlap instead of queueing.
        # Returns the index of the first invalid number, or -1.
        cdef Cursor cur[BATCH]
        cdef int live = 0, s
        cdef Py_ssize_t nxt = 0, k, size
        cdef const char* p = NULL
        cdef const LcrNode* nodes = self.nodes
        cdef const LcrNode* jump = self.jump
        cdef const LcrNode* node
        cdef int jd = self.jump_depth
        cdef unsigned int c, m
        cdef size_t j
        while True:
            while live < BATCH and nxt < n:
                size = _digits(ptrs[nxt], lens[nxt], &p)
                if size < 0:
                    return nxt
                if size < jd:
                    # short numbers stay in the top levels, which are in cache
                    out[nxt] = self._value(_descend(nodes, jump, jd, p, size)[0])
                    nxt += 1
                    continue
                j = 0
                for k in range(jd):
                    j = j * 10 + <unsigned int>(p[k] - 48)
                PBX_PREFETCH(&jump[j])
                cur[live].p = p
                cur[live].n = size
                cur[live].i = jd
                cur[live].node = &jump[j]
                cur[live].out = nxt
                live += 1
                nxt += 1
            if live == 0:
                return -1
            s = 0
            while s < live:
                node = cur[s].node
                if cur[s].i < cur[s].n:
                    c = <unsigned int>(cur[s].p[cur[s].i] - 48)
                    m = _mask(node[0])
                    if (m >> c) & 1:
                        node = &nodes[_child(node[0]) + <uint32_t>pbx_popcount(
                            m & ((1u << c) - 1))]
                        cur[s].node = node
                        cur[s].i += 1
                        PBX_PREFETCH(node)
                        s += 1
                        continue
                # done: the deepest node holds the answer; refill this slot from the last
                out[cur[s].out] = self._value(node[0])
                live -= 1
                cur[s] = cur[live]

    def __len__(self):
        """Number of distinct prefixes."""
        return self.n_prefixes

    @property
    def nbytes(self):
        """Bytes held by the node array, the jump table and the side array of values."""
        return ((self.n_nodes + self.n_jump) * sizeof(LcrNode)
                + (self.n_prefixes * sizeof(int64_t) if not self.direct else 0))

    @property
    def node_count(self):
        """Number of trie nodes (the root included)."""
        return self.n_nodes

    def __repr__(self):
        return (f"<RouteTrie prefixes={self.n_prefixes} nodes={self.n_nodes} "
                f"nbytes={self.nbytes}>")


# ---- build helpers ----

cdef int _parse_pair(object item, BuildKey* key, int64_t* value, Py_ssize_t seq) except -1:
    cdef Py_ssize_t n, i
    cdef const char* p
    cdef uint64_t hi = 0, lo = 0, nib
    cdef long long v
    if type(item) is tuple and PyTuple_GET_SIZE(item) == 2:
        prefix = <object>PyTuple_GET_ITEM(item, 0)
        val = <object>PyTuple_GET_ITEM(item, 1)
    else:
        try:
            prefix, val = item
        except (TypeError, ValueError):
            raise TypeError(f"route #{seq} must be a (prefix, value) pair, "
                            f"got {item!r}") from None
    if type(prefix) is not str and not isinstance(prefix, str):
        raise TypeError(f"prefix #{seq} must be str, not {type(prefix).__name__}")
    if type(val) is not int and (not isinstance(val, int) or isinstance(val, bool)):
        raise TypeError(f"value of prefix {prefix!r} must be int, not {type(val).__name__}")
    try:
        v = PyLong_AsLongLong(val)
    except OverflowError:
        v = -1
    if v < 0:
        raise ValueError(f"value of prefix {prefix!r} must be in 0..2**63-1, got {val}")
    p = PyUnicode_AsUTF8AndSize(prefix, &n)
    if n > LCR_MAX_DIGITS:
        raise ValueError(f"prefix {prefix!r} is longer than {LCR_MAX_DIGITS} digits")
    for i in range(n):
        nib = <unsigned char>(p[i] - 48)
        if nib > 9:
            bad = next(ch for ch in prefix if not ("0" <= ch <= "9"))
            raise ValueError(f"prefix {prefix!r} has {bad!r}, which is not a digit")
        nib += 1
        if i < 16:
            hi |= nib << (60 - 4 * i)
        else:
            lo |= nib << (60 - 4 * (i - 16))
    key.hi = hi
    key.lo = lo
    key.seq = <uint32_t>seq
    key.length = <uint8_t>n
    value[0] = v
    return 0


cdef inline unsigned int _nibble(const BuildKey* k, int depth) noexcept nogil:
    # 0 if the key ends before `depth`, else its digit there + 1
    if depth < 16:
        return <unsigned int>((k.hi >> (60 - 4 * depth)) & 15)
    if depth < 32:
        return <unsigned int>((k.lo >> (60 - 4 * (depth - 16))) & 15)
    return 0


cdef enum:
    STACK = 10 * (LCR_MAX_DIGITS + 1) + 1   # pending siblings of one depth-first path


cdef inline void _fill_jump(LcrNode* jump, const Py_ssize_t* span, int jump_depth, int depth,
                            uint64_t path, unsigned int digit, uint32_t value) noexcept nogil:
    # numbers through a node (at `depth`, digits `path`) whose next digit has no child: a
    # childless copy of the node, so a walk that starts there stops with its value
    cdef Py_ssize_t width = span[jump_depth - depth - 1], i
    cdef Py_ssize_t start = <Py_ssize_t>(path * 10 + digit) * width
    cdef LcrNode w = _node(0, 0, 0, value)
    for i in range(start, start + width):
        jump[i] = w


cdef Py_ssize_t _build_dfs(BuildKey* keys, BuildKey* tmp, const int64_t* values,
                           Py_ssize_t count, LcrNode* nodes, LcrNode* jump, int jump_depth,
                           int64_t* slots, Py_ssize_t* prefixes) noexcept nogil:
    # Returns the node count; `nodes` has room for one node per digit plus the root.
    # A node's value field is its own prefix's (own flag set) or else the one it inherits
    # from the longest prefix above it; with `slots`, value fields index slots[].
    # Keys move between `keys` and `tmp` as they are partitioned (s_buf says where a range is).
    cdef uint32_t s_node[STACK]
    cdef uint32_t s_lo[STACK]
    cdef uint32_t s_hi[STACK]
    cdef uint8_t s_depth[STACK]
    cdef uint8_t s_buf[STACK]
    cdef uint32_t s_inherit[STACK]
    cdef uint64_t s_path[STACK]
    cdef Py_ssize_t span[MAX_JUMP_DEPTH + 1]
    cdef Py_ssize_t counts[11]
    cdef Py_ssize_t starts[11]
    cdef BuildKey* bufs[2]
    cdef BuildKey* src
    cdef BuildKey* dst
    cdef int top = 1, d, dd, bucket, nonempty, children, c, buf
    cdef unsigned int dg, other
    cdef Py_ssize_t a, b, i, nxt = 1, found = 0
    cdef uint32_t x, cur, last_seq, inherit, field
    cdef uint64_t path, mask, own
    cdef const BuildKey* k
    bufs[0] = keys
    bufs[1] = tmp
    span[0] = 1
    for i in range(1, MAX_JUMP_DEPTH + 1):
        span[i] = span[i - 1] * 10
    s_node[0] = 0
    s_lo[0] = 0
    s_hi[0] = <uint32_t>count
    s_depth[0] = 0
    s_buf[0] = 0
    s_inherit[0] = N_NONE
    s_path[0] = 0
    while top > 0:
        top -= 1
        x = s_node[top]
        a = s_lo[top]
        b = s_hi[top]
        d = s_depth[top]
        buf = s_buf[top]
        inherit = s_inherit[top]
        path = s_path[top]
        src = bufs[buf]
        if b - a <= 1:
            # at most one key left: its remaining digits are a chain of consecutive nodes
            if b == a:   # only for the root of an empty trie
                nodes[x] = _node(0, 0, 0, N_NONE)
                for other in range(10):
                    _fill_jump(jump, span, jump_depth, 0, 0, other, N_NONE)
                continue
            k = &src[a]
            cur = x
            for dd in range(d, k.length):
                dg = _nibble(k, dd) - 1
                nodes[cur] = _node(<uint64_t>nxt, 1u << dg, 0, inherit)
                if dd == jump_depth:
                    jump[path] = nodes[cur]
                elif dd < jump_depth:
                    for other in range(10):
                        if other != dg:
                            _fill_jump(jump, span, jump_depth, dd, path, other, inherit)
                    path = path * 10 + dg
                cur = <uint32_t>nxt
                nxt += 1
            field = _own_field(values, k.seq, slots, found)
            nodes[cur] = _node(0, 0, 1, field)
            found += 1
            if k.length == jump_depth:
                jump[path] = nodes[cur]
            elif k.length < jump_depth:
                for other in range(10):
                    _fill_jump(jump, span, jump_depth, k.length, path, other, field)
            continue
        memset(counts, 0, sizeof(counts))
        for i in range(a, b):
            counts[_nibble(&src[i], d)] += 1
        nonempty = 0
        starts[0] = a
        for bucket in range(11):
            if bucket:
                starts[bucket] = starts[bucket - 1] + counts[bucket - 1]
            if counts[bucket]:
                nonempty += 1
        if nonempty > 1:
            buf = 1 - buf
            dst = bufs[buf]
            for i in range(a, b):
                bucket = _nibble(&src[i], d)
                dst[starts[bucket]] = src[i]
                starts[bucket] += 1
            for bucket in range(11):
                starts[bucket] -= counts[bucket]
            src = dst
        field = inherit
        own = 0
        if counts[0]:
            # the prefix ends here (repeated: the last pair wins)
            last_seq = src[a].seq
            for i in range(a + 1, a + counts[0]):
                if src[i].seq > last_seq:
                    last_seq = src[i].seq
            field = _own_field(values, last_seq, slots, found)
            own = 1
            found += 1
        if d < jump_depth:
            for bucket in range(1, 11):
                if not counts[bucket]:
                    _fill_jump(jump, span, jump_depth, d, path, bucket - 1, field)
        children = nonempty - (1 if counts[0] else 0)
        mask = 0
        if children:
            c = children
            # push in reverse digit order so that the lowest digit is visited next
            for bucket in range(10, 0, -1):
                if counts[bucket]:
                    c -= 1
                    mask |= 1u << (bucket - 1)
                    s_node[top] = <uint32_t>(nxt + c)
                    s_lo[top] = <uint32_t>starts[bucket]
                    s_hi[top] = <uint32_t>(starts[bucket] + counts[bucket])
                    s_depth[top] = <uint8_t>(d + 1)
                    s_buf[top] = <uint8_t>buf
                    s_inherit[top] = field
                    s_path[top] = path * 10 + <uint64_t>(bucket - 1) if d < jump_depth else 0
                    top += 1
        nodes[x] = _node(<uint64_t>nxt if children else 0, mask, own, field)
        nxt += children
        if d == jump_depth:
            jump[path] = nodes[x]
    prefixes[0] = found
    return nxt


cdef inline uint32_t _own_field(const int64_t* values, uint32_t seq, int64_t* slots,
                                Py_ssize_t slot) noexcept nogil:
    # the value field of a prefix: the value itself, or its slot in the side array
    if slots == NULL:
        return <uint32_t>values[seq]
    slots[slot] = values[seq]
    return <uint32_t>slot


cdef void* _acquire(size_t size) noexcept nogil:
    # Large blocks are mapped on their own (on 2 MB pages where the kernel offers them: a
    # walk touches a few random nodes, and TLB misses would cost as much as cache misses),
    # so that freeing them gives the memory back instead of leaving it in malloc's heap.
    cdef void* p
    if size < MAP_THRESHOLD:
        return malloc(size if size else 1)
    p = pbx_map(size)
    if p != NULL:
        pbx_advise_huge(p, size)
    return p


cdef void _release(void* p, size_t size) noexcept nogil:
    if p == NULL:
        return
    if size < MAP_THRESHOLD:
        free(p)
    else:
        pbx_unmap(p, size)


cdef void* _shrink(void* p, size_t* size, size_t used) noexcept nogil:
    # give back the tail of a block past `used` bytes; returns the (same or moved) block
    cdef size_t page = 4096, keep
    cdef void* q
    if size[0] < MAP_THRESHOLD:
        q = realloc(p, used if used else 1)
        if q != NULL:
            size[0] = used if used else 1
            return q
        return p
    keep = (used + page - 1) & ~(page - 1)
    if keep < MAP_THRESHOLD:
        keep = MAP_THRESHOLD   # still a mapped block for _release
    if keep < size[0]:
        pbx_unmap(<char*>p + keep, size[0] - keep)
        size[0] = keep
    return p


cdef int _grow_keys(BuildKey** keys, int64_t** values, Py_ssize_t* cap) except -1:
    # double the build arrays (an iterable without a length)
    cdef Py_ssize_t old = cap[0], new = old * 2
    cdef BuildKey* k = <BuildKey*>_acquire(new * sizeof(BuildKey))
    cdef int64_t* v = <int64_t*>_acquire(new * sizeof(int64_t))
    if k == NULL or v == NULL:
        _release(k, new * sizeof(BuildKey))
        _release(v, new * sizeof(int64_t))
        raise MemoryError()
    memcpy(k, keys[0], old * sizeof(BuildKey))
    memcpy(v, values[0], old * sizeof(int64_t))
    _release(keys[0], old * sizeof(BuildKey))
    _release(values[0], old * sizeof(int64_t))
    keys[0] = k
    values[0] = v
    cap[0] = new
    return 0


# ---- trunk order for a call (the hot path of RouteTable.candidates) ----

cdef inline uint64_t _splitmix64(uint64_t* state) noexcept nogil:
    cdef uint64_t z
    state[0] += <uint64_t>0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef class CandidateIndex:
    """Trunk order per trie value: priority tiers, weighted draw, optional fallthrough.

    Entries of group ``g`` are ``group_starts[g]:group_starts[g + 1]`` in priority order; the
    tier of entry ``i`` ends at ``tier_ends[i]``. Within a tier, entries with
    ``inv_weights[i] > 0`` are drawn by weighted random order (Efraimidis-Spirakis: by
    ``log(u) / weight``, largest first), then the others follow in stored order. ``seed``
    (an int) makes a call's draw reproducible; None draws from the index's own generator.
    """

    def __cinit__(self, RouteTrie trie not None, tuple trunks not None, group_starts,
                  tier_ends, inv_weights, bint fallthrough, uint64_t seed):
        cdef Py_ssize_t n = len(trunks), groups = len(group_starts) - 1, i
        self.trie = trie
        self.trunks = trunks
        self.fallthrough = fallthrough
        self.state = seed
        self.n_groups = groups
        self.group_starts = NULL
        self.tier_ends = NULL
        self.inv_weights = NULL
        if groups < 0 or len(tier_ends) != n or len(inv_weights) != n:
            raise ValueError("inconsistent candidate index arrays")
        self.group_starts = <uint32_t*>PyMem_Malloc((groups + 1) * sizeof(uint32_t))
        self.tier_ends = <uint32_t*>PyMem_Malloc(max(n, 1) * sizeof(uint32_t))
        self.inv_weights = <double*>PyMem_Malloc(max(n, 1) * sizeof(double))
        if self.group_starts == NULL or self.tier_ends == NULL or self.inv_weights == NULL:
            raise MemoryError()
        for i in range(groups + 1):
            self.group_starts[i] = group_starts[i]
            if self.group_starts[i] > n or (i and self.group_starts[i] < self.group_starts[i - 1]):
                raise ValueError("group_starts must be ascending offsets into trunks")
        for i in range(n):
            self.tier_ends[i] = tier_ends[i]
            self.inv_weights[i] = inv_weights[i]
            if self.tier_ends[i] <= i or self.tier_ends[i] > n or self.inv_weights[i] < 0:
                raise ValueError("tier_ends/inv_weights out of range")

    def __dealloc__(self):
        PyMem_Free(self.group_starts)
        PyMem_Free(self.tier_ends)
        PyMem_Free(self.inv_weights)

    cdef int _groups(self, object number, int64_t* found) except -1:
        # the groups a call uses, longest prefix first
        cdef Py_ssize_t n
        cdef const char* p = _as_chars(number, &n)
        cdef int lengths[LCR_MAX_DIGITS + 1]
        cdef int count, g
        cdef int64_t v
        if self.fallthrough:
            count = self.trie.find_all(p, n, lengths, found)
        else:
            v = self.trie.find(p, n)
            count = LCR_INVALID if v == LCR_INVALID else (0 if v < 0 else 1)
            found[0] = v
        if count == LCR_INVALID:
            raise ValueError(_describe(number))
        for g in range(count):
            if found[g] >= self.n_groups:
                raise ValueError(f"trie value {found[g]} is not a group of this index")
        return count

    cdef Py_ssize_t _order(self, int64_t group, uint64_t* state, uint32_t* out,
                           double* keys) noexcept nogil:
        # entry indices of one group in call order (out and keys have room for the group)
        cdef uint32_t i = self.group_starts[group], end = self.group_starts[group + 1]
        cdef uint32_t tier_end, j
        cdef Py_ssize_t count = 0, first, drawn, k
        cdef double key, u
        while i < end:
            tier_end = self.tier_ends[i]
            first = count
            drawn = 0
            # weighted entries by descending key (insertion sort: tiers are small)
            for j in range(i, tier_end):
                if self.inv_weights[j] > 0:
                    u = (<double>(_splitmix64(state) >> 11) + 1.0) * (1.0 / 9007199254740992.0)
                    key = log(u) * self.inv_weights[j]
                    k = drawn
                    while k > 0 and keys[first + k - 1] < key:
                        keys[first + k] = keys[first + k - 1]
                        out[first + k] = out[first + k - 1]
                        k -= 1
                    keys[first + k] = key
                    out[first + k] = j
                    drawn += 1
            count += drawn
            for j in range(i, tier_end):
                if not (self.inv_weights[j] > 0):
                    out[count] = j
                    count += 1
            i = tier_end
        return count

    cdef uint64_t _seed(self, object seed) except? 0:
        if seed is None:
            return _splitmix64(&self.state)
        return <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)

    cdef object _walk_groups(self, object number, object down, object seed, bint indices):
        cdef int64_t found[LCR_MAX_DIGITS + 1]
        cdef int count = self._groups(number, found), g
        cdef uint64_t state = self._seed(seed)
        cdef Py_ssize_t n, k
        cdef uint32_t order_buf[SMALL_GROUP]
        cdef double key_buf[SMALL_GROUP]
        cdef uint32_t* order
        cdef double* keys
        cdef list out = []
        cdef bint check_down = not indices and len(down) > 0
        for g in range(count):
            n = self.group_starts[found[g] + 1] - self.group_starts[found[g]]
            order = order_buf
            keys = key_buf
            if n > SMALL_GROUP:
                order = <uint32_t*>PyMem_Malloc(n * sizeof(uint32_t))
                keys = <double*>PyMem_Malloc(n * sizeof(double))
            try:
                if order == NULL or keys == NULL:
                    raise MemoryError()
                n = self._order(found[g], &state, order, keys)
                if indices:
                    out.append((found[g], [order[k] for k in range(n)]))
                    continue
                for k in range(n):
                    trunk = <object>PyTuple_GET_ITEM(self.trunks, order[k])
                    if (check_down and trunk in down) or trunk in out:
                        continue
                    out.append(trunk)
            finally:
                if order != order_buf:
                    PyMem_Free(order)
                    PyMem_Free(keys)
        return out

    def candidates(self, number, down=(), seed=None):
        """Trunk ids for a call, in order, without repeats and without those in ``down``."""
        return self._walk_groups(number, down, seed, False)

    def ordered(self, number, seed=None):
        """``[(group, entry indices in call order), ...]`` before skipping, longest first."""
        return self._walk_groups(number, (), seed, True)


# ---- dial-plan matcher: ordered simple patterns, matched without the regex engine ----

# One pattern atom: a set of ASCII characters repeated min..max times (greedy).
cdef struct DialAtom:
    uint64_t lo         # characters 0-63
    uint64_t hi         # characters 64-127
    int min
    int max

cdef enum:
    DIAL_MAX_LEN = 64       # longer dialled strings go to the regex engine
    DIAL_MAX_GROUPS = 16
    DIAL_MAX_STEPS = 20000  # backtracking budget per rule before handing over to `re`

cdef enum DialKind:
    KIND_INFER = -1
    KIND_INTERNAL = 0
    KIND_NATIONAL = 1
    KIND_INTERNATIONAL = 2
    KIND_EMERGENCY = 3
    KIND_SERVICE = 4
    KIND_INVALID = 5

_KIND_CODES = {
    None: KIND_INFER, "internal": KIND_INTERNAL, "national": KIND_NATIONAL,
    "international": KIND_INTERNATIONAL, "emergency": KIND_EMERGENCY,
    "service": KIND_SERVICE, "invalid": KIND_INVALID,
}


cdef inline bint _in_set(const DialAtom* a, unsigned char c) noexcept nogil:
    if c < 64:
        return (a.lo >> c) & 1
    return (a.hi >> (c - 64)) & 1


cdef int _match_atoms(const DialAtom* atoms, int n_atoms, int i, const unsigned char* s,
                      int pos, int length, int* starts, int* steps) noexcept nogil:
    # fullmatch of atoms[i:] against s[pos:length], greedy first like `re`;
    # 1 match, 0 no match, -1 out of budget
    cdef int run = 0, c, r
    cdef const DialAtom* a
    steps[0] += 1
    if steps[0] > DIAL_MAX_STEPS:
        return -1
    if i == n_atoms:
        starts[i] = pos
        return pos == length
    a = &atoms[i]
    while (a.max < 0 or run < a.max) and pos + run < length and _in_set(a, s[pos + run]):
        run += 1
    if run < a.min:
        return 0
    c = run
    while c >= a.min:
        r = _match_atoms(atoms, n_atoms, i + 1, s, pos + c, length, starts, steps)
        if r != 0:
            starts[i] = pos
            return r
        c -= 1
    return 0


cdef class DialMatcher:
    """Native first pass of a dial plan whose rules are all simple patterns.

    ``rules`` is a list of ``(atoms, groups, parts, kind, description)``: ``atoms`` a list
    of ``(charset_mask, min, max)`` (max -1: unbounded), ``groups`` the ``(first_atom,
    end_atom)`` of each capturing group, ``parts`` the replacement as literal strs and group
    numbers. ``normalize()`` returns a ``result_type`` (e164, kind, rule, reason) or None
    when the regex engine must decide (characters other than digits, ``+*#`` and the
    separators, no rule matching, a pathological pattern).
    """

    cdef DialAtom* atoms
    cdef int* rule_first          # first atom of each rule, plus the end
    cdef list groups              # per rule: tuple of (first_atom, end_atom)
    cdef list parts
    cdef list kinds
    cdef list descriptions
    cdef int n_rules
    cdef str country
    cdef object result_type
    cdef uint64_t strip_lo        # separators dropped before matching
    cdef uint64_t dial_lo         # characters a rule may see (digits + * #)

    def __cinit__(self, list rules not None, country_code, result_type):
        cdef Py_ssize_t total = 0, k = 0
        cdef int r
        self.atoms = NULL
        self.rule_first = NULL
        self.n_rules = len(rules)
        self.country = country_code
        self.result_type = result_type
        self.groups = []
        self.parts = []
        self.kinds = []
        self.descriptions = []
        for atoms, groups, parts, kind, description in rules:
            total += len(atoms)
            if len(groups) > DIAL_MAX_GROUPS:
                raise ValueError("too many groups in a dial-plan rule")
            for part in parts:
                if not isinstance(part, str) and not 0 <= part <= len(groups):
                    raise ValueError(f"replacement refers to missing group {part}")
            self.groups.append(tuple(groups))
            self.parts.append(tuple(parts))
            self.kinds.append((_KIND_CODES[kind], kind))
            self.descriptions.append(description)
        self.atoms = <DialAtom*>PyMem_Malloc(max(total, 1) * sizeof(DialAtom))
        self.rule_first = <int*>PyMem_Malloc((self.n_rules + 1) * sizeof(int))
        if self.atoms == NULL or self.rule_first == NULL:
            raise MemoryError()
        for r in range(self.n_rules):
            self.rule_first[r] = <int>k
            for mask, lo, hi in rules[r][0]:
                self.atoms[k].lo = <uint64_t>(mask & 0xFFFFFFFFFFFFFFFF)
                self.atoms[k].hi = <uint64_t>((mask >> 64) & 0xFFFFFFFFFFFFFFFF)
                self.atoms[k].min = lo
                self.atoms[k].max = hi
                k += 1
            if len(rules[r][0]) > DIAL_MAX_LEN:
                raise ValueError("too many atoms in a dial-plan rule")
            for first, end in self.groups[r]:
                if not 0 <= first <= end <= len(rules[r][0]):
                    raise ValueError("group outside its rule")
        self.rule_first[self.n_rules] = <int>k
        self.strip_lo = 0
        for ch in (32, 45, 46, 40, 41, 9):   # " -.()" and tab
            self.strip_lo |= (<uint64_t>1) << <int>ch
        self.dial_lo = (<uint64_t>1) << 43 | (<uint64_t>1) << 42 | (<uint64_t>1) << 35
        for ch in range(48, 58):
            self.dial_lo |= (<uint64_t>1) << <int>ch

    def __dealloc__(self):
        PyMem_Free(self.atoms)
        PyMem_Free(self.rule_first)

    def normalize(self, dialed):
        """The first matching rule's result, or None to let the regex engine decide."""
        cdef Py_ssize_t n, i
        cdef const char* raw
        cdef unsigned char buf[DIAL_MAX_LEN]
        cdef unsigned char out[2 * DIAL_MAX_LEN + 64]
        cdef int length = 0, r, first, n_atoms, steps, m, g, kind_code, olen, a, b
        cdef int starts[DIAL_MAX_LEN + 1]
        cdef unsigned char c
        cdef bytes lit
        if type(dialed) is not str:
            return None
        raw = PyUnicode_AsUTF8AndSize(dialed, &n)
        for i in range(n):
            c = <unsigned char>raw[i]
            if c < 64 and (self.strip_lo >> c) & 1:
                continue
            if c >= 64 or not ((self.dial_lo >> c) & 1) or length == DIAL_MAX_LEN:
                return None
            buf[length] = c
            length += 1
        if length == 0:
            return None
        for r in range(self.n_rules):
            first = self.rule_first[r]
            n_atoms = self.rule_first[r + 1] - first
            steps = 0
            m = _match_atoms(&self.atoms[first], n_atoms, 0, buf, 0, length, starts, &steps)
            if m < 0:
                return None
            if m == 0:
                continue
            kind_code, kind = self.kinds[r]
            description = self.descriptions[r]
            if kind_code == KIND_INVALID:
                return tuple.__new__(self.result_type, (None, "invalid", description,
                                                        description))
            groups = <tuple>self.groups[r]
            olen = 0
            for part in <tuple>self.parts[r]:
                if isinstance(part, str):
                    lit = (<str>part).encode("ascii", "replace")
                    if olen + len(lit) > sizeof(out):
                        return None
                    memcpy(&out[olen], <const char*>lit, len(lit))
                    olen += <int>len(lit)
                else:
                    g = part
                    if g == 0:
                        a = 0
                        b = length
                    else:
                        span = <tuple>groups[g - 1]
                        a = starts[<int>span[0]]
                        b = starts[<int>span[1]]
                    if olen + (b - a) > sizeof(out):
                        return None
                    memcpy(&out[olen], &buf[a], b - a)
                    olen += b - a
            result = (<bytes>out[:olen]).decode("ascii")
            if kind_code == KIND_INFER:
                if olen == 0 or out[0] != 43:
                    kind = "internal"
                elif self.country is not None and result.startswith(self.country, 1):
                    kind = "national"
                else:
                    kind = "international"
            if (kind == "national" or kind == "international") and not _is_e164(out, olen):
                return tuple.__new__(self.result_type, (
                    None, "invalid", description,
                    f"{result!r} is not an E.164 number ('+' and 7-15 digits)"))
            return tuple.__new__(self.result_type, (result, kind, description, None))
        return None


cdef inline bint _is_e164(const unsigned char* s, int n) noexcept nogil:
    cdef int i
    if n < 8 or n > 16 or s[0] != 43 or s[1] == 48:
        return False
    for i in range(1, n):
        if <unsigned char>(s[i] - 48) > 9:
            return False
    return True
