"""
Tests for the C{hmac_signature} filter type: its section read through the
gateway's own loader (errors in the gateway's words), and the filter's
decisions on signed, unsigned, tampered and stale requests.
"""

import json
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.filters.api import IFilter
from gatelayer.testing.exchange import request_exchange
from gatelayer.testing.filtertypes import registered

from gatelayer_example_filter import HmacSignatureFilter, filter_type, sign

SECRET = b"0123456789abcdef0123456789abcdef-example"
NOW = 1_800_000_000

CONFIG = """
[listener:web]
bind = 127.0.0.1:0
[route:r]
path = /
respond = 200 ok
filters = signed
[filter:signed]
type = hmac_signature
{keys}
"""


def load(test, keys):
    """
    Parse a config whose C{[filter:signed]} has C{keys} (text lines); the
    secret file, when a line names C{SECRET}, is written first.
    """
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    with open(os.path.join(directory, "secret"), "wb") as f:
        f.write(SECRET + b"\n")
    with open(os.path.join(directory, "short"), "wb") as f:
        f.write(b"too short")
    return parse_config_text(CONFIG.format(keys=keys), os.path.join(directory, "gate.ini"),
                             filter_types=registered(hmac_signature=filter_type))


class SettingsTests(SynchronousTestCase):
    """
    The section is read with the gateway's messages.
    """

    def test_defaults(self):
        """
        Only C{secret_file} is required; the headers and the skew have
        defaults, and the spec carries the type's default timeout.
        """
        spec = load(self, "secret_file = secret").filters["signed"]
        self.assertEqual((spec.settings.header, spec.settings.timestamp_header, spec.settings.max_skew),
                         ("X-Signature", "X-Signature-Timestamp", 300.0))
        self.assertTrue(spec.settings.secret_file.endswith(os.sep + "secret"))
        self.assertEqual(spec.timeout, 30.0)

    def test_problems(self):
        """
        A missing, short or unreadable secret, a bad duration, a bad header
        name and an unknown key are each reported naming file, section and
        key.
        """
        table = [
            ("", "[filter:signed] secret_file: is required"),
            ("secret_file = short", "[filter:signed] secret_file: "),
            ("secret_file = nowhere", "cannot be read"),
            ("secret_file = secret\nmax_skew = soon", "[filter:signed] max_skew: 'soon' is not a duration"),
            ("secret_file = secret\nheader = X Sig", "[filter:signed] header: 'X Sig' is not a header name"),
            ("secret_file = secret\nmax_skew = 0s", "[filter:signed] max_skew: must be more than 0s"),
            ("secret_file = secret\nsecrets = x", "[filter:signed] secrets: is not a known key"),
        ]
        for keys, expected in table:
            error = self.assertRaises(ConfigError, load, self, keys)
            self.assertTrue(any(expected in problem and "gate.ini" in problem for problem in error.problems),
                            (keys, error.problems))
        error = self.assertRaises(ConfigError, load, self, "secret_file = short")
        self.assertIn("fewer than 32", "\n".join(error.problems))


class FilterTests(SynchronousTestCase):
    """
    The filter passes a signed, fresh request and refuses the others with a
    reason.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.filter = HmacSignatureFilter("signed", SECRET, b"X-Signature", b"X-Signature-Timestamp",
                                          300.0, self.clock)

    def exchange(self, method=b"POST", path=b"/orders", query=b"", body=b'{"n":1}', signature=None,
                 stamp=None, extra=()):
        """
        An exchange of a request signed as given (by default correctly, now).
        """
        stamp = b"%d" % (NOW,) if stamp is None else stamp
        target = path + (b"?" + query if query else b"")
        signature = sign(SECRET, method, target, stamp, body) if signature is None else signature
        headers = [(b"X-Signature", signature), (b"X-Signature-Timestamp", stamp), *extra]
        return request_exchange(method, path, query, headers, body)

    def refusal(self, exchange):
        """
        The reason of the filter's 401 for C{exchange}.
        """
        reply = self.filter.on_request(exchange)
        self.assertEqual(reply.status, 401)
        self.assertIn((b"content-type", b"application/problem+json"), reply.headers)
        return json.loads(reply.body)["reason"]

    def test_provides_filter(self):
        """
        The filter provides the gateway's filter interface.
        """
        verifyObject(IFilter, self.filter)

    def test_signed_request_passes(self):
        """
        A correctly signed request passes, with a query and without a body,
        and the filter notes it in the context.
        """
        exchange = self.exchange(query=b"a=1")
        self.assertIsNone(self.filter.on_request(exchange))
        self.assertEqual(exchange.context["hmac_signature.verified"], "signed")
        self.assertIsNone(self.filter.on_request(self.exchange(method=b"GET", body=b"")))
        self.clock.advance(299)
        self.assertIsNone(self.filter.on_request(self.exchange()))

    def test_refusals(self):
        """
        Each way a request can be unsigned, tampered with or stale gets a 401
        naming why.
        """
        good = sign(SECRET, b"POST", b"/orders", b"%d" % (NOW,), b'{"n":1}')
        table = [
            (request_exchange(b"POST", b"/orders", body=b"x"), "missing signature"),
            (request_exchange(b"POST", b"/orders", headers=[(b"X-Signature", good)]), "missing timestamp"),
            (self.exchange(stamp=b"soon"), "timestamp is not Unix seconds"),
            (self.exchange(stamp=b"-1"), "timestamp is not Unix seconds"),
            (self.exchange(stamp=b"9" * 40), "timestamp is not Unix seconds"),
            (self.exchange(stamp=b"%d" % (NOW - 301,)), "timestamp outside the allowed skew"),
            (self.exchange(stamp=b"%d" % (NOW + 301,)), "timestamp outside the allowed skew"),
            (self.exchange(signature=good, body=b'{"n":2}'), "signature does not match"),
            (self.exchange(signature=good, path=b"/admin"), "signature does not match"),
            (self.exchange(signature=good, query=b"a=1"), "signature does not match"),
            (self.exchange(signature=good, method=b"PUT"), "signature does not match"),
            (self.exchange(signature=b"zz" * 32), "signature does not match"),
            (self.exchange(signature=b""), "signature does not match"),
            (self.exchange(extra=[(b"X-Signature", good)]), "more than one signature or timestamp"),
        ]
        for exchange, reason in table:
            self.assertEqual(self.refusal(exchange), reason)

    def test_signature_with_other_secret_refused(self):
        """
        A signature made with another secret does not match.
        """
        stamp = b"%d" % (NOW,)
        other = sign(b"x" * 32, b"POST", b"/orders", stamp, b'{"n":1}')
        self.assertEqual(self.refusal(self.exchange(signature=other)), "signature does not match")
