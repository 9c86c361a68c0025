"""
The few OpenSSL calls pyOpenSSL does not offer, found in the OpenSSL that
pyOpenSSL itself runs on.

pyOpenSSL works through the bindings of C{cryptography}, which link OpenSSL
statically into one extension module and export none of its functions. That
module keeps its ELF symbol table, though, so the addresses of the functions
are known: this module reads the table (with L{struct}, no new dependency),
finds where the module is loaded from two of its exported functions (they
must agree, which proves the table describes the loaded file), and makes
callable cffi function pointers from the result.

Everything here is defensive. L{load} never raises: it returns a
L{NativeCalls} or the reason it could not (not Linux, not ELF, a symbol
missing, an OpenSSL release other than 3 or 4), and the callers then do
without (per-worker session tickets).
"""

import ctypes
import os
import struct
import sys

from OpenSSL import SSL
from OpenSSL._util import ffi

__all__ = ["NativeCalls", "NativeUnavailable", "load", "elf_symbols"]

#: The OpenSSL major versions this module was written and checked against:
#: C{SSL_CTX_set_tlsext_ticket_key_evp_cb} and C{EVP_MAC} exist since 3.0.
SUPPORTED_MAJORS = (3, 4)

# Function name -> the C signature it is called through.
_SIGNATURES = {
    "OpenSSL_version": "const char *(*)(int)",
    "SSL_CTX_set_tlsext_ticket_key_evp_cb":
        "int (*)(void *, int (*)(void *, unsigned char *, unsigned char *, void *, void *, int))",
    "EVP_aes_256_cbc": "const void *(*)(void)",
    "EVP_EncryptInit_ex": "int (*)(void *, const void *, void *, const unsigned char *, const unsigned char *)",
    "EVP_DecryptInit_ex": "int (*)(void *, const void *, void *, const unsigned char *, const unsigned char *)",
    "EVP_MAC_CTX_set_params": "int (*)(void *, const void *)",
}

# Two functions the extension module exports: where the loader put them,
# minus their symbol values, is the load base; both must give the same.
_ANCHORS = ("PyInit__rust", "PyInit_aead")

_SHT_SYMTAB = 2


class NativeUnavailable(Exception):
    """
    The OpenSSL functions could not be reached safely; the message says why.
    """


class NativeCalls:
    """
    cffi function pointers into the running OpenSSL, by C function name
    (C{calls.EVP_aes_256_cbc()}), and the version string they answered.
    """

    def __init__(self, functions, version):
        self._functions = dict(functions)
        self.version = version

    def __getattr__(self, name):
        try:
            return self._functions[name]
        except KeyError:
            raise AttributeError(name) from None


def elf_symbols(path, wanted):
    """
    C{{name: value}} of the C{wanted} names found in the symbol table
    (C{.symtab}) of the 64-bit little-endian ELF file at C{path}.

    @raise NativeUnavailable: the file is not such an ELF file or has no
        symbol table.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise NativeUnavailable(f"{os.path.basename(path)} is not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    wanted = {name.encode("ascii") for name in wanted}
    found = {}
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != _SHT_SYMTAB or not entsize:
            continue
        strings = sections[link][4]
        for index in range(size // entsize):
            name_at, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", data, offset + index * entsize)
            if not name_at or not value:
                continue
            start = strings + name_at
            end = data.index(b"\0", start)
            name = data[start:end]
            if name in wanted:
                found[name.decode("ascii")] = value
        break
    else:
        raise NativeUnavailable(f"{os.path.basename(path)} has no symbol table (stripped)")
    return found


def _module_path():
    from cryptography.hazmat.bindings import _rust
    return _rust.__file__


def _load():
    if not sys.platform.startswith("linux") or struct.calcsize("P") != 8:
        raise NativeUnavailable("reading OpenSSL's symbols is supported on 64-bit Linux only")
    path = _module_path()
    symbols = elf_symbols(path, list(_SIGNATURES) + list(_ANCHORS))
    missing = sorted(name for name in (*_SIGNATURES, *_ANCHORS) if name not in symbols)
    if missing:
        raise NativeUnavailable(f"OpenSSL functions not found: {', '.join(missing)}")
    # dlopen of a loaded library returns the same handle: no second copy.
    library = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    bases = {ctypes.cast(getattr(library, name), ctypes.c_void_p).value - symbols[name] for name in _ANCHORS}
    if len(bases) != 1:
        raise NativeUnavailable("the symbol table does not describe the loaded OpenSSL module")
    base = bases.pop()
    functions = {name: ffi.cast(signature, base + symbols[name]) for name, signature in _SIGNATURES.items()}
    version = ffi.string(functions["OpenSSL_version"](0)).decode("ascii", "replace")
    expected = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode("ascii", "replace")
    if version != expected:
        raise NativeUnavailable(f"the OpenSSL found ({version!r}) is not pyOpenSSL's ({expected!r})")
    try:
        major = int(version.split()[1].split(".")[0])
    except (IndexError, ValueError):
        raise NativeUnavailable(f"unreadable OpenSSL version {version!r}") from None
    if version.split()[0] != "OpenSSL" or major not in SUPPORTED_MAJORS:
        raise NativeUnavailable(f"{version} is not a release this was written for (OpenSSL 3 or 4)")
    return NativeCalls(functions, version)


def load():
    """
    The native calls, or the L{NativeUnavailable} saying why they cannot be
    had (returned, not raised).
    """
    try:
        return _load()
    except NativeUnavailable as e:
        return e
    except Exception as e:
        # Whatever went wrong, the caller does without: never a crash.
        return NativeUnavailable(f"OpenSSL's symbols could not be read: {type(e).__name__}: {e}")
