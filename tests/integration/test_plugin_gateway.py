"""
Filter types from other packages through real workers: the example package
(examples/gatelayer-example-filter, installed into the test environment)
found through its entry point and checking signatures in a two-worker
gateway, and a broken plugin distribution (put on the workers' path by the
test) whose filters raise or never answer, contained without taking a
worker down.
"""

import json
import os
import textwrap

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import GatewayProcess, start_gateway
from gatelayer.testing.http import send_raw
from gatelayer.testing.server import parse_response
from gatelayer.testing.waiting import wait_until

SECRET = b"integration-secret-0123456789abcdef"
DEADLINE = 20.0

SIGNED = """
[gateway]
workers = 2
[listener:web]
bind = 127.0.0.1:0
[filter:signed]
type = hmac_signature
secret_file = partner.secret
max_skew = 1m
[route:orders]
path = /orders
respond = 200 accepted
filters = signed
"""

BROKEN = """
[gateway]
workers = 2
[listener:web]
bind = 127.0.0.1:0
[filter:raises]
type = raising
[filter:stuck]
type = stuck
timeout = 1s
[route:raises]
path = /raises
respond = 200 never
filters = raises
[route:stuck]
path = /stuck
respond = 200 never
filters = stuck
[route:plain]
path = /plain
respond = 200 plain
"""

BROKEN_MODULE = '''
"""Filter types that break, for the containment test."""

from twisted.internet.defer import Deferred
from zope.interface import implementer

from gatelayer.filters.api import FilterType, IFilter


@implementer(IFilter)
class Raising:
    """Raises in its request phase."""

    def __init__(self, name):
        self.name = name

    def on_request(self, exchange):
        raise ZeroDivisionError("plugin bug")

    def on_response(self, exchange):
        pass


@implementer(IFilter)
class Stuck(Raising):
    """Returns a Deferred that never fires."""

    def on_request(self, exchange):
        return Deferred()


raising = FilterType(keys=(), build=lambda name, settings, reactor: Raising(name))
stuck = FilterType(keys=(), build=lambda name, settings, reactor: Stuck(name))
'''


def example_filter():
    """
    The example package, or a failure saying how to install it (the tests
    need it installed, as .ci/run does).
    """
    try:
        import gatelayer_example_filter
    except ImportError:
        raise AssertionError("the example filter package is not installed: "
                             "pip install -e examples/gatelayer-example-filter") from None
    return gatelayer_example_filter


