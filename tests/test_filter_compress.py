"""
Tests for the compress filter: its settings
(L{gatelayer.config.filter_compress}), the codings
(L{gatelayer.filters.codings}: negotiation, streaming encoders, bounded
decoding) and what the filter does to responses and request bodies through
a whole in-memory gateway (L{gatelayer.filters.compress}), on both server
channels.
"""

import gzip
import json
import os
import random
import zlib

import brotli
import zstandard
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.chain import IBodyFilter, RouteChain
from gatelayer.config import parse_config_text
from gatelayer.config import filter_compress
from gatelayer.config.filter_compress import DEFAULT_TYPES, parse_filter, parse_types
from gatelayer.config.model import FilterSpec
from gatelayer.filters import build_filter
from gatelayer.http.static import FileStreamer
from gatelayer.filters.codings import AcceptEncoding, DecodeError, DecodeTooLarge, decode_body, new_encoder, \
    parse_accept_encoding
from gatelayer.testing.config import config_problems, parse_section
from gatelayer.testing.server import InMemoryGateway, accept_upstream, parse_response, with_server
from gatelayer.testing.transports import FillingTransport

TEXT = b"".join(b"line %05d: the quick brown fox jumps over the lazy dog\n" % (i,) for i in range(400))


def _parse(**items):
    return parse_section(parse_filter, "filter:gz", items)


def decompress(coding, data):
    """
    Decode C{data} of C{coding} with the reference libraries (not the
    gateway's decoder).
    """
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


class SettingsTests(SynchronousTestCase):
    """
    The compress keys are read once; every problem names section, key and
    value.
    """

    def test_defaults(self):
        """
        Without keys: br, zstd and gzip offered in that order (all
        installed here), the default levels, 256 bytes, the default types,
        no request decoding.
        """
        settings, problems = _parse()
        self.assertEqual(problems, [])
        self.assertEqual(settings.encodings, ("br", "zstd", "gzip"))
        self.assertEqual(settings.levels, {"gzip": 6, "br": 4, "zstd": 3})
        self.assertEqual(settings.min_length, 256)
        self.assertEqual(settings.types, parse_types(", ".join(DEFAULT_TYPES)))
        self.assertFalse(settings.decompress_requests)
        self.assertIsNone(settings.max_decompressed_size)
        self.assertEqual(settings.max_ratio, 100)

    def test_parsed(self):
        """
        Every key is read: codings in the listed order (case-insensitive),
        levels, sizes, types, request decoding.
        """
        settings, problems = _parse(
            encodings="GZIP, br", gzip_level="9", br_level="11", zstd_level="19", min_length="1KB",
            types="text/html, application/*, +YAML", decompress_requests="yes", max_decompressed_size="2MB",
            max_ratio="20")
        self.assertEqual(problems, [])
        self.assertEqual(settings.encodings, ("gzip", "br"))
        self.assertEqual(settings.levels, {"gzip": 9, "br": 11, "zstd": 19})
        self.assertEqual((settings.min_length, settings.max_decompressed_size, settings.max_ratio),
                         (1024, 2 * 1024 * 1024, 20))
        self.assertTrue(settings.decompress_requests)
        types = settings.types
        for media_type, listed in ((b"text/html", True), (b"text/plain", False), (b"application/pdf", True),
                                   (b"image/x+yaml", True), (b"image/png", False), (b"textplain", False)):
            self.assertEqual(types.matches(media_type), listed, media_type)

    def test_default_types(self):
        """
        The default types: text, JSON, JavaScript, XML, SVG and their
        structured suffixes; not images, fonts or archives.
        """
        types = parse_types(", ".join(DEFAULT_TYPES))
        for media_type in (b"text/html", b"text/event-stream", b"application/json", b"application/problem+json",
                           b"application/javascript", b"application/xml", b"application/atom+xml",
                           b"image/svg+xml"):
            self.assertTrue(types.matches(media_type), media_type)
        for media_type in (b"image/png", b"application/octet-stream", b"application/zip", b"font/woff2",
                           b"application/jsonx", b"video/mp4"):
            self.assertFalse(types.matches(media_type), media_type)

    def test_problems(self):
        """
        Each bad value is reported with section, key and value.
        """
        cases = [
            (dict(encodings="gzip, lzma"), "gate.ini [filter:gz] encodings: 'lzma' is not a coding"),
            (dict(encodings="gzip, gzip"), "gate.ini [filter:gz] encodings: 'gzip' is listed twice"),
            (dict(encodings=","), "gate.ini [filter:gz] encodings: lists no coding"),
            (dict(gzip_level="10"), "gate.ini [filter:gz] gzip_level: '10' must be at most 9"),
            (dict(gzip_level="0"), "gate.ini [filter:gz] gzip_level: '0' must be at least 1"),
            (dict(br_level="12"), "gate.ini [filter:gz] br_level: '12' must be at most 11"),
            (dict(zstd_level="fast"), "gate.ini [filter:gz] zstd_level: 'fast' is not a whole number"),
            (dict(min_length="big"), "gate.ini [filter:gz] min_length: 'big' is not a size"),
            (dict(types="text"), "gate.ini [filter:gz] types: 'text' has 'text', which is not type/subtype"),
            (dict(types="*/*"), "gate.ini [filter:gz] types: '*/*' has '*/*', which is not type/subtype"),
            (dict(decompress_requests="maybe"), "gate.ini [filter:gz] decompress_requests: 'maybe' is not yes"),
            (dict(max_decompressed_size="0"), "gate.ini [filter:gz] max_decompressed_size: '0' must be at least"),
            (dict(max_ratio="0"), "gate.ini [filter:gz] max_ratio: '0' must be at least 1"),
            (dict(level="5"), "gate.ini [filter:gz] level: is not a known key"),
        ]
        for items, expected in cases:
            _, problems = _parse(**items)
            self.assertEqual(len(problems), 1, (items, problems))
            self.assertTrue(problems[0].startswith(expected), (items, problems))

    def test_package_missing(self):
        """
        A listed coding whose package is missing is an error naming the
        package and the extra; by default such codings are just not offered.
        """
        self.patch(filter_compress, "installed", lambda coding: coding == "gzip")
        _, problems = _parse(encodings="br, gzip, zstd")
        self.assertEqual(problems, [
            "gate.ini [filter:gz] encodings: 'br' needs the brotli package: pip install 'gatelayer[compress]'",
            "gate.ini [filter:gz] encodings: 'zstd' needs the zstandard package: "
            "pip install 'gatelayer[compress]'"])
        settings, problems = _parse()
        self.assertEqual((settings.encodings, problems), (("gzip",), []))

    def test_whole_config(self):
        """
        A route may list a compress filter; a bad key stops the whole
        configuration, named.
        """
        text = ("[gateway]\n[listener:web]\nbind = 127.0.0.1:8080\n[filter:gz]\ntype = compress\n{extra}"
                "[route:r]\nrespond = 200 ok\nfilters = gz\n")
        config = parse_config_text(text.format(extra=""), "gate.ini", cpu_count=1)
        self.assertEqual(config.filters["gz"].type, "compress")
        self.assertIn("gate.ini [filter:gz] min_length: '-' is not a size",
                      config_problems(self, text.format(extra="min_length = -\n")))

    def test_built(self):
        """
        The filter built from the settings provides the body hook (verified
        against the interface).
        """
        settings, _ = _parse()
        flt = build_filter(FilterSpec(name="gz", type="compress", settings=settings), None)
        verifyObject(IBodyFilter, flt)
        self.assertEqual(RouteChain.build([flt]).body_hooks, (0,))
        self.assertFalse(flt.preserves_length)


