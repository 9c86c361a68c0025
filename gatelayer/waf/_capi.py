"""
The C API of libmodsecurity 3 (ModSecurity v3), bound with ctypes: the
functions a connector calls for one request (connection, URI, headers, body,
intervention) and those that load rules. Debian and Ubuntu ship the library
as C{libmodsecurity3}; nothing is compiled and no Python package is needed.
"""

import ctypes
import ctypes.util

__all__ = ["LIBRARY_NAMES", "Intervention", "ModSecurityLibrary", "WafUnavailable", "load_library"]

LIBRARY_NAMES = ("libmodsecurity.so.3", "libmodsecurity.so")
"""The file names tried, in order, before asking C{ctypes.util.find_library}."""

_void_p = ctypes.c_void_p
_char_p = ctypes.c_char_p

LOG_CALLBACK = ctypes.CFUNCTYPE(None, _void_p, _char_p)
"""C{void (*)(void *data, const void *message)}: ModSecurity's log callback,
called with the transaction's log data and a rule's log line (text)."""


class WafUnavailable(Exception):
    """
    libmodsecurity cannot be loaded.
    """


class Intervention(ctypes.Structure):
    """
    C{ModSecurityIntervention}: what a transaction asks the connector to
    do. C{url} and C{log} are allocated by the library and freed by the
    caller.
    """

    _fields_ = [
        ("status", ctypes.c_int),
        ("pause", ctypes.c_int),
        ("url", _void_p),
        ("log", _void_p),
        ("disruptive", ctypes.c_int),
    ]


_SIGNATURES = {
    "msc_init": (_void_p, []),
    "msc_set_connector_info": (None, [_void_p, _char_p]),
    "msc_set_log_cb": (None, [_void_p, LOG_CALLBACK]),
    "msc_cleanup": (None, [_void_p]),
    "msc_create_rules_set": (_void_p, []),
    "msc_rules_add": (ctypes.c_int, [_void_p, _char_p, ctypes.POINTER(_char_p)]),
    "msc_rules_cleanup": (ctypes.c_int, [_void_p]),
    "msc_new_transaction_with_id": (_void_p, [_void_p, _void_p, _char_p, _void_p]),
    "msc_process_connection": (ctypes.c_int, [_void_p, _char_p, ctypes.c_int, _char_p, ctypes.c_int]),
    "msc_process_uri": (ctypes.c_int, [_void_p, _char_p, _char_p, _char_p]),
    "msc_add_n_request_header": (ctypes.c_int, [_void_p, _char_p, ctypes.c_size_t, _char_p, ctypes.c_size_t]),
    "msc_process_request_headers": (ctypes.c_int, [_void_p]),
    "msc_append_request_body": (ctypes.c_int, [_void_p, _char_p, ctypes.c_size_t]),
    "msc_process_request_body": (ctypes.c_int, [_void_p]),
    "msc_intervention": (ctypes.c_int, [_void_p, ctypes.POINTER(Intervention)]),
    "msc_process_logging": (ctypes.c_int, [_void_p]),
    "msc_transaction_cleanup": (None, [_void_p]),
}


class ModSecurityLibrary:
    """
    The loaded library with typed functions (C{lib.msc_init()}, ...), and
    C{free} from the C library for the strings it hands over.

    @ivar path: the file name it was loaded from.
    """

    def __init__(self, cdll, path):
        self.path = path
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(cdll, name)
            function.restype = restype
            function.argtypes = argtypes
            setattr(self, name, function)
        libc = ctypes.CDLL(None)
        self.free = libc.free
        self.free.argtypes = [_void_p]
        self.free.restype = None

    def take_string(self, pointer):
        """
        The bytes of the C string at C{pointer} (a library allocation), freed;
        C{b""} for a null pointer.
        """
        if not pointer:
            return b""
        try:
            return ctypes.string_at(pointer)
        finally:
            self.free(pointer)


def load_library():
    """
    Load the L{ModSecurityLibrary} (the dynamic loader maps it once per
    process, however often this is called).

    @raise WafUnavailable: it is not installed (or lacks a function).
    """
    names = list(LIBRARY_NAMES)
    found = ctypes.util.find_library("modsecurity")
    if found and found not in names:
        names.append(found)
    problems = []
    for name in names:
        try:
            cdll = ctypes.CDLL(name)
        except OSError as e:
            problems.append(str(e))
            continue
        try:
            library = ModSecurityLibrary(cdll, name)
        except AttributeError as e:
            raise WafUnavailable(f"{name} is not libmodsecurity 3: {e}") from None
        return library
    raise WafUnavailable("libmodsecurity 3 is not installed (" + "; ".join(problems[:1]) + ")")
