"""
Tests for L{gatelayer.tls.ocsp_fetch}: the master's responses, fetched from
an in-memory responder on a L{Clock}, refreshed, retried, kept and dropped,
and read from files.
"""

import datetime
import os

from cryptography.hazmat.primitives import hashes
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from gatelayer.config.model import TlsSpec
from gatelayer.testing.certs import CertificateAuthority, write_pem
from gatelayer.testing.ocsp import FakeResponder, ocsp_response, unsuccessful_response
from gatelayer.tls.ocsp import OCSPError
from gatelayer.tls.ocsp_fetch import MAX_RESPONSE_SIZE, OCSPStapler, http_post, read_staple_file
from gatelayer.tls.store import load_certificate_set

# Everything is dated around a fixed moment the clock starts at: nothing
# depends on when the tests run.
_NOW = datetime.datetime(2030, 6, 1, tzinfo=datetime.timezone.utc)
_DAY = datetime.timedelta(days=1)
_HOUR = datetime.timedelta(hours=1)
_ROOT = CertificateAuthority(now=_NOW)
_CA = _ROOT.intermediate()
_URL = "http://127.0.0.1:9/"
_OTHER_URL = "http://127.0.0.1:10/"


def _issue(name, url=_URL, ca=_CA):
    return ca.issue([name], not_before=_NOW - 10 * _DAY, not_after=_NOW + 80 * _DAY, ocsp_url=url)


_WWW = _issue("www.example.com")
_API = _issue("api.example.com", url=_OTHER_URL)


def _fingerprint(issued):
    return issued.certificate.fingerprint(hashes.SHA256()).hex()


def _response(issued, hours=4, **kw):
    return ocsp_response(issued, _CA, this_update=_NOW - _HOUR, next_update=_NOW + hours * _HOUR, **kw)


