# cython: language_level=3
# C-level interface of the REGISTER scanner: a native transport (a future recvmmsg loop)
# can cimport it and call it with no Python call in between.

cpdef object scan_register(bytes data)
cpdef Py_ssize_t nth_crlf(bytes data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t n)
cpdef object split_headers(bytes data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t max_line)
cpdef object parse_via(str value)
cpdef object parse_name_addr(str value)
cpdef object serialize(str start_line, list items, bytes body)
cpdef object first_value(list items, str key)
cpdef list all_values(list items, str key)
cpdef object parse_cseq(str value)