def install_broken_plugin(directory):
    """
    Write a distribution C{broken-filters} (its module and its metadata,
    with two entry points in the group C{gatelayer.filters}) into
    C{directory}, as an installed one would be on the path.
    """
    os.makedirs(directory)
    with open(os.path.join(directory, "broken_filters.py"), "w") as f:
        f.write(BROKEN_MODULE)
    info = os.path.join(directory, "broken_filters-1.0.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: broken-filters\nVersion: 1.0\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as f:
        f.write(textwrap.dedent("""\
            [gatelayer.filters]
            raising = broken_filters:raising
            stuck = broken_filters:stuck
            """))


class GatewayMixin:
    """
    Sending requests to the test's gateway.
    """

    @inlineCallbacks
    def request(self, method, target, headers=(), body=b""):
        """
        Send one request on a new connection; returns C{(status, headers,
        body)}.
        """
        lines = [b"%s %s HTTP/1.1" % (method, target), b"Host: api.example.test", b"Connection: close",
                 b"Content-Length: %d" % (len(body),)]
        lines += [name + b": " + value for name, value in headers]
        data = yield send_raw(reactor, self.gate.address("web"), b"\r\n".join(lines) + b"\r\n\r\n" + body)
        return parse_response(data)


class ExampleFilterGatewayTests(GatewayMixin, TestCase):
    """
    The example package's C{hmac_signature} type in a real two-worker
    gateway.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.example = example_filter()
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, "partner.secret"), "wb") as f:
            f.write(SECRET + b"\n")
        self.gate = yield start_gateway(self, reactor, SIGNED, self.directory)

    def signed(self, body, target=b"/orders?page=2", stamp=None, secret=SECRET):
        """
        The signature headers of a POST of C{body} to C{target}.
        """
        stamp = b"%d" % (int(reactor.seconds()),) if stamp is None else stamp
        return [(b"X-Signature", self.example.sign(secret, b"POST", target, stamp, body)),
                (b"X-Signature-Timestamp", stamp)]

    @inlineCallbacks
    def test_signed_requests_pass(self):
        """
        Signed requests pass on every worker (several connections, so both
        workers take some).
        """
        for n in range(6):
            body = b'{"order": %d}' % (n,)
            status, _, answer = yield self.request(b"POST", b"/orders?page=2", self.signed(body), body)
            self.assertEqual((status, answer), (200, b"accepted"))

    @inlineCallbacks
    def test_refusals(self):
        """
        A bad signature, a tampered body and a stale timestamp get 401
        problem details naming the reason, with the request's id.
        """
        body = b'{"order": 1}'
        stale = b"%d" % (int(reactor.seconds()) - 120,)
        table = [
            (self.signed(body, secret=b"x" * 32), body, "signature does not match"),
            (self.signed(body), b'{"order": 2}', "signature does not match"),
            (self.signed(body, stamp=stale), body, "timestamp outside the allowed skew"),
            ([], body, "missing signature"),
        ]
        for headers, sent, reason in table:
            status, answer_headers, answer = yield self.request(b"POST", b"/orders?page=2", headers, sent)
            self.assertEqual(status, 401)
            self.assertEqual(answer_headers[b"content-type"], [b"application/problem+json"])
            document = json.loads(answer)
            self.assertEqual(document["reason"], reason)
            self.assertEqual(document["request_id"].encode("ascii"), answer_headers[b"x-request-id"][0])

    @inlineCallbacks
    def test_check_rejects_unknown_key(self):
        """
        C{--check} reports a key the type does not declare, and a bad value,
        in the words it uses for built-in types.
        """
        other = os.path.join(self.directory, "bad")
        config = SIGNED.replace("max_skew = 1m", "max_skew = soon\nsecrets = typo")
        code, output = yield GatewayProcess(reactor, other, config).check()
        self.assertNotEqual(code, 0)
        path = os.path.join(other, "gate.ini")
        self.assertIn(f"{path} [filter:signed] secrets: is not a known key", output)
        self.assertIn(f"{path} [filter:signed] max_skew: 'soon' is not a duration", output)


class BrokenPluginGatewayTests(GatewayMixin, TestCase):
    """
    A plugin distribution whose filters raise or never answer, in a real
    two-worker gateway.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        plugins = os.path.abspath(self.mktemp())
        install_broken_plugin(plugins)
        path = os.pathsep.join(p for p in (plugins, os.environ.get("PYTHONPATH")) if p)
        self.patch(os, "environ", dict(os.environ, PYTHONPATH=path))
        self.gate = yield start_gateway(self, reactor, BROKEN)

    @inlineCallbacks
    def test_raising_filter_contained(self):
        """
        A filter that raises gets each request a 500 problem with the
        request id, the gateway log names the filter with the traceback, and
        the workers keep serving.
        """
        ids = []
        for _ in range(4):
            status, headers, body = yield self.request(b"GET", b"/raises")
            self.assertEqual(status, 500)
            document = json.loads(body)
            self.assertEqual(document["detail"], "a filter failed")
            self.assertNotIn("ZeroDivisionError", body.decode("utf-8"))
            ids.append(document["request_id"])
            status, _, body = yield self.request(b"GET", b"/plain")
            self.assertEqual((status, body), (200, b"plain"))
        yield wait_until(reactor, lambda: all(f"filter raises failed (request {i})" in self.gate.log() for i in ids),
                         DEADLINE, what="the failures in the log")
        self.assertIn("ZeroDivisionError: plugin bug", self.gate.log())

    @inlineCallbacks
    def test_stuck_filter_times_out(self):
        """
        A filter whose Deferred never fires gets the request a 500 problem
        once its 1s timeout passed, logged as a timeout with its name; the
        workers keep serving.
        """
        started = reactor.seconds()
        status, _, body = yield self.request(b"GET", b"/stuck")
        self.assertEqual(status, 500)
        self.assertEqual(json.loads(body)["detail"], "a filter failed")
        self.assertGreaterEqual(reactor.seconds() - started, 0.9)
        self.assertLess(reactor.seconds() - started, DEADLINE)
        yield wait_until(reactor, lambda: "filter stuck timed out after 1.0s" in self.gate.log(), DEADLINE,
                         what="the timeout in the log")
        for _ in range(4):
            status, _, body = yield self.request(b"GET", b"/plain")
            self.assertEqual((status, body), (200, b"plain"))
