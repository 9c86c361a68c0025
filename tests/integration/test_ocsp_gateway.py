"""
OCSP stapling through a real gateway: a twistd master with two workers on
loopback, a real C{openssl ocsp} responder answering for the test's CA, and
real TLS clients asking for the certificate status.

Covers C{ocsp_staple = auto} (stapled by every worker, kept while the
responder is down and dropped when it expires, a revoked status stapled) and
C{ocsp_staple = FILE} (stapled until it expires, a bad file refused by
C{--check} and by a reload, which keeps the old response).
"""

import datetime
import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from gatelayer.testing.certs import CertificateAuthority, write_pem
from gatelayer.testing.gateway import GatewayProcess
from gatelayer.testing.http import fetch
from gatelayer.testing.ocsp import (
    OpenSSLResponder, StaplingClientCreator, ocsp_response, ocsp_signer, stapled_response,
)
from gatelayer.testing.waiting import wait_until
from gatelayer.tls.ocsp import check_response

# Longest wait for a start, a fetch or a reload.
DEADLINE = 15.0

_CONFIG = """\
[gateway]
workers = 2
admin = 127.0.0.1:0

[listener:secure]
bind = 127.0.0.1:0
tls = main

[tls:main]
certificates = certs/
ocsp_staple = {staple}

[route:hello]
path = /
respond = 200 hello
"""


@implementer(IPolicyForHTTPS)
class _StaplingPolicy:
    """
    An HTTPS client policy asking every connection for the certificate
    status (the staples are in C{creator.stapled}).
    """

    def __init__(self):
        self.creator = StaplingClientCreator("www.example.com")

    def creatorForNetloc(self, hostname, port):
        """
        The stapling creator, for any host.
        """
        return self.creator


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