class _Case(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(_NOW.timestamp())
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.responder = FakeResponder()
        self.changes = []
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.stapler = OCSPStapler(
            self.clock, lambda f, s: self.changes.append((f, s)), post=self.responder.post)
        self.addCleanup(self.stapler.stop)

    def section(self, *issued, mode="auto", name="main"):
        paths = [i.write(os.path.join(self.directory, f"{name}{n}.pem")) for n, i in enumerate(issued)]
        spec = TlsSpec(name=name, certificates=tuple(paths), ocsp_staple=mode)
        return spec, load_certificate_set(spec, now=_NOW)

    def serve(self, *sections):
        self.stapler.update({s.name: s for s, _ in sections}, {s.name: c for s, c in sections})

    def logged(self, text):
        return [e for e in self.events if text in str(e.get("log_format", "")) or
                any(text in str(v) for v in e.values() if isinstance(v, str))]


class AutoTests(_Case):
    """
    C{auto}: fetched at start, refreshed half-way, retried with backoff,
    kept until it expires.
    """

    def test_fetch_and_refresh(self):
        """
        Starting fetches every certificate's response from its own
        responder; each is announced once and refreshed half-way to its
        nextUpdate.
        """
        self.responder.responses = {_URL: _response(_WWW), _OTHER_URL: _response(_API)}
        self.serve(self.section(_WWW, _API))
        self.assertEqual(self.responder.requests, [])
        self.stapler.start()
        self.clock.advance(0)
        self.assertEqual(sorted(url for url, _ in self.responder.requests), [_OTHER_URL, _URL])
        serials = {r.serial_number for _, r in self.responder.requests}
        self.assertEqual(serials, {_WWW.certificate.serial_number, _API.certificate.serial_number})
        self.assertEqual(len(self.changes), 2)
        self.assertEqual(len(self.stapler.staples()), 2)
        # 4 hours left: the refresh comes after 2.
        self.clock.advance(2 * 3600 - 1)
        self.assertEqual(len(self.responder.requests), 2)
        self.responder.responses = {_URL: _response(_WWW, hours=6), _OTHER_URL: _response(_API, hours=6)}
        self.clock.advance(1)
        self.assertEqual(len(self.responder.requests), 4)
        self.assertEqual(len(self.changes), 4)

    def test_same_response_not_pushed_again(self):
        """
        A refresh that brings the very same response is not pushed again.
        """
        self.responder.responses = {_URL: _response(_WWW)}
        self.serve(self.section(_WWW))
        self.stapler.start()
        self.clock.advance(2 * 3600)
        self.assertEqual(len(self.responder.requests), 2)
        self.assertEqual(len(self.changes), 1)

    def test_failure_keeps_until_expiry(self):
        """
        A failing responder: the last good response stays (retries come
        after 30s, then 60s), and at its nextUpdate it is dropped.
        """
        self.responder.responses = {_URL: _response(_WWW, hours=2)}
        self.serve(self.section(_WWW))
        self.stapler.start()
        fingerprint, staple = self.changes[0]
        self.responder.responses = {_URL: ConnectionRefusedError("refused")}
        self.clock.advance(3600)
        self.assertEqual(len(self.responder.requests), 2)
        self.assertEqual(self.stapler.staples(), [(fingerprint, staple)])
        self.clock.advance(29)
        self.assertEqual(len(self.responder.requests), 2)
        self.clock.advance(1)
        self.assertEqual(len(self.responder.requests), 3)
        self.clock.advance(60)
        self.assertEqual(len(self.responder.requests), 4)
        row = self.stapler.status()["main"][0]
        self.assertTrue(row["stapling"])
        self.assertIn("refused", row["last_error"])
        self.assertTrue(self.logged("keeping the response until it expires"))
        self.clock.advance(3600 - 90)
        self.assertEqual(self.changes[-1], (fingerprint, None))
        self.assertEqual(self.stapler.staples(), [])
        self.assertFalse(self.stapler.status()["main"][0]["stapling"])

    def test_recovery_after_expiry(self):
        """
        Once the responder answers again, stapling resumes and the retry
        delay starts over.
        """
        self.responder.responses = {_URL: unsuccessful_response()}
        self.serve(self.section(_WWW))
        self.stapler.start()
        self.assertEqual(self.changes, [])
        self.assertIn("try_later", self.stapler.status()["main"][0]["last_error"])
        self.responder.responses = {_URL: ocsp_response(
            _WWW, _CA, this_update=_NOW, next_update=_NOW + 4 * _HOUR)}
        self.clock.advance(30)
        self.assertEqual(len(self.changes), 1)
        self.assertIsNone(self.stapler.status()["main"][0]["last_error"])

    def test_bad_responses_not_stapled(self):
        """
        A response for another certificate, an expired one or garbage is
        never stapled; the reason is shown.
        """
        for answer, reason in [(_response(_API), "another certificate"),
                               (ocsp_response(_WWW, _CA, this_update=_NOW - 3 * _HOUR,
                                              next_update=_NOW - _HOUR), "expired"),
                               (b"<html>oops</html>", "not a DER OCSP response")]:
            with self.subTest(reason):
                stapler = OCSPStapler(self.clock, lambda f, s: self.changes.append((f, s)),
                                      post=FakeResponder({_URL: answer}).post)
                spec, certificate_set = self.section(_WWW)
                stapler.update({"main": spec}, {"main": certificate_set})
                stapler.start()
                self.assertEqual(self.changes, [])
                self.assertIn(reason, stapler.status()["main"][0]["last_error"])
                stapler.stop()

    def test_revoked_stapled_and_logged(self):
        """
        A revoked status is stapled, and logged as an error.
        """
        self.responder.responses = {_URL: _response(_WWW, status="revoked")}
        self.serve(self.section(_WWW))
        self.stapler.start()
        self.assertEqual(self.changes[0][1].status, "revoked")
        self.assertTrue(self.logged("revoked"))

    def test_unstapleable_logged_once(self):
        """
        A certificate without a responder URL, or whose issuer is not in its
        file, is logged once and never fetched for.
        """
        bare = _CA.issue(["bare.example.com"], not_before=_NOW - _DAY, not_after=_NOW + _DAY)
        root_leaf = _ROOT.issue(["root.example.com"], not_before=_NOW - _DAY, not_after=_NOW + _DAY,
                                ocsp_url=_URL)
        sections = [self.section(bare, root_leaf)]
        self.serve(*sections)
        self.serve(*sections)
        self.stapler.start()
        self.clock.advance(3600)
        self.assertEqual(self.responder.requests, [])
        self.assertEqual(len(self.logged("not stapled")), 2)
        errors = [row["last_error"] for row in self.stapler.status()["main"]]
        self.assertTrue(any("authorityInfoAccess" in e for e in errors))
        self.assertTrue(any("issuer is not in" in e for e in errors))

    def test_in_flight_bounded(self):
        """
        At most two fetches run at once; the others wait their turn.
        """
        issued = [_issue(f"h{n}.example.com") for n in range(5)]
        self.responder.hold = True
        self.responder.answer = lambda url, request: ocsp_response(
            next(i for i in issued if i.certificate.serial_number == request.serial_number), _CA,
            this_update=_NOW - _HOUR, next_update=_NOW + _HOUR)
        self.serve(self.section(*issued))
        self.stapler.start()
        self.clock.advance(0)
        self.assertEqual(len(self.responder.requests), 2)
        for expected in (4, 5):
            self.responder.release()
            self.assertEqual(len(self.responder.requests), expected)
        self.responder.release()
        self.assertEqual(len(self.stapler.staples()), 5)

    def test_certificate_reload(self):
        """
        A new certificate in place of the old one is fetched for; the old
        one's response is withdrawn.
        """
        self.responder.responses = {_URL: _response(_WWW)}
        self.serve(self.section(_WWW))
        self.stapler.start()
        old = self.changes[0][0]
        renewed = _issue("www.example.com")
        self.responder.responses = {_URL: _response(renewed)}
        self.serve(self.section(renewed))
        self.assertEqual(self.changes[1], (old, None))
        self.assertEqual(self.changes[2][0], _fingerprint(renewed))

    def test_stop_leaves_no_timer(self):
        """
        Stopping cancels every refresh and expiry timer.
        """
        self.responder.responses = {_URL: _response(_WWW)}
        self.serve(self.section(_WWW))
        self.stapler.start()
        self.assertTrue(self.clock.getDelayedCalls())
        self.stapler.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_off_sections_ignored(self):
        """
        A section without C{ocsp_staple} is not fetched for.
        """
        self.serve(self.section(_WWW, mode=None))
        self.stapler.start()
        self.assertEqual((self.responder.requests, self.stapler.status()), ([], {}))


class FileTests(_Case):
    """
    C{ocsp_staple = FILE}: read and checked like a fetched response.
    """

    def write(self, der, name="staple.der"):
        return write_pem(os.path.join(self.directory, name), der)

    def test_file_staples_its_certificate(self):
        """
        The file's response is stapled for the certificate it is about, of
        the several the section holds.
        """
        path = self.write(_response(_API))
        self.serve(self.section(_WWW, _API, mode=path))
        [(fingerprint, staple)] = self.changes
        self.assertEqual(fingerprint, _fingerprint(_API))
        self.assertEqual(self.responder.requests, [])
        self.clock.advance(4 * 3600)
        self.assertEqual(self.changes[-1], (fingerprint, None))

    def test_bad_file_on_reload_keeps_old(self):
        """
        A reload finding a bad file logs it and keeps the response it had.
        """
        path = self.write(_response(_WWW))
        self.serve(self.section(_WWW, mode=path))
        self.write(b"garbage")
        self.serve(self.section(_WWW, mode=path))
        self.assertEqual(len(self.stapler.staples()), 1)
        self.assertIn("not a DER OCSP response", self.stapler.status()["main"][0]["last_error"])
        self.assertTrue(self.logged("stays"))

    def test_read_errors(self):
        """
        L{read_staple_file} names the section, key, file and the problem: a
        table of bad files.
        """
        spec, certificate_set = self.section(_WWW, mode="unused")
        cases = [
            ("missing", None, "cannot be read"),
            ("garbage", b"\x30\x03abc", "not a DER OCSP response"),
            ("other cert", _response(_API), "another certificate"),
            ("expired", ocsp_response(_WWW, _CA, this_update=_NOW - 3 * _HOUR, next_update=_NOW - _HOUR),
             "expired"),
            ("huge", b"\x00" * 70000, "larger than"),
        ]
        for name, der, reason in cases:
            with self.subTest(name):
                path = os.path.join(self.directory, name) if der is None else self.write(der, name)
                e = self.assertRaises(OCSPError, read_staple_file,
                                      TlsSpec(name="main", certificates=spec.certificates, ocsp_staple=path),
                                      certificate_set, _NOW)
                self.assertIn(f"[tls:main] ocsp_staple: {path}", str(e))
                self.assertIn(reason, str(e))


class _Response:
    """
    An C{IResponse} stand-in delivering C{body} at once.
    """

    def __init__(self, code, body):
        self.code = code
        self.body = body

    def deliverBody(self, protocol):
        protocol.makeConnection(StringTransport())
        if self.body:
            protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class _Agent:
    """
    An C{IAgent} answering every request with C{response} (or never, for
    L{None}), keeping what it was asked.
    """

    def __init__(self, response):
        self.response = response
        self.requests = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.requests.append((method, uri, headers, bodyProducer))
        return Deferred() if self.response is None else succeed(self.response)


class HTTPPostTests(SynchronousTestCase):
    """
    L{http_post} POSTs the request and takes only a bounded 200 answer in
    time.
    """

    def test_post(self):
        """
        The request goes out as an C{application/ocsp-request} POST of its
        length; a 200 answer's body is the response.
        """
        agent = _Agent(_Response(200, b"DER"))
        d = http_post(agent, Clock(), "http://127.0.0.1:9/", b"request", 10.0)
        self.assertEqual(self.successResultOf(d), b"DER")
        [(method, uri, headers, producer)] = agent.requests
        self.assertEqual((method, uri, producer.length), (b"POST", b"http://127.0.0.1:9/", 7))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/ocsp-request"])

    def test_refused_answers(self):
        """
        Another status, an oversized body and silence past the timeout all
        fail the fetch.
        """
        for response, reason in [(_Response(503, b"busy"), "HTTP 503"),
                                 (_Response(200, b"x" * (MAX_RESPONSE_SIZE + 1)), "larger than")]:
            with self.subTest(reason):
                d = http_post(_Agent(response), Clock(), "http://127.0.0.1:9/", b"r", 10.0)
                self.assertIn(reason, self.failureResultOf(d).getErrorMessage())
        clock = Clock()
        d = http_post(_Agent(None), clock, "http://127.0.0.1:9/", b"r", 10.0)
        self.assertNoResult(d)
        clock.advance(10)
        self.failureResultOf(d, TimeoutError)
        self.assertEqual(clock.getDelayedCalls(), [])
