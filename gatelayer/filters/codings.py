"""
Content codings for the C{compress} filter, without I/O: choosing a
coding from C{Accept-Encoding} (RFC 9110 section 12.5.3), streaming
encoders for C{gzip}, C{br} and C{zstd}, and a bounded decoder for
request bodies that refuses a body growing past a size or a ratio before
it is held in memory.

C{br} needs the C{brotli} package and C{zstd} the C{zstandard} package
(the C{compress} extra); they are imported only when a coding of theirs is
used, and the configuration refuses those codings when the package is
missing.
"""

import functools
import zlib

__all__ = [
    "AcceptEncoding", "DECODABLE", "DecodeError", "DecodeTooLarge", "decode_body", "new_encoder",
    "parse_accept_encoding",
]

DECODABLE = ("gzip", "br", "zstd", "deflate")
"""The request codings decoded when C{decompress_requests} is on (C{x-gzip} is C{gzip})."""

WINDOW_LOG = 20
"""The largest brotli and zstd window (2**20 bytes: 1 MB) an encoder uses,
so a response costs the worker a bounded amount of memory whatever the
level (zstd's top levels would take 8 MB each)."""

_ALIASES = {"x-gzip": "gzip"}
_CACHED_VALUE = 256
_TCHAR = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")
_SLICE = 64 * 1024


def _qvalue(text):
    """
    The weight of C{text} (what follows C{q=}) in thousandths, or L{None}
    when it is not a qvalue (C{0}, C{0.5}, C{1.000}; at most three
    decimals, never above 1).
    """
    whole, _, fraction = text.partition(".")
    if whole not in ("0", "1") or len(fraction) > 3:
        return None
    if fraction and not (fraction.isascii() and fraction.isdigit()):
        return None
    thousandths = int(whole) * 1000 + (int(fraction.ljust(3, "0")) if fraction else 0)
    return thousandths if thousandths <= 1000 else None


def parse_accept_encoding(value):
    """
    The codings of an C{Accept-Encoding} value (C{str}) and their weights:
    a dict of lower-case coding name (C{*} and C{identity} included) to
    thousandths (0..1000). Malformed elements (a name that is not a
    token, a bad or repeated C{q}) are ignored; a coding listed twice keeps
    its first weight.
    """
    codings = {}
    for element in value.split(","):
        name, _, params = element.partition(";")
        name = name.strip().lower()
        if not name or not _TCHAR.issuperset(name):
            continue
        weight = 1000
        if params:
            weight = None
            for param in params.split(";"):
                key, equals, text = param.partition("=")
                key = key.strip().lower()
                if key == "q" and equals and weight is None:
                    weight = _qvalue(text.strip())
                    if weight is None:
                        break
                else:
                    # Accept-Encoding has no parameters but q.
                    weight = None
                    break
            if weight is None:
                continue
        name = _ALIASES.get(name, name)
        codings.setdefault(name, weight)
    return codings


class AcceptEncoding:
    """
    Chooses a response coding from C{Accept-Encoding} for one configured
    preference order, with a small bounded cache of the header values it
    has seen (browsers send a handful of spellings).

    The chosen coding is the acceptable one (weight above 0, given by name
    or by C{*}) of highest weight, ties broken by the configured order;
    none when the header is absent, when nothing configured is acceptable,
    or when the client weighs C{identity} above it.
    """

    CACHE_SIZE = 256
    """How many distinct header values the cache keeps; full, it starts over."""

    def __init__(self, preference):
        """
        @param preference: the coding names to offer (C{"br"}, C{"zstd"},
            C{"gzip"}), most preferred first.
        """
        self.preference = tuple(preference)
        self._cache = {}

    def choose(self, values):
        """
        The coding (C{str}) to use for a request whose C{Accept-Encoding}
        header lines are C{values} (a list of bytes, or L{None} when
        absent), or L{None} for the response as it is.
        """
        if not values:
            return None
        key = values[0] if len(values) == 1 else b", ".join(values)
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        chosen = self._choose(parse_accept_encoding(key.decode("latin-1")))
        if len(key) <= _CACHED_VALUE:
            # A long value is no browser's: parsed, not kept.
            if len(cache) >= self.CACHE_SIZE:
                cache.clear()
            cache[key] = chosen
        return chosen

    def _choose(self, codings):
        anything = codings.get("*")
        best, best_weight = None, 0
        for name in self.preference:
            weight = codings.get(name, anything)
            if weight is not None and weight > best_weight:
                best, best_weight = name, weight
        if best is None:
            return None
        identity = codings.get("identity", anything)
        if identity is not None and identity > best_weight:
            return None
        return best


# -- encoders ------------------------------------------------------------------


class _GzipEncoder:
    """
    A streaming gzip encoder (zlib with a gzip wrapper).
    """

    __slots__ = ("_zlib",)

    def __init__(self, level):
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 31)

    def compress(self, data, flush):
        """
        The output ready for C{data}; with C{flush}, all of it (a sync flush).
        """
        out = self._zlib.compress(data)
        if flush:
            out += self._zlib.flush(zlib.Z_SYNC_FLUSH)
        return out

    def finish(self):
        """
        The rest and the gzip trailer.
        """
        return self._zlib.flush(zlib.Z_FINISH)


class _BrotliEncoder:
    """
    A streaming brotli encoder.
    """

    __slots__ = ("_brotli",)

    def __init__(self, level):
        import brotli
        self._brotli = brotli.Compressor(quality=level, lgwin=WINDOW_LOG)

    def compress(self, data, flush):
        """
        The output ready for C{data}; with C{flush}, all of it.
        """
        out = self._brotli.process(data)
        if flush:
            out += self._brotli.flush()
        return out

    def finish(self):
        """
        The rest and the end of the stream.
        """
        return self._brotli.finish()