class NegotiationTests(SynchronousTestCase):
    """
    C{Accept-Encoding} as RFC 9110 section 12.5.3 reads it: weights, C{*},
    C{identity}, case-insensitive names, malformed elements ignored, ties
    broken by the configured order.
    """

    def test_choices(self):
        """
        A table of header values and what the preference C{br, zstd, gzip}
        chooses for each.
        """
        cases = [
            (None, None),
            (b"", None),
            (b"gzip", "gzip"),
            (b"GZip", "gzip"),
            (b"x-gzip", "gzip"),
            (b"gzip, deflate, br", "br"),
            (b"gzip, deflate, br, zstd", "br"),
            (b"zstd, gzip", "zstd"),
            (b"gzip;q=1, br;q=0.5", "gzip"),
            (b"gzip;q=0.5, br;q=0.5", "br"),
            (b"br;q=0, gzip", "gzip"),
            (b"br;Q=0.000, gzip;q=0.001", "gzip"),
            (b"*", "br"),
            (b"*;q=0", None),
            (b"*;q=0.5, br;q=0", "zstd"),
            (b"gzip;q=0.5, identity", None),
            (b"gzip;q=0.5, *;q=0.8", "br"),
            (b"gzip, identity;q=0", "gzip"),
            (b"identity", None),
            (b"deflate", None),
            (b"gzip;q=1.5", None),
            (b"gzip;q=abc, br;q=0.1", "br"),
            (b"gzip;q=0.1234", None),
            (b"gzip;q=-1", None),
            (b"gzip;level=9", None),
            (b"gzip;q=0.5;q=1", None),
            (b"gzip;q=", None),
            (b"g zip, br", "br"),
            (b"\xff\xfe, gzip", "gzip"),
            (b",,, ;q=1, gzip ;q=0.3 ", "gzip"),
            (b"gzip, gzip;q=0", "gzip"),
            (b"br;q=1.", "br"),
        ]
        for value, expected in cases:
            negotiation = AcceptEncoding(("br", "zstd", "gzip"))
            values = None if value is None else [value]
            self.assertEqual(negotiation.choose(values), expected, value)

    def test_preference(self):
        """
        Equal weights go to the configured order; a coding not configured
        is never chosen.
        """
        self.assertEqual(AcceptEncoding(("gzip", "br")).choose([b"br, gzip"]), "gzip")
        self.assertEqual(AcceptEncoding(("gzip",)).choose([b"br, zstd"]), None)
        self.assertEqual(AcceptEncoding(()).choose([b"*"]), None)

    def test_several_lines(self):
        """
        Several header lines count as one list.
        """
        self.assertEqual(AcceptEncoding(("br", "gzip")).choose([b"gzip", b"br;q=0.9"]), "gzip")

    def test_parsed(self):
        """
        The parse keeps weights in thousandths and the first of a repeated
        name.
        """
        self.assertEqual(parse_accept_encoding("gzip;q=0.5, BR, *;q=0, gzip, identity;q=0.25"),
                         {"gzip": 500, "br": 1000, "*": 0, "identity": 250})

    def test_cache_bounded(self):
        """
        The cache of seen header values never holds more than its size,
        and a cached answer is the same as a fresh one.
        """
        negotiation = AcceptEncoding(("gzip",))
        for index in range(AcceptEncoding.CACHE_SIZE * 3):
            negotiation.choose([b"gzip;q=0.%d" % (index % 10,) + b", x%d" % (index,)])
            self.assertLessEqual(len(negotiation._cache), AcceptEncoding.CACHE_SIZE)
        self.assertEqual(negotiation.choose([b"gzip"]), "gzip")
        self.assertEqual(negotiation.choose([b"gzip"]), "gzip")

    def test_long_values_not_cached(self):
        """
        A value longer than any browser's is answered but not kept.
        """
        negotiation = AcceptEncoding(("gzip",))
        value = b"x, " * 1000 + b"gzip"
        self.assertEqual(negotiation.choose([value]), "gzip")
        self.assertNotIn(value, negotiation._cache)
        self.assertEqual(negotiation.choose([b"x, " * 1000]), None)


