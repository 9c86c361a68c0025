"""
Tests for L{gatelayer.tls.control}: certificate reload from the master to
workers over an in-memory AMP connection.
"""

import datetime
import json
import os

import attrs
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.model import TlsSpec
from gatelayer.process.control import ControlProtocol
from gatelayer.testing.certs import CertificateAuthority, memory_tls_connection, tls_client_creator, write_pem
from gatelayer.tls.control import (
    CHUNK_SIZE,
    CertificateChunk,
    CertificateReceiver,
    CertificateReloader,
    CertificateTransferError,
    ReloadCertificates,
    push_certificates,
    register_worker_responders,
)
from gatelayer.tls.policy import PolicyError
from gatelayer.tls.sni import SNIServerCreator
from gatelayer.tls.store import CertificateError, load_certificate_set

# Certificates are dated around a fixed moment, and the reloader's clock is
# set to it: validity checks do not depend on when the tests run.
_NOW = datetime.datetime(2030, 6, 1, tzinfo=datetime.timezone.utc)
_DAY = datetime.timedelta(days=1)
_CA = CertificateAuthority(now=_NOW)


def _issue(names, start=-10, end=80, **kw):
    return _CA.issue(names, not_before=_NOW + start * _DAY, not_after=_NOW + end * _DAY, **kw)


def _clock():
    clock = Clock()
    clock.advance(_NOW.timestamp())
    return clock


def _channel():
    """
    A master and a worker control protocol joined in memory.
    """
    worker, master, pump = iosim.connectedServerAndClient(ControlProtocol, ControlProtocol)
    return master, worker, pump


class _Sections:
    """
    Two C{[tls:*]} sections on disk.
    """

    def __init__(self, case):
        self.case = case
        self.web_dir = case.mktemp()
        self.api_dir = case.mktemp()
        self.web = TlsSpec(name="web", certificates=(self.web_dir,))
        self.api = TlsSpec(name="api", certificates=(self.api_dir,))
        self.specs = {"web": self.web, "api": self.api}
        self.put("web", "site.pem", _issue(["www.example.com"]))
        self.put("api", "api.pem", _issue(["api.example.com"]))

    def put(self, section, name, issued):
        directory = self.web_dir if section == "web" else self.api_dir
        return issued.write(os.path.join(directory, name))

    def sets(self):
        return {name: load_certificate_set(spec, _NOW) for name, spec in self.specs.items()}


def _served(creator, server_name):
    connection = memory_tls_connection(creator, tls_client_creator(server_name))
    return connection.peer_certificate()