class _ZstdEncoder:
    """
    A streaming zstd encoder (one frame, its size unknown).
    """

    __slots__ = ("_zstd", "_block")

    def __init__(self, level):
        import zstandard
        self._zstd = zstandard.ZstdCompressor(compression_params=_zstd_parameters(level)).compressobj()
        self._block = zstandard.COMPRESSOBJ_FLUSH_BLOCK

    def compress(self, data, flush):
        """
        The output ready for C{data}; with C{flush}, all of it (a block end).
        """
        out = self._zstd.compress(data)
        if flush:
            out += self._zstd.flush(self._block)
        return out

    def finish(self):
        """
        The rest and the end of the frame.
        """
        return self._zstd.flush()


@functools.lru_cache(maxsize=32)
def _zstd_parameters(level):
    import zstandard
    params = zstandard.ZstdCompressionParameters.from_level(level)
    if params.window_log > WINDOW_LOG:
        params = zstandard.ZstdCompressionParameters.from_level(level, window_log=WINDOW_LOG)
    return params


_ENCODERS = {"gzip": _GzipEncoder, "br": _BrotliEncoder, "zstd": _ZstdEncoder}


def new_encoder(coding, level):
    """
    A streaming encoder for C{coding} (C{"gzip"}, C{"br"} or C{"zstd"}) at
    C{level}: C{compress(data, flush)} returns the bytes ready so far
    (with C{flush}, everything given so far, decodable by the client at
    once), C{finish()} the rest and the coding's trailer.
    """
    return _ENCODERS[coding](level)


# -- bounded decoding -------------------------------------------------------------


class DecodeError(Exception):
    """
    A request body is not valid in its coding (corrupt or truncated).
    """


class DecodeTooLarge(Exception):
    """
    A request body decodes to more than the bound allows.
    """


def decode_body(coding, data, limit):
    """
    Decode C{data} (bytes) of C{coding} (one of L{DECODABLE}), producing at
    most C{limit} bytes: the decoder is never asked for more than what is
    left under the bound, so a bomb costs no more memory than C{limit}.

    @raise DecodeTooLarge: it decodes to more than C{limit} bytes.
    @raise DecodeError: it is corrupt, truncated, or followed by bytes
        that are not part of it.
    """
    if coding == "br":
        return _decode_brotli(data, limit)
    if coding == "zstd":
        return _decode_zstd(data, limit)
    if coding == "gzip":
        return _decode_zlib(data, limit, 31, members=True)
    try:
        return _decode_zlib(data, limit, 15, members=False)
    except DecodeError:
        # Some clients send raw deflate for "deflate" (RFC 9110 means the
        # zlib format); a body that is neither is still refused.
        return _decode_zlib(data, limit, -15, members=False)


def _decode_zlib(data, limit, wbits, members):
    out = []
    size = 0
    rest = data
    while True:
        decoder = zlib.decompressobj(wbits)
        pending = rest
        try:
            while pending:
                piece = decoder.decompress(pending[:_SLICE], limit - size + 1)
                pending = decoder.unconsumed_tail + pending[_SLICE:]
                size += len(piece)
                if size > limit:
                    raise DecodeTooLarge()
                out.append(piece)
                if decoder.eof:
                    pending = decoder.unused_data + pending
                    break
            while not decoder.eof and size <= limit:
                piece = decoder.decompress(b"", limit - size + 1)
                if not piece:
                    break
                size += len(piece)
                out.append(piece)
            if size > limit:
                raise DecodeTooLarge()
        except zlib.error as e:
            raise DecodeError(f"is not valid {'gzip' if wbits == 31 else 'deflate'} data ({e})") from None
        if not decoder.eof:
            raise DecodeError("is truncated")
        if not pending:
            return b"".join(out)
        if not members:
            raise DecodeError("has bytes after its end")
        rest = pending


def _decode_brotli(data, limit):
    import brotli
    decoder = brotli.Decompressor()
    out = []
    size = 0
    try:
        for start in range(0, len(data), _SLICE):
            piece = decoder.process(data[start:start + _SLICE], output_buffer_limit=limit - size + 1)
            while True:
                size += len(piece)
                if size > limit:
                    raise DecodeTooLarge()
                out.append(piece)
                if decoder.can_accept_more_data():
                    break
                piece = decoder.process(b"", output_buffer_limit=limit - size + 1)
        if not decoder.is_finished():
            raise DecodeError("is truncated")
    except brotli.error as e:
        raise DecodeError(f"is not valid brotli data ({e})") from None
    return b"".join(out)


def _decode_zstd(data, limit):
    import io

    import zstandard
    decompressor = zstandard.ZstdDecompressor()
    try:
        # First measured through a reader that never makes more than it
        # is asked for (a frame's own size field may lie or be absent);
        # only a body known to fit is decoded for keeps, frame by frame,
        # which is what tells a truncated frame from a whole one.
        reader = decompressor.stream_reader(io.BytesIO(data), read_across_frames=True)
        size = 0
        while True:
            piece = reader.read(min(_SLICE, limit - size + 1))
            if not piece:
                break
            size += len(piece)
            if size > limit:
                raise DecodeTooLarge()
        out = []
        rest = data
        while rest:
            frame = decompressor.decompressobj()
            out.append(frame.decompress(rest))
            if not frame.eof:
                raise DecodeError("is truncated")
            rest = frame.unused_data
    except zstandard.ZstdError as e:
        raise DecodeError(f"is not valid zstd data ({e})") from None
    return b"".join(out)