class EncoderTests(SynchronousTestCase):
    """
    The streaming encoders: what they write decodes to what they were
    given, and a flush makes everything given so far decodable at once.
    """

    def test_round_trip(self):
        """
        Chunks encoded with and without flushes decode to the input, for
        each coding and its lowest and highest levels.
        """
        levels = {"gzip": (1, 9), "br": (0, 11), "zstd": (1, 19)}
        for coding, pair in levels.items():
            for level in pair:
                for flush in (False, True):
                    encoder = new_encoder(coding, level)
                    out = b"".join(encoder.compress(TEXT[i:i + 1000], flush) for i in range(0, len(TEXT), 1000))
                    out += encoder.finish()
                    self.assertEqual(decompress(coding, out), TEXT, (coding, level, flush))
                    self.assertLess(len(out), len(TEXT) // 4)

    def test_flush(self):
        """
        After each flushed chunk, the output so far decodes (with a
        streaming decoder) to exactly the input so far.
        """
        events = [b"data: event %d\n\n" % (i,) for i in range(5)]
        decoders = {
            "gzip": lambda: zlib.decompressobj(31).decompress,
            "br": lambda: brotli.Decompressor().process,
            "zstd": lambda: zstandard.ZstdDecompressor().decompressobj().decompress,
        }
        for coding, make in decoders.items():
            encoder = new_encoder(coding, 5)
            decode = make()
            for event in events:
                self.assertEqual(decode(encoder.compress(event, True)), event, coding)

    def test_window_bounded(self):
        """
        zstd's top level writes frames with a window of at most 1 MB (so a
        response's encoder, and the client's decoder, stay small).
        """
        encoder = new_encoder("zstd", 19)
        out = encoder.compress(TEXT, False) + encoder.finish()
        self.assertLessEqual(zstandard.get_frame_parameters(out).window_size, 1024 * 1024)
        self.assertEqual(decompress("zstd", out), TEXT)

    def test_empty(self):
        """
        An empty body still encodes to a valid (empty) stream.
        """
        for coding in ("gzip", "br", "zstd"):
            encoder = new_encoder(coding, 3)
            self.assertEqual(decompress(coding, encoder.compress(b"", False) + encoder.finish()), b"")


def _bombs():
    """
    100 MB of zeros in each coding: a few kilobytes each.
    """
    zeros = b"\0" * (100 * 1024 * 1024)
    return {"gzip": gzip.compress(zeros, 9), "deflate": zlib.compress(zeros, 9), "br": brotli.compress(zeros),
            "zstd": zstandard.ZstdCompressor(level=19).compress(zeros)}


BOMBS = _bombs()

ENCODED = {
    "gzip": gzip.compress(TEXT),
    "deflate": zlib.compress(TEXT),
    "br": brotli.compress(TEXT),
    "zstd": zstandard.ZstdCompressor().compress(TEXT),
}


class DecodeTests(SynchronousTestCase):
    """
    Bounded decoding of request bodies: whole bodies decode; bombs, corrupt
    and truncated bodies are refused without decoding past the bound.
    """

    def test_round_trip(self):
        """
        Each coding decodes to the original at exactly its size as the
        bound; raw deflate and several gzip members are accepted too.
        """
        for coding, data in ENCODED.items():
            self.assertEqual(decode_body(coding, data, len(TEXT)), TEXT, coding)
        raw = zlib.compressobj(wbits=-15)  # zlib.compress takes wbits from Python 3.11 on only
        self.assertEqual(decode_body("deflate", raw.compress(TEXT) + raw.flush(), len(TEXT)), TEXT)
        self.assertEqual(decode_body("gzip", gzip.compress(b"ab") + gzip.compress(b"cd"), 4), b"abcd")
        self.assertEqual(decode_body("zstd", ENCODED["zstd"] * 2, 2 * len(TEXT)), TEXT * 2)

    def test_one_byte_over(self):
        """
        One byte over the bound is too large, for each coding.
        """
        for coding, data in ENCODED.items():
            self.assertRaises(DecodeTooLarge, decode_body, coding, data, len(TEXT) - 1)

    def test_bombs(self):
        """
        A body of a few kilobytes that decodes to 100 MB is refused at a
        1 MB bound, for each coding.
        """
        for coding, data in BOMBS.items():
            self.assertLess(len(data), 200 * 1024, coding)
            self.assertRaises(DecodeTooLarge, decode_body, coding, data, 1024 * 1024)

    def test_bad(self):
        """
        A table of corrupt, truncated and padded bodies: each is refused
        with a reason.
        """
        cases = []
        for coding, data in ENCODED.items():
            cases += [
                (coding, data[:len(data) // 2], "truncated or corrupt"),
                (coding, data[:-1], "truncated"),
                (coding, b"garbage" + data, "garbage before"),
                (coding, data[:10] + bytes(b ^ 0x5a for b in data[10:40]) + data[40:], "flipped bytes"),
                (coding, data + b"\x01trailing", "bytes after the end"),
                (coding, b"\x00" * 16, "zeros"),
            ]
        cases.append(("gzip", b"\x1f\x8b", "a gzip header only"))
        for coding, data, what in cases:
            try:
                decode_body(coding, data, 10 * len(TEXT))
            except DecodeError as e:
                self.assertTrue(str(e), (coding, what))
            else:
                self.fail(f"{coding} {what} was decoded")


CONFIG = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[filter:gz]
type = compress
encodings = br, zstd, gzip
decompress_requests = yes
max_decompressed_size = 64KB
[filter:gz-plain]
type = compress
encodings = gzip
[route:app]
path = /
upstream = app
filters = gz
[route:plain]
path = /plain/
upstream = app
filters = gz-plain
[filter:to-xml]
type = transform
response_body = json_to_xml
[route:xml]
path = /xml/
upstream = app
filters = gz, to-xml
[route:direct]
path = /direct/
respond = 200 {direct}
filters = gz
"""

DIRECT = "a direct answer that is long enough to be compressed, " * 10 + "end"


def _request(path=b"/a", method=b"GET", accept=b"gzip", extra=b"", body=b""):
    head = b"%s %s HTTP/1.1\r\nHost: x\r\n" % (method, path)
    if accept is not None:
        head += b"Accept-Encoding: " + accept + b"\r\n"
    if body:
        head += b"Content-Length: %d\r\n" % (len(body),)
    return head + extra + b"\r\n" + body


def _head(status=b"200 OK", content_type=b"text/plain", length=None, extra=b""):
    head = b"HTTP/1.1 " + status + b"\r\n"
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    head += (b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % (length,))
    return head + extra + b"\r\n"


def _chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


class ResponseTests(SynchronousTestCase):
    """
    Responses are compressed as negotiated, with a head to match; those the
    rules leave alone go out byte for byte as they came.
    """

    http_server = "gatelayer"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG.format(direct=DIRECT), self.http_server),
                                    with_upstreams=True)
        self.reactor = self.gate.reactor

    def proxied(self, request):
        """
        Send C{request}; returns C{(channel, client transport, upstream
        transport, upstream protocol)}.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(request)
        transport, protocol = accept_upstream(self.reactor)
        return channel, client, transport, protocol

    def answer(self, request, response):
        """
        Send C{request}, let the upstream answer C{response}; returns the
        parsed response the client got.
        """
        _, client, _, protocol = self.proxied(request)
        protocol.dataReceived(response)
        return parse_response(client.value())

    def test_each_coding(self):
        """
        gzip, br and zstd bodies, with a known length or chunked, decode
        to the upstream's body; the head has Content-Encoding and Vary,
        no Content-Length, and the body is chunked.
        """
        for coding in ("gzip", "br", "zstd"):
            for chunked in (False, True):
                if chunked:
                    response = _head() + b"".join(_chunk(TEXT[i:i + 4096]) for i in range(0, len(TEXT), 4096))
                    response += b"0\r\n\r\n"
                else:
                    response = _head(length=len(TEXT)) + TEXT
                status, headers, body = self.answer(_request(accept=coding.encode("ascii")), response)
                self.assertEqual(status, 200)
                self.assertEqual(headers[b"content-encoding"], [coding.encode("ascii")])
                self.assertEqual(headers[b"vary"], [b"Accept-Encoding"])
                self.assertNotIn(b"content-length", headers)
                self.assertEqual(headers[b"transfer-encoding"], [b"chunked"])
                self.assertEqual(decompress(coding, body), TEXT, (coding, chunked))
                self.assertLess(len(body), len(TEXT) // 4)

    def test_head_rewritten(self):
        """
        A strong ETag is weakened (a weak one kept), Accept-Ranges dropped,
        an existing Vary merged into one line, other headers kept.
        """
        extra = b'ETag: "v1"\r\nAccept-Ranges: bytes\r\nVary: Origin\r\nX-App: yes\r\n'
        status, headers, body = self.answer(_request(), _head(length=len(TEXT), extra=extra) + TEXT)
        self.assertEqual(headers[b"etag"], [b'W/"v1"'])
        self.assertNotIn(b"accept-ranges", headers)
        self.assertEqual(headers[b"vary"], [b"Origin, Accept-Encoding"])
        self.assertEqual(headers[b"x-app"], [b"yes"])
        status, headers, body = self.answer(
            _request(), _head(length=len(TEXT), extra=b'ETag: W/"v2"\r\nVary: accept-encoding\r\n') + TEXT)
        self.assertEqual(headers[b"etag"], [b'W/"v2"'])
        self.assertEqual(headers[b"vary"], [b"accept-encoding"])
        status, headers, body = self.answer(_request(), _head(length=len(TEXT), extra=b"Vary: *\r\n") + TEXT)
        self.assertEqual(headers[b"vary"], [b"*"])
        self.assertEqual(gzip.decompress(body), TEXT)

    def test_untouched(self):
        """
        A table of responses and requests the rules leave alone: each goes
        out with the upstream's body and framing, without Content-Encoding
        added; Vary is added exactly when the response could have been
        compressed for another client.
        """
        small = b"x" * 255
        cases = [
            ("already encoded", _request(), _head(length=len(TEXT), extra=b"Content-Encoding: br\r\n") + TEXT,
             b"br", False),
            ("type not listed", _request(), _head(content_type=b"image/png", length=len(TEXT)) + TEXT, None, False),
            ("no type", _request(), _head(content_type=None, length=len(TEXT)) + TEXT, None, False),
            ("two types", _request(), _head(length=len(TEXT), extra=b"Content-Type: text/html\r\n") + TEXT,
             None, False),
            ("short", _request(), _head(length=len(small)) + small, None, False),
            ("no-transform", _request(), _head(length=len(TEXT), extra=b"Cache-Control: public, No-Transform\r\n")
             + TEXT, None, False),
            ("partial", _request(), _head(b"206 Partial Content", length=len(TEXT),
                                          extra=b"Content-Range: bytes 0-%d/99999\r\n" % (len(TEXT) - 1,)) + TEXT,
             None, False),
            ("content-range on 200", _request(), _head(length=len(TEXT), extra=b"Content-Range: bytes */1\r\n")
             + TEXT, None, False),
            ("not accepted", _request(accept=None), _head(length=len(TEXT)) + TEXT, None, True),
            ("refused", _request(accept=b"gzip;q=0, br;q=0, zstd;q=0"), _head(length=len(TEXT)) + TEXT, None, True),
            ("identity preferred", _request(accept=b"gzip;q=0.1, identity"), _head(length=len(TEXT)) + TEXT, None,
             True),
            ("not offered", _request(path=b"/plain/a", accept=b"br"), _head(length=len(TEXT)) + TEXT, None, True),
        ]
        for what, request, response, encoding, vary in cases:
            status, headers, body = self.answer(request, response)
            self.assertEqual(body, response.partition(b"\r\n\r\n")[2], what)
            self.assertEqual(headers.get(b"content-encoding"), None if encoding is None else [encoding], what)
            self.assertEqual(headers[b"content-length"], [b"%d" % (len(body),)], what)
            self.assertEqual(headers.get(b"vary"), [b"Accept-Encoding"] if vary else None, what)

    def test_no_body(self):
        """
        HEAD, 204 and 304 answers are relayed as they are, Vary included.
        """
        cases = [
            (_request(method=b"HEAD"), _head(length=len(TEXT))),
            (_request(), b"HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\n\r\n"),
            (_request(), b'HTTP/1.1 304 Not Modified\r\nContent-Type: text/plain\r\nETag: "v1"\r\n\r\n'),
        ]
        for request, response in cases:
            status, headers, body = self.answer(request, response)
            self.assertEqual(body, b"", response)
            self.assertNotIn(b"content-encoding", headers)
            self.assertNotIn(b"vary", headers)
            self.assertEqual(headers.get(b"etag"), [b'"v1"'] if b"ETag" in response else None)
        status, headers, _ = self.answer(_request(method=b"HEAD"), _head(length=len(TEXT)))
        self.assertEqual(headers[b"content-length"], [b"%d" % (len(TEXT),)])

    def test_direct_response(self):
        """
        A route's own answer (its length known only to the responder) is
        compressed too, and left alone for a client that does not accept a
        coding.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(_request(b"/direct/", accept=b"zstd"))
        status, headers, body = parse_response(client.value())
        self.assertEqual(headers[b"content-encoding"], [b"zstd"])
        self.assertEqual(decompress("zstd", body), DIRECT.encode("ascii"))
        channel, client = self.gate.connect()
        channel.dataReceived(_request(b"/direct/", accept=b"deflate"))
        status, headers, body = parse_response(client.value())
        self.assertEqual(body, DIRECT.encode("ascii"))
        self.assertEqual(headers[b"content-length"], [b"%d" % (len(body),)])
        self.assertEqual(headers[b"vary"], [b"Accept-Encoding"])

    def test_http_10(self):
        """
        An HTTP/1.0 client gets the compressed body delimited by the close
        of the connection (no chunks, no Content-Length).
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /direct/ HTTP/1.0\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        head, _, body = client.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Encoding: gzip", head)
        self.assertNotIn(b"content-length", head.lower())
        self.assertNotIn(b"transfer-encoding", head.lower())
        self.assertTrue(client.disconnecting)
        self.assertEqual(gzip.decompress(body), DIRECT.encode("ascii"))

    def test_stream_flushed(self):
        """
        An event stream is flushed chunk by chunk: after each event the
        upstream sends, what the client has decodes to every event so far.
        """
        for coding, make in (("gzip", lambda: zlib.decompressobj(31)),
                             ("br", lambda: _Brotli()),
                             ("zstd", lambda: zstandard.ZstdDecompressor().decompressobj())):
            _, client, _, protocol = self.proxied(_request(accept=coding.encode("ascii")))
            protocol.dataReceived(_head(content_type=b"text/event-stream"))
            decoder = make()
            received = b""
            for index in range(5):
                event = b"id: %d\ndata: event number %d\n\n" % (index, index)
                protocol.dataReceived(_chunk(event))
                wire = client.value()
                client.clear()
                if index == 0:
                    head, _, wire = wire.partition(b"\r\n\r\n")
                    self.assertIn(b"Content-Encoding: " + coding.encode("ascii"), head)
                received += decoder.decompress(_unchunk(wire))
                self.assertEqual(received.count(b"\n\n"), index + 1, coding)
            protocol.dataReceived(b"0\r\n\r\n")
            self.assertTrue(client.value().endswith(b"0\r\n\r\n"))

    def test_back_pressure(self):
        """
        A client whose buffer is full pauses the upstream connection through
        the encoder; once it has read, the upstream goes on, and what it got
        decodes to what the upstream sent.
        """
        channel = self.gate.factory.buildProtocol(None)
        client = FillingTransport(limit=65536)
        channel.makeConnection(client)
        channel.dataReceived(_request())
        upstream, protocol = accept_upstream(self.reactor)
        noise = random.Random(3).randbytes(4 * 65536)
        protocol.dataReceived(_head(length=len(noise)))
        sent = drains = 0
        for _ in range(20):
            self.assertEqual(upstream.producerState, "producing")
            while sent < len(noise) and not client.paused:
                protocol.dataReceived(noise[sent:sent + 8192])
                sent += 8192
            if sent >= len(noise):
                break
            self.assertEqual(upstream.producerState, "paused")
            client.drain()
            drains += 1
        self.assertEqual(sent, len(noise))
        self.assertGreaterEqual(drains, 2)
        status, headers, body = parse_response(client.value())
        self.assertEqual(headers[b"content-encoding"], [b"gzip"])
        self.assertEqual(gzip.decompress(body), noise)

    def test_upstream_breaks_off(self):
        """
        An upstream breaking off after part of a compressed body went out
        cuts the client connection (a truncated body, never a false end).
        """
        channel, client, transport, protocol = self.proxied(_request())
        protocol.dataReceived(_head() + _chunk(TEXT))
        self.assertIn(b"Content-Encoding: gzip", client.value())
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(client.disconnecting or client.disconnected)
        self.assertFalse(client.value().endswith(b"0\r\n\r\n"))

    def test_transformed_then_compressed(self):
        """
        A body a transform rewrites whole (listed after the compress
        filter) is compressed once rewritten, without a Content-Length of
        either form.
        """
        document = {"items": ["item %d" % (i,) for i in range(100)]}
        raw = json.dumps(document).encode("ascii")
        status, headers, body = self.answer(
            _request(b"/xml/a", accept=b"br"),
            _head(content_type=b"application/json", length=len(raw)) + raw)
        self.assertEqual(headers[b"content-type"], [b"application/xml; charset=utf-8"])
        self.assertEqual(headers[b"content-encoding"], [b"br"])
        self.assertNotIn(b"content-length", headers)
        xml = decompress("br", body)
        self.assertTrue(xml.startswith(b"<?xml"), xml[:40])
        self.assertIn(b"<items>item 99</items>", xml)

    def test_gateway_errors(self):
        """
        The gateway's own short errors stay as they are (under
        C{min_length}).
        """
        channel, client = self.gate.connect()
        channel.dataReceived(_request())
        _, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 999 Nine\r\nContent-Length: 0\r\n\r\n")
        status, headers, body = parse_response(client.value())
        self.assertEqual(status, 502)
        self.assertNotIn(b"content-encoding", headers)
        self.assertEqual(json.loads(body)["status"], 502)


STATIC = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[filter:gz]
type = compress
encodings = gzip
types = text/*, application/octet-stream
[route:files]
path = /files/
static = {root}
filters = gz
"""


class StaticTests(SynchronousTestCase):
    """
    Static files are compressed too, small (sent whole) and large
    (streamed), with back-pressure from a slow client intact; ranges and
    validators keep their meaning.
    """

    http_server = "gatelayer"

    def setUp(self):
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        self.small = TEXT[:5000]
        # Random bytes do not compress: the compressed stream is as large
        # as the file, so a slow reader really fills its buffer.
        self.noise = random.Random(7).randbytes(40 * FileStreamer.CHUNK)
        for name, data in (("small.txt", self.small), ("noise.bin", self.noise)):
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
        self.gate = InMemoryGateway(with_server(STATIC.format(root=root), self.http_server))

    def get(self, name, *headers):
        """
        GET file C{name} accepting gzip, with C{headers}.
        """
        data = b"GET /files/" + name + b" HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n" + b"".join(
            n + b": " + value + b"\r\n" for n, value in headers) + b"\r\n"
        return parse_response(self.gate.exchange(data))

    def test_small_file(self):
        """
        A small text file is compressed; its ETag is weakened, and a
        conditional request with it still gets 304.
        """
        status, headers, body = self.get(b"small.txt")
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"content-encoding"], [b"gzip"])
        self.assertEqual(gzip.decompress(body), self.small)
        etag = headers[b"etag"][0]
        self.assertTrue(etag.startswith(b'W/"'), etag)
        status, headers, body = self.get(b"small.txt", (b"If-None-Match", etag))
        self.assertEqual((status, body), (304, b""))
        self.assertNotIn(b"content-encoding", headers)

    def test_range(self):
        """
        A range request gets its 206 slice as it is.
        """
        status, headers, body = self.get(b"small.txt", (b"Range", b"bytes=0-99"))
        self.assertEqual((status, body), (206, self.small[:100]))
        self.assertNotIn(b"content-encoding", headers)

    def test_back_pressure(self):
        """
        A large file streams through the encoder: while the client's buffer
        is full the file is not read further, and the whole body decodes to
        the file.
        """
        channel = self.gate.factory.buildProtocol(None)
        transport = FillingTransport(limit=FileStreamer.CHUNK)
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /files/noise.bin HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        rounds = 0
        while transport.paused:
            self.assertLessEqual(len(transport.value()) - transport.drained, 2 * FileStreamer.CHUNK)
            transport.drain()
            rounds += 1
            self.assertLess(rounds, 1000)
        self.assertGreaterEqual(rounds, 10)
        status, headers, body = parse_response(transport.value())
        self.assertEqual(headers[b"content-encoding"], [b"gzip"])
        self.assertEqual(gzip.decompress(body), self.noise)


class TwistedChannelStaticTests(StaticTests):
    """
    The same through the twisted.web channel.
    """

    http_server = "twisted"


class _Brotli:
    """
    A brotli stream decoder with the C{decompress} method of zlib's.
    """

    def __init__(self):
        self._decoder = brotli.Decompressor()

    def decompress(self, data):
        return self._decoder.process(data)


def _unchunk(data):
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            break
        out += rest[:length]
        data = rest[length + 2:]
    return out


class TwistedChannelResponseTests(ResponseTests):
    """
    The same through the twisted.web channel.
    """

    http_server = "twisted"


class RequestTests(SynchronousTestCase):
    """
    Compressed request bodies are decoded before the upstream sees them;
    what cannot be decoded, or decodes past the bounds, is refused with a
    problem+json that names why.
    """

    http_server = "gatelayer"

    setUp = ResponseTests.setUp

    def post(self, body, coding, path=b"/a"):
        """
        POST C{body} with C{Content-Encoding: coding}; returns C{(client
        transport, upstream transport or None)}.
        """
        channel, client = self.gate.connect()
        extra = b"Content-Type: application/json\r\n"
        if coding is not None:
            extra += b"Content-Encoding: " + coding + b"\r\n"
        channel.dataReceived(_request(path, b"POST", None, extra, body))
        if not self.reactor.tcpClients:
            return client, None
        transport, _ = accept_upstream(self.reactor)
        self.reactor.tcpClients.clear()
        return client, transport

    def test_decoded(self):
        """
        A body in each coding reaches the upstream decoded, with its length
        and without Content-Encoding.
        """
        for coding, data in ENCODED.items():
            spelled = coding.upper().encode("ascii") if coding == "gzip" else coding.encode("ascii")
            _, upstream = self.post(data, spelled)
            head, _, body = upstream.value().partition(b"\r\n\r\n")
            self.assertEqual(body, TEXT, coding)
            self.assertIn(b"\r\nContent-Length: %d\r\n" % (len(TEXT),), head + b"\r\n")
            self.assertNotIn(b"content-encoding", head.lower())

    def test_identity(self):
        """
        C{identity} (or no Content-Encoding) passes the body as it is.
        """
        for coding in (b"identity", None):
            _, upstream = self.post(b'{"a": 1}', coding)
            head, _, body = upstream.value().partition(b"\r\n\r\n")
            self.assertEqual(body, b'{"a": 1}')
            self.assertNotIn(b"content-encoding", head.lower())

    def test_refused(self):
        """
        A table of bodies refused before the upstream: unknown or stacked
        codings (415 with Accept-Encoding), corrupt and truncated bodies
        (400), bombs over the size or the ratio (413).
        """
        over_ratio = gzip.compress(b" " * 60000)
        cases = [
            (b"compress", b"xxxx", 415, "'compress' is not decoded"),
            (b"gzip, br", ENCODED["gzip"], 415, "several content codings (gzip, br)"),
            (b"gzip", ENCODED["gzip"][:-8], 400, "gzip request body is truncated"),
            (b"gzip", b"not gzip at all", 400, "is not valid gzip data"),
            (b"br", ENCODED["br"][:20], 400, "br request body"),
            (b"zstd", ENCODED["zstd"][:-3], 400, "zstd request body is truncated"),
            (b"deflate", b"\xff" * 32, 400, "is not valid deflate data"),
            (b"gzip", BOMBS["gzip"], 413, "more than 65536 bytes"),
            (b"br", BOMBS["br"], 413, "more than 100 times its"),
            (b"zstd", BOMBS["zstd"], 413, "more than 65536 bytes"),
            (b"gzip", over_ratio, 413, "more than 100 times its"),
        ]
        for coding, body, status, detail in cases:
            client, upstream = self.post(body, coding)
            self.assertIsNone(upstream, coding)
            got, headers, answer = parse_response(client.value())
            self.assertEqual(got, status, (coding, answer))
            self.assertEqual(headers[b"content-type"], [b"application/problem+json"])
            problem = json.loads(answer)
            self.assertEqual(problem["status"], status)
            self.assertIn(detail, problem["detail"], coding)
            if status == 415:
                self.assertEqual(headers[b"accept-encoding"], [b"gzip, br, zstd, deflate"])
        self.flushLoggedErrors()

    def test_off(self):
        """
        Without C{decompress_requests} a compressed body goes upstream as
        it is.
        """
        _, upstream = self.post(ENCODED["gzip"], b"gzip", b"/plain/a")
        head, _, body = upstream.value().partition(b"\r\n\r\n")
        self.assertEqual(body, ENCODED["gzip"])
        self.assertIn(b"content-encoding: gzip", head.lower())


class TwistedChannelRequestTests(RequestTests):
    """
    The same through the twisted.web channel.
    """

    http_server = "twisted"