class TransferTests(SynchronousTestCase):
    """
    L{push_certificates} carries sets of any size to a worker, which swaps
    all its sections at once.
    """

    def setUp(self):
        self.sections = _Sections(self)
        self.master, self.worker, self.pump = _channel()
        sets = self.sections.sets()
        self.creators = {name: SNIServerCreator(self.sections.specs[name], s) for name, s in sets.items()}
        self.receiver = register_worker_responders(self.worker, self.creators)

    def call(self, command, **arguments):
        """
        Send one command that must fail; the failure is taken at once (AMP
        drops the connection over an answer nobody handles).
        """
        failures = []
        self.master.callRemote(command, **arguments).addErrback(failures.append)
        self.pump.flush()
        [failure] = failures
        failure.trap(CertificateTransferError)
        return failure

    def push(self, sets, generation=None):
        d = push_certificates(self.master, sets, generation)
        self.pump.flush()
        return d

    def test_swap(self):
        """
        After a push, new handshakes on the worker get the new certificate.
        """
        renewed = _issue(["www.example.com"], end=200)
        self.sections.put("web", "site.pem", renewed)
        d = self.push(self.sections.sets())
        self.assertEqual(self.successResultOf(d), ["api", "web"])
        self.assertEqual(_served(self.creators["web"], "www.example.com"), renewed.certificate)

    def test_large_transfer(self):
        """
        More than 64 KB of certificates, and a single file larger than one
        AMP value, arrive intact.
        """
        for index in range(60):
            self.sections.put("api", f"host{index:02d}.pem", _issue([f"host{index}.example.com"]))
        big = _issue(["big.example.com"])
        padding = b"".join(b"# padding line %06d\n" % i for i in range(7000))
        write_pem(os.path.join(self.sections.api_dir, "big.pem"), padding + big.bundle_pem())
        sets = self.sections.sets()
        wire = sets["api"].to_wire()
        self.assertGreater(sum(map(len, wire)), 64 * 1024)
        self.assertGreater(max(map(len, wire)), 2 * CHUNK_SIZE)

        self.assertEqual(self.successResultOf(self.push(sets)), ["api", "web"])
        received = self.creators["api"].certificate_set
        self.assertEqual([e.pem for e in received.entries], [e.pem for e in sets["api"].entries])
        self.assertEqual(received.describe(), sets["api"].describe())
        self.assertEqual(_served(self.creators["api"], "host42.example.com").subject,
                         sets["api"].match("host42.example.com").certificate.subject)
        self.assertEqual(_served(self.creators["api"], "big.example.com"), big.certificate)

    def test_corrupt_rejected(self):
        """
        A transfer the worker cannot parse is refused with the file named,
        and no section changes (not even the good one).
        """
        before = {name: c.certificate_set for name, c in self.creators.items()}
        sets = self.sections.sets()

        class Broken:
            def to_wire(self):
                return [json.dumps({"file": "/etc/certs/broken.pem", "default": True}).encode() + b"\nxx"]

        sets["web"] = Broken()
        failure = self.failureResultOf(self.push(sets), CertificateTransferError)
        self.assertIn("/etc/certs/broken.pem", str(failure.value))
        self.assertEqual({name: c.certificate_set for name, c in self.creators.items()}, before)

    def test_unknown_section_rejected(self):
        """
        A section the worker does not have is refused, and nothing changes.
        """
        sets = self.sections.sets()
        sets["other"] = sets["web"]
        failure = self.failureResultOf(self.push(sets), CertificateTransferError)
        self.assertIn("[tls:other]", str(failure.value))
        self.assertEqual(self.receiver.generation, 0)

    def test_incomplete_rejected(self):
        """
        A commit whose pieces did not all arrive is refused.
        """
        manifest = json.dumps({"web": {"count": 1, "bytes": 10, "sha256": "0" * 64}}).encode()
        failure = self.call(ReloadCertificates, generation=5, manifest=manifest)
        self.assertIn("arrived incomplete", str(failure.value))

    def test_out_of_order_piece_rejected(self):
        """
        A piece that does not continue its file is refused.
        """
        failure = self.call(CertificateChunk, generation=5, tls="web", blob=0, offset=10, data=b"x")
        self.assertIn("piece at 10 arrived after 0 bytes", str(failure.value))

    def test_older_generation_refused(self):
        """
        Once a transfer is applied, an older one is refused: a slow reload
        never overwrites a newer one.
        """
        newer = self.sections.sets()
        self.successResultOf(self.push(newer, generation=10))
        self.sections.put("web", "site.pem", _issue(["www.example.com"], end=300))
        self.failureResultOf(self.push(self.sections.sets(), generation=9), CertificateTransferError)
        self.assertEqual(self.receiver.generation, 10)
        self.assertEqual(self.creators["web"].certificate_set.describe(), newer["web"].describe())

    def test_interleaved_transfers(self):
        """
        Two transfers in flight at once: each commits with its own pieces.
        """
        first = push_certificates(self.master, self.sections.sets(), 20)
        renewed = _issue(["www.example.com"], end=400)
        self.sections.put("web", "site.pem", renewed)
        second = push_certificates(self.master, self.sections.sets(), 21)
        self.pump.flush()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(_served(self.creators["web"], "www.example.com"), renewed.certificate)


class ReceiverTests(SynchronousTestCase):
    """
    A new worker starts without certificates and gets them from the master.
    """

    def test_creators_made_on_first_transfer(self):
        """
        A receiver without creators makes them from the first transfer, and
        L{CertificateReceiver.ready} fires once every section has one.
        """
        sections = _Sections(self)
        master, worker, pump = _channel()
        receiver = CertificateReceiver(sections.specs).register(worker)
        ready = receiver.ready()
        self.assertNoResult(ready)
        push_certificates(master, {"web": sections.sets()["web"]})
        pump.flush()
        self.assertNoResult(ready)
        push_certificates(master, {"api": sections.sets()["api"]})
        pump.flush()
        creators = self.successResultOf(ready)
        self.assertEqual(sorted(creators), ["api", "web"])
        self.assertEqual(_served(creators["api"], "api.example.com").subject.rfc4514_string(),
                         "CN=api.example.com")
        self.successResultOf(receiver.ready())


