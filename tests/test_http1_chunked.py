"""
Tests for L{gatelayer.http1.chunked}: the one chunked decoder, read with the
request side's limits by the server channels and the response side's by the
upstream client.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.http1 import REQUEST, RESPONSE, BadRequest, BadResponse, ChunkedDecoder

# (name, body, decoded body or the status of the refusal); the same for
# both directions, which share the grammar.
CASES = [
    ("two chunks", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT", b"hello world"),
    ("extensions", b"5;a=b\r\nhello\r\nA ; x=\"q; y\"\r\n0123456789\r\n0;last\r\n\r\n",
     b"hello0123456789"),
    ("trailers", b"2\r\nhi\r\n0\r\nX-Sum: 1\r\nX-Other:\r\n\r\n", b"hi"),
    ("upper-case hex", b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    ("empty size", b"\r\n", 400),
    ("signed size", b"-5\r\nhello\r\n0\r\n\r\n", 400),
    ("space after size", b"5 \r\nhello\r\n0\r\n\r\n", 400),
    ("17 hex digits", b"0" * 17 + b"\r\n", 400),
    ("bare LF after size", b"5\nhello\r\n0\r\n\r\n", 400),
    ("bare CR in size", b"5\r5\r\n", 400),
    ("NUL in extension", b"5;a=\"x\x00\"\r\nhello\r\n0\r\n\r\n", 400),
    ("data overrun", b"3\r\nhello\r\n0\r\n\r\n", 400),
    ("malformed trailer", b"0\r\nBad Trailer: 1\r\n\r\n", 400),
    ("bare LF after trailer", b"0\r\nX: 1\n\n", 400),
    ("chunk line never ends", b"1;a=" + b"b" * 5000, 400),
]


def decode(limits, body, split):
    """
    Feed C{body} to a decoder with C{limits}, whole or byte by byte:
    returns C{(decoded, rest)} or raises.
    """
    decoder = ChunkedDecoder(limits)
    decoded = []
    rest = None
    for piece in ([body[i:i + 1] for i in range(len(body))] if split else [body]):
        pieces, rest = decoder.feed(piece)
        decoded.extend(pieces)
        if rest is not None:
            break
    return b"".join(decoded), rest


class ChunkedDecoderTests(SynchronousTestCase):
    """
    One decoder, two directions: the same outcome whole and byte by byte,
    each side's own exception and limits.
    """

    def test_table(self):
        """
        Every case decodes (or is refused) alike on both sides, whole or
        byte by byte; a request is refused with L{BadRequest} and its
        status, a response with L{BadResponse}.
        """
        for limits, error in [(REQUEST, BadRequest), (RESPONSE, BadResponse)]:
            for name, body, expected in CASES:
                for split in (False, True):
                    label = "%s, %s%s" % (name, limits.side, " byte by byte" if split else "")
                    if isinstance(expected, bytes):
                        decoded, rest = decode(limits, body, split)
                        self.assertEqual(decoded, expected, label)
                        self.assertIsNotNone(rest, label)
                    else:
                        refusal = self.assertRaises(error, decode, limits, body, split)
                        if error is BadRequest:
                            self.assertEqual(refusal.status, expected, label)

    def test_rest_is_next_message(self):
        """
        The bytes after the body's end are handed back, and a finished
        decoder says so.
        """
        decoder = ChunkedDecoder()
        self.assertEqual(decoder.feed(b"1\r\na\r\n0\r\n\r\nGET /"), ([b"a"], b"GET /"))
        self.assertTrue(decoder.done)

    def test_pieces_before_fault(self):
        """
        A fault carries the body decoded before it in its C{pieces}, so a
        reader that relays as it goes can hand them on first.
        """
        error = self.assertRaises(BadResponse, ChunkedDecoder(RESPONSE).feed,
                                  b"3\r\nhello\r\n")
        self.assertEqual(error.pieces, [b"hel"])
        self.assertEqual(str(error), "chunk data not followed by CRLF")

    def test_trailer_limits_per_side(self):
        """
        Trailers are bounded by the side's limits: a request's at 8 KB per
        line (431), 100 lines and 32 KB, a response's at 64 KB in all.
        """
        line = b"0\r\nT: " + b"a" * 9000 + b"\r\n\r\n"
        self.assertEqual(self.assertRaises(BadRequest, decode, REQUEST, line, False).status, 431)
        self.assertEqual(decode(RESPONSE, line, False), (b"", b""))
        many = b"0\r\n" + b"X: 1\r\n" * 101 + b"\r\n"
        self.assertEqual(self.assertRaises(BadRequest, decode, REQUEST, many, False).status, 431)
        self.assertEqual(decode(RESPONSE, many, False), (b"", b""))
        large = b"0\r\n" + b"X: " + b"t" * 70000 + b"\r\n\r\n"
        for split in (False, True):
            self.assertRaises(BadResponse, decode, RESPONSE, large, split)