class OCSPGatewayTests(TestCase):
    """
    A gateway stapling OCSP responses for C{www.example.com}, issued by an
    intermediate CA whose certificate is in the file's chain.
    """

    timeout = 180

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.ca = CertificateAuthority().intermediate()

    def responder(self, minutes=1, revoked=False):
        """
        A running C{openssl ocsp} responder for the CA (stopped at the end),
        signing with a delegated responder certificate, and the leaf naming
        it (L{leaf}), listed valid or revoked.
        """
        responder = OpenSSLResponder(self.ca, ocsp_signer(self.ca), minutes=minutes)
        [(leaf, _)] = responder.start(lambda url: [(self.leaf(url), revoked)])
        self.addCleanup(responder.stop)
        return responder, leaf

    def leaf(self, url=None):
        """
        Issue C{www.example.com} (naming C{url} as its responder) and write
        it with its chain and key where the gateway reads certificates.
        """
        leaf = self.ca.issue(["www.example.com"], ocsp_url=url)
        leaf.write(os.path.join(self.directory, "certs", "www.pem"))
        return leaf

    @inlineCallbacks
    def start(self, staple):
        self.gate = GatewayProcess(reactor, self.directory, _CONFIG.format(staple=staple))
        self.addCleanup(self.gate.stop)
        yield self.gate.start()

    @inlineCallbacks
    def status(self):
        """
        The admin C{/status} document.
        """
        response = yield fetch(reactor, self.gate.admin_url("/status"))
        return response.json()

    def stapled(self):
        """
        What one new handshake was stapled (C{b""}: nothing).
        """
        return stapled_response(reactor, self.gate.address("secure"), "www.example.com", timeout=DEADLINE)

    @inlineCallbacks
    def wait_stapled(self, wanted=True, what="a stapled response"):
        """
        Handshake until one is stapled (or, with C{wanted} false, until
        none is); fire with the last stapled bytes.
        """
        seen = []

        @inlineCallbacks
        def probe():
            seen.append((yield self.stapled()))
            return bool(seen[-1]) == wanted
        yield wait_until(reactor, probe, timeout=DEADLINE if wanted else 90.0, interval=0.2, what=what)
        return seen[-1]

    @inlineCallbacks
    def test_auto_stapled_by_every_worker(self):
        """
        With C{auto}, the master fetches the response from the responder the
        certificate names, and both workers staple it: a valid, good
        response for the served certificate. C{/status} shows it.
        """
        responder, leaf = self.responder()
        yield self.start("auto")
        der = yield self.wait_stapled()
        staple = check_response(der, leaf.certificate, self.ca.certificate, _now())
        self.assertEqual(staple.status, "good")
        # HTTPS requests until both workers have answered some: every
        # connection was stapled.
        policy = _StaplingPolicy()

        @inlineCallbacks
        def both_served():
            response = yield fetch(reactor, self.gate.url("secure", "/", scheme="https"), context_factory=policy)
            self.assertEqual((response.status, policy.creator.stapled[-1]), (200, der))
            workers = (yield self.status())["workers"]
            return len(workers) == 2 and all(w["requests"] > 0 for w in workers)
        yield wait_until(reactor, both_served, timeout=DEADLINE, interval=0.1, what="both workers serving")
        [row] = (yield self.status())["ocsp"]["main"]
        self.assertEqual((row["mode"], row["stapling"], row["responder"], row["last_error"]),
                         ("auto", True, responder.url, None))
        self.assertEqual(row["response"]["status"], "good")
        self.assertEqual(datetime.datetime.fromisoformat(row["response"]["next_update"]), staple.next_update)

    @inlineCallbacks
    def test_respawn_and_rotation(self):
        """
        A respawned worker staples from its first connection on (it gets
        the response before it serves), and a certificate rotated in on
        SIGHUP is stapled with a response fetched for it.
        """
        responder, leaf = self.responder()
        yield self.start("auto")
        der = yield self.wait_stapled()
        victim = (yield self.status())["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        policy = _StaplingPolicy()

        @inlineCallbacks
        def respawned_serves():
            worker = (yield self.status())["workers"][0]
            if worker["pid"] == victim or not worker["alive"]:
                return False
            response = yield fetch(reactor, self.gate.url("secure", "/", scheme="https"), context_factory=policy)
            self.assertEqual((response.status, policy.creator.stapled[-1]), (200, der))
            return (yield self.status())["workers"][0]["requests"] > 0
        yield wait_until(reactor, respawned_serves, timeout=DEADLINE, interval=0.1,
                         what="the respawned worker serving")
        # The responder reads its index at start: list the new certificate
        # and start it again on the same port.
        responder.stop()
        rotated = self.leaf(responder.url)
        responder.add(rotated)
        responder.start()
        before = (yield self.status())["reload"]["last"]
        self.gate.signal("HUP")

        @inlineCallbacks
        def reloaded():
            return (yield self.status())["reload"]["last"] != before
        yield wait_until(reactor, reloaded, timeout=DEADLINE, what="the reload")

        @inlineCallbacks
        def rotated_stapled():
            stapled = yield self.stapled()
            return stapled and stapled != der and check_response(
                stapled, rotated.certificate, self.ca.certificate, _now()).status == "good"
        yield wait_until(reactor, rotated_stapled, timeout=DEADLINE, interval=0.2,
                         what="the rotated certificate stapled")

    @inlineCallbacks
    def test_responder_down_kept_until_expiry(self):
        """
        When the responder stops answering, the last good response is still
        stapled (the failed refresh shows in C{/status}) until its
        nextUpdate; from then on nothing is stapled.
        """
        responder, leaf = self.responder(minutes=1)
        yield self.start("auto")
        der = yield self.wait_stapled()
        staple = check_response(der, leaf.certificate, self.ca.certificate, _now())
        responder.stop()

        @inlineCallbacks
        def refresh_failed():
            [row] = (yield self.status())["ocsp"]["main"]
            return row["last_error"]
        # The refresh comes half-way (30 s) into the one-minute response.
        yield wait_until(reactor, refresh_failed, timeout=60.0, interval=0.5, what="a failed refresh")
        if _now() < staple.next_update - datetime.timedelta(seconds=2):
            self.assertEqual((yield self.stapled()), der)
        yield self.wait_stapled(wanted=False, what="the expired response dropped")
        self.assertGreaterEqual(_now(), staple.next_update)
        [row] = (yield self.status())["ocsp"]["main"]
        self.assertFalse(row["stapling"])

    @inlineCallbacks
    def test_revoked_stapled(self):
        """
        A revoked certificate is stapled with its revoked status, and the
        master logs it as an error.
        """
        responder, leaf = self.responder(revoked=True)
        yield self.start("auto")
        der = yield self.wait_stapled()
        self.assertEqual(check_response(der, leaf.certificate, self.ca.certificate, _now()).status, "revoked")
        self.assertIn("revoked", self.gate.log())

    @inlineCallbacks
    def test_file(self):
        """
        C{ocsp_staple = FILE}: the file's response is stapled; a reload
        finding a bad file is refused and the old response stays; once it
        expires nothing is stapled.
        """
        leaf = self.leaf()
        now = _now()
        der = ocsp_response(leaf, self.ca, this_update=now - datetime.timedelta(minutes=1),
                            next_update=now + datetime.timedelta(seconds=25))
        path = write_pem(os.path.join(self.directory, "staple.der"), der)
        yield self.start("staple.der")
        self.assertEqual((yield self.wait_stapled()), der)
        write_pem(path, b"garbage")
        before = (yield self.status())["reload"]["last"]
        self.gate.signal("HUP")

        @inlineCallbacks
        def reloaded():
            last = (yield self.status())["reload"]["last"]
            return last if last != before else None
        last = yield wait_until(reactor, reloaded, timeout=DEADLINE, what="the reload")
        self.assertFalse(last["ok"])
        self.assertIn("ocsp_staple", str(last))
        if _now() < now + datetime.timedelta(seconds=20):
            self.assertEqual((yield self.stapled()), der)
        yield self.wait_stapled(wanted=False, what="the expired file response dropped")

    @inlineCallbacks
    def test_check_bad_file(self):
        """
        C{--check} refuses a response file for another certificate, naming
        the section, key and file.
        """
        self.leaf()
        other = self.ca.issue(["other.example.com"])
        write_pem(os.path.join(self.directory, "staple.der"), ocsp_response(other, self.ca))
        gate = GatewayProcess(reactor, self.directory, _CONFIG.format(staple="staple.der"))
        code, output = yield gate.check()
        self.assertEqual(code, 1, output)
        self.assertIn("[tls:main] ocsp_staple: ", output)
        self.assertIn("staple.der", output)
        self.assertIn("another certificate", output)