class ReloaderTests(SynchronousTestCase):
    """
    L{CertificateReloader} reloads all or nothing and reports what it did.
    """

    def setUp(self):
        self.sections = _Sections(self)
        self.clock = _clock()
        self.reloader = CertificateReloader(self.sections.specs, self.clock)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_load(self):
        """
        The start-up load fills C{current} and records a successful reload.
        """
        sets = self.reloader.load()
        self.assertEqual(sorted(sets), ["api", "web"])
        self.assertIs(self.reloader.current, sets)
        self.assertEqual(self.reloader.last_reload, {"at": _NOW.isoformat(), "ok": True, "error": None})

    def test_load_raises(self):
        """
        A bad certificate at start-up raises, naming the file.
        """
        path = write_pem(os.path.join(self.sections.web_dir, "bad.pem"), b"")
        error = self.assertRaises(CertificateError, self.reloader.load)
        self.assertEqual(error.path, path)

    def test_clock_decides_validity(self):
        """
        Validity is judged at the clock's time: past a certificate's end, the
        reload is refused.
        """
        self.reloader.load()
        self.clock.advance(81 * 86400)
        ok, error = self.reloader.reload()
        self.assertFalse(ok)
        self.assertIn("expired", str(error))

    def test_reload_good(self):
        """
        A good reload replaces C{current} and is recorded.
        """
        self.reloader.load()
        self.clock.advance(60)
        renewed = _issue(["www.example.com"], end=365)
        self.sections.put("web", "site.pem", renewed)
        ok, sets = self.reloader.reload()
        self.assertTrue(ok)
        self.assertIs(self.reloader.current, sets)
        self.assertEqual(sets["web"].entries[0].certificate, renewed.certificate)
        self.assertEqual(self.reloader.last_reload["at"], (_NOW + datetime.timedelta(seconds=60)).isoformat())

    def test_reload_bad_keeps_old(self):
        """
        A bad file anywhere leaves every section as it was, and the log and
        C{last_reload} name the file and reason.
        """
        before = self.reloader.load()
        bad = self.sections.put("api", "new.pem", _issue(["new.example.com"], start=-20, end=-1))
        ok, error = self.reloader.reload()
        self.assertFalse(ok)
        self.assertIs(self.reloader.current, before)
        self.assertEqual(error.path, bad)
        self.assertFalse(self.reloader.last_reload["ok"])
        self.assertIn(bad, self.reloader.last_reload["error"])
        self.assertIn("expired", self.reloader.last_reload["error"])
        logged = [e for e in self.events if bad in e.get("error", "")]
        self.assertEqual(len(logged), 1)

    def test_policy_checked(self):
        """
        A cipher string OpenSSL refuses fails the load and a reload, naming
        the section and key.
        """
        specs = dict(self.sections.specs, web=attrs.evolve(self.sections.web, ciphers="NOPE"))
        self.assertRaises(PolicyError, CertificateReloader(specs, self.clock).load)
        self.reloader.load()
        ok, error = self.reloader.reload(specs)
        self.assertFalse(ok)
        self.assertIn("[tls:web] ciphers", str(error))
        self.assertIsNot(self.reloader.specs["web"], specs["web"])

    def test_status(self):
        """
        C{status} lists each section's certificates with names and not-after
        dates, and the last reload.
        """
        self.reloader.load()
        status = self.reloader.status()
        self.assertEqual(sorted(status["certificates"]), ["api", "web"])
        [web] = status["certificates"]["web"]
        self.assertEqual(web["names"], ["www.example.com"])
        self.assertEqual(web["not_after"], (_NOW + 80 * _DAY).isoformat())
        self.assertTrue(status["last_reload"]["ok"])
        json.dumps(status)

    def test_reload_and_push(self):
        """
        SIGHUP's work: reload, then push to every worker; a worker that
        refuses is reported while the others swap.
        """
        self.reloader.load()
        channels = [_channel() for _ in range(3)]
        creators = []
        for index, (master, worker, pump) in enumerate(channels):
            if index == 2:
                # This worker's configuration lacks [tls:api]: it refuses.
                sets = {"web": self.reloader.current["web"]}
                mine = {"web": SNIServerCreator(self.sections.web, sets["web"])}
            else:
                mine = {n: SNIServerCreator(self.sections.specs[n], s) for n, s in self.reloader.current.items()}
            register_worker_responders(worker, mine)
            creators.append(mine)
        renewed = _issue(["www.example.com"], end=365)
        self.sections.put("web", "site.pem", renewed)
        d = self.reloader.reload_and_push([master for master, _, _ in channels])
        for _, _, pump in channels:
            pump.flush()
        ok, results = self.successResultOf(d)
        self.assertTrue(ok)
        self.assertEqual([success for success, _ in results], [True, True, False])
        self.assertEqual(self.reloader.last_push["failed"], 1)
        self.assertEqual(self.reloader.last_push["workers"], 3)
        for mine in creators[:2]:
            self.assertEqual(_served(mine["web"], "www.example.com"), renewed.certificate)
        self.assertNotEqual(_served(creators[2]["web"], "www.example.com"), renewed.certificate)

    def test_reload_and_push_bad(self):
        """
        A bad reload pushes nothing.
        """
        self.reloader.load()
        master, worker, pump = _channel()
        pushed = []
        worker.register(CertificateChunk, lambda **kw: pushed.append(kw) or {})
        write_pem(os.path.join(self.sections.web_dir, "bad.pem"), b"-----BEGIN CERTIFICATE-----\nAB")
        d = self.reloader.reload_and_push([master])
        pump.flush()
        ok, error = self.successResultOf(d)
        self.assertFalse(ok)
        self.assertIn("truncated", str(error))
        self.assertEqual(pushed, [])
