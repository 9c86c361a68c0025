"""
Certificate reload over the control channel.

The master loads and validates certificates (L{CertificateReloader}) and
sends each worker the validated bytes (L{push_certificates}). AMP limits a
value to 64 KB, so a transfer is a series of L{CertificateChunk} commands
followed by one L{ReloadCertificates} commit. The worker
(L{CertificateReceiver}) reassembles the sets, checks them against the
commit's manifest, parses them, builds every context, and only then swaps
all its SNI creators; anything wrong rejects the whole transfer and the
worker keeps serving what it had.

Transfers carry a generation number: a commit older than the last one a
worker applied is refused, so two reloads in quick succession can never end
with the older certificates in place.
"""

import datetime
import hashlib
import itertools
import json

from OpenSSL import SSL
from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols import amp

from .policy import PolicyError, check_policy
from .sni import SNIServerCreator
from .store import CertificateError, CertificateSet, load_certificate_set

__all__ = [
    "CHUNK_SIZE",
    "CertificateChunk",
    "ReloadCertificates",
    "CertificateTransferError",
    "push_certificates",
    "CertificateReceiver",
    "register_worker_responders",
    "CertificateReloader",
]

#: Bytes of certificate data per AMP command; AMP's limit per value is 65535.
CHUNK_SIZE = 60000

# Pending transfers a worker keeps at most (two overlapping reloads are
# plenty; more means a master that never commits).
_MAX_PENDING = 4

_generations = itertools.count(1)


class CertificateTransferError(Exception):
    """
    A worker rejected a certificate transfer: incomplete, corrupted, for a
    section it does not know, or superseded by a newer one. The message
    says which.
    """


class CertificateChunk(amp.Command):
    """
    Master -> worker: a piece of one certificate file of a transfer.

    C{blob} is the file's position in its set's L{CertificateSet.to_wire}
    list, C{offset} where C{data} goes in it; pieces arrive in order.
    """

    arguments = [
        (b"generation", amp.Integer()),
        (b"tls", amp.Unicode()),
        (b"blob", amp.Integer()),
        (b"offset", amp.Integer()),
        (b"data", amp.String()),
    ]
    response = []
    errors = {CertificateTransferError: b"CERTIFICATE_TRANSFER_ERROR"}


class ReloadCertificates(amp.Command):
    """
    Master -> worker: every piece of transfer C{generation} was sent; check
    it against C{manifest} (JSON: per section the number of files, their
    total size and a SHA-256 over them) and serve it.

    Answers with the sections swapped; fails with
    L{CertificateTransferError}, changing nothing, otherwise.
    """

    arguments = [
        (b"generation", amp.Integer()),
        (b"manifest", amp.String()),
    ]
    response = [(b"swapped", amp.ListOf(amp.Unicode()))]
    errors = {CertificateTransferError: b"CERTIFICATE_TRANSFER_ERROR"}


def _digest(blobs):
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(len(blob).to_bytes(8, "big"))
        digest.update(blob)
    return digest.hexdigest()


def _chunks(blob):
    if not blob:
        yield 0, b""
    for offset in range(0, len(blob), CHUNK_SIZE):
        yield offset, blob[offset:offset + CHUNK_SIZE]


def push_certificates(protocol, sets, generation=None):
    """
    Send C{sets} (C{{tls name: CertificateSet}}) to the worker at the other
    end of C{protocol} (a C{ControlProtocol}) and have it swap them in.

    @param generation: the transfer's number; later pushes must use larger
        numbers (default: the next of this process's counter).
    @return: a Deferred firing with the list of sections the worker swapped,
        or failing with L{CertificateTransferError} (nothing changed there).
    """
    if generation is None:
        generation = next(_generations)
    manifest = {}
    sent = []
    for name, certificate_set in sorted(sets.items()):
        blobs = certificate_set.to_wire()
        manifest[name] = {"count": len(blobs), "bytes": sum(map(len, blobs)), "sha256": _digest(blobs)}
        for index, blob in enumerate(blobs):
            for offset, data in _chunks(blob):
                sent.append(protocol.callRemote(
                    CertificateChunk, generation=generation, tls=name, blob=index,
                    offset=offset, data=data))

    def commit(_):
        return protocol.callRemote(
            ReloadCertificates, generation=generation,
            manifest=json.dumps(manifest, sort_keys=True).encode("utf-8"))

    def unwrap(failure):
        failure.trap(defer.FirstError)
        return failure.value.subFailure

    d = defer.gatherResults(sent, consumeErrors=True)
    d.addErrback(unwrap)
    d.addCallback(commit)
    d.addCallback(lambda response: list(response["swapped"]))
    return d


class CertificateReceiver:
    """
    The worker end of certificate transfers: reassembles chunks, validates
    a committed transfer and swaps the SNI creators of all sections at once.

    @ivar specs: C{{tls name: TlsSpec}} of the worker's configuration.
    @ivar creators: C{{tls name: SNIServerCreator}}; a section without a
        creator gets one on its first transfer (a new worker starts empty and
        is served its certificates by the master).
    @ivar generation: the last transfer applied (0: none yet).
    @ivar staples: the L{gatelayer.tls.ocsp_control.StapleBook} new
        creators staple from, or L{None}.
    @ivar tickets: a callable giving the session ticket key ring of a
        section (or L{None}) for the creators this receiver makes.
    """

    log = Logger()

    def __init__(self, specs, creators=None, staples=None, tickets=None):
        self.specs = dict(specs)
        self.staples = staples
        self.tickets = tickets if tickets is not None else (lambda name: None)
        self.creators = creators if creators is not None else {}
        self.generation = 0
        self._pending = {}
        self._waiting = []

    def register(self, protocol):
        """
        Answer L{CertificateChunk} and L{ReloadCertificates} on C{protocol}
        (a C{ControlProtocol}); returns C{self}.
        """
        protocol.register(CertificateChunk, self.chunk)
        protocol.register(ReloadCertificates, self.commit)
        return self

    def ready(self):
        """
        A Deferred firing (with C{creators}) once every section has a
        creator: when the worker can wrap its TLS listeners.
        """
        if self._complete():
            return defer.succeed(self.creators)
        d = defer.Deferred()
        self._waiting.append(d)
        return d

    def _complete(self):
        return all(name in self.creators for name in self.specs)

    def chunk(self, generation, tls, blob, offset, data):
        """
        Keep one piece of transfer C{generation}.
        """
        if generation <= self.generation:
            raise CertificateTransferError(
                f"transfer {generation} is older than the applied transfer {self.generation}")
        transfer = self._pending.get(generation)
        if transfer is None:
            while len(self._pending) >= _MAX_PENDING:
                del self._pending[min(self._pending)]
            transfer = self._pending[generation] = {}
        buffer = transfer.setdefault(tls, {}).setdefault(blob, bytearray())
        if offset != len(buffer):
            raise CertificateTransferError(
                f"transfer {generation} [tls:{tls}] file #{blob + 1}: piece at {offset} "
                f"arrived after {len(buffer)} bytes")
        buffer += data
        return {}

    def commit(self, generation, manifest):
        """
        Check transfer C{generation} against C{manifest} and swap every
        section it holds, or nothing.
        """
        if generation <= self.generation:
            raise CertificateTransferError(
                f"transfer {generation} is superseded by the applied transfer {self.generation}")
        transfer = self._pending.pop(generation, {})
        try:
            expected = json.loads(manifest)
        except ValueError:
            raise CertificateTransferError(f"transfer {generation} has an unreadable manifest") from None
        prepared = {}
        try:
            for name, summary in sorted(expected.items()):
                spec = self.specs.get(name)
                if spec is None:
                    raise CertificateTransferError(f"[tls:{name}] is not a section of this worker's configuration")
                pieces = transfer.get(name, {})
                blobs = [bytes(pieces.get(i, b"")) for i in range(summary["count"])]
                if (len(pieces) != summary["count"] or sum(map(len, blobs)) != summary["bytes"]
                        or _digest(blobs) != summary["sha256"]):
                    raise CertificateTransferError(f"transfer {generation} [tls:{name}] arrived incomplete")
                certificate_set = CertificateSet.from_wire(spec, blobs)
                creator = self.creators.get(name)
                if creator is None:
                    prepared[name] = (None, SNIServerCreator(spec, certificate_set, self.staples,
                                                                  self.tickets(name)))
                else:
                    prepared[name] = (creator, creator.prepare(certificate_set))
        except (CertificateError, PolicyError, SSL.Error) as e:
            self.log.error("certificate reload rejected, keeping the current certificates: {error}", error=str(e))
            raise CertificateTransferError(str(e)) from None
        except CertificateTransferError as e:
            self.log.error("certificate reload rejected, keeping the current certificates: {error}", error=str(e))
            raise
        for name, (creator, result) in prepared.items():
            if creator is None:
                self.creators[name] = result
            else:
                creator.install(result)
        self.generation = generation
        for stale in [g for g in self._pending if g <= generation]:
            del self._pending[stale]
        if self._complete():
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(self.creators)
        return {"swapped": sorted(prepared)}


def register_worker_responders(protocol, creators, specs=None):
    """
    Worker side: make C{protocol} accept certificate transfers that swap the
    SNI creators in C{creators} (C{{tls name: SNIServerCreator}}).

    @param specs: C{{tls name: TlsSpec}}; default: the specs of C{creators}.
        Give it when some sections have no creator yet.
    @return: the L{CertificateReceiver}.
    """
    if specs is None:
        specs = {name: creator.spec for name, creator in creators.items()}
    return CertificateReceiver(specs, creators).register(protocol)


class CertificateReloader:
    """
    The master's view of the certificates: loads every C{[tls:*]} section,
    keeps the last good sets, reloads all-or-nothing, pushes to workers, and
    remembers the last reload for the admin C{/status} page.

    @ivar current: C{{tls name: CertificateSet}} being served (empty until
        the first successful load).
    @ivar last_reload: C{{"at", "ok", "error"}} of the last reload attempt,
        or L{None}.
    """

    log = Logger()

    def __init__(self, specs, clock, load=load_certificate_set):
        """
        @param specs: C{{tls name: TlsSpec}} (C{GateConfig.tls}).
        @param clock: an C{IReactorTime}; validity is checked against its
            time, and reloads are stamped with it.
        @param load: the loader (tests may replace it).
        """
        self.specs = dict(specs)
        self.current = {}
        self.last_reload = None
        self.last_push = None
        self._clock = clock
        self._load = load

    def _now(self):
        return datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.timezone.utc)

    def _load_all(self, specs):
        now = self._now()
        sets = {}
        for name, spec in sorted(specs.items()):
            # A policy OpenSSL refuses would only surface in the workers;
            # check it here, where the operator sees the answer.
            check_policy(spec)
            sets[name] = self._load(spec, now)
        return sets

    def load(self):
        """
        The start-up load: like L{reload} but raising L{CertificateError} (or
        L{PolicyError} for a C{min_version} or C{ciphers} OpenSSL refuses), as
        a gateway must not start with certificates it cannot serve.
        """
        sets = self._load_all(self.specs)
        self.current = sets
        self.last_reload = {"at": self._now().isoformat(), "ok": True, "error": None}
        return sets

    def reload(self, specs=None):
        """
        Re-read every certificate of every section (of C{specs} when a new
        configuration brings them). All good: they become L{current} and
        C{(True, sets)} is returned. Anything bad: nothing changes, the file
        and reason are logged, and C{(False, error)} is returned (a
        L{CertificateError}, or a L{PolicyError} naming the section and key).
        """
        specs = self.specs if specs is None else dict(specs)
        at = self._now().isoformat()
        try:
            sets = self._load_all(specs)
        except (CertificateError, PolicyError) as e:
            self.last_reload = {"at": at, "ok": False, "error": str(e)}
            self.log.error("certificate reload rejected, the current certificates stay: {error}", error=str(e))
            return False, e
        self.specs = specs
        self.current = sets
        self.last_reload = {"at": at, "ok": True, "error": None}
        self.log.info(
            "certificates reloaded: {summary}",
            summary="; ".join(f"[tls:{n}] {len(s.entries)} file(s)" for n, s in sets.items()))
        return True, sets

    def prepare(self, specs):
        """
        A new configuration's first step: load every certificate of
        C{specs} (C{{tls name: TlsSpec}}) without serving them.

        @return: C{(sets, problems)}: the sets when all are good (else
            L{None}), and C{(tls name, error)} for each section that is not.
        """
        now = self._now()
        sets, problems = {}, []
        for name, spec in sorted(specs.items()):
            try:
                check_policy(spec)
                sets[name] = self._load(spec, now)
            except (CertificateError, PolicyError) as e:
                problems.append((name, e))
        return (None if problems else sets), problems

    def install(self, specs, sets):
        """
        Serve C{sets}, prepared (L{prepare}) for C{specs}, from now on: the
        sections of a new configuration.
        """
        self.specs = dict(specs)
        self.current = sets
        self.last_reload = {"at": self._now().isoformat(), "ok": True, "error": None}
        self.log.info(
            "certificates of the new configuration: {summary}",
            summary="; ".join(f"[tls:{n}] {len(s.entries)} file(s)" for n, s in sorted(sets.items())))

    def push(self, protocols):
        """
        Send L{current} to every worker's control protocol in C{protocols}.
        A worker that fails is logged; the others still swap.

        @return: a Deferred firing with a list of C{(ok, result)}, one per
            protocol, in order.
        """
        generation = next(_generations)
        ds = []
        for protocol in protocols:
            d = push_certificates(protocol, self.current, generation)
            d.addErrback(self._push_failed)
            ds.append(d)

        def record(results):
            failed = sum(1 for ok, _ in results if not ok)
            self.last_push = {"at": self._now().isoformat(), "workers": len(results), "failed": failed}
            return results

        return defer.DeferredList(ds, consumeErrors=True).addCallback(record)

    def _push_failed(self, failure):
        self.log.error(
            "a worker did not take the new certificates and keeps its old ones: {error}",
            error=failure.getErrorMessage())
        return failure

    def reload_and_push(self, protocols):
        """
        What SIGHUP does: L{reload}, and when it succeeds, L{push} to every
        worker. Fires with C{(ok, push results or the error)}.
        """
        ok, result = self.reload()
        if not ok:
            return defer.succeed((False, result))
        return self.push(protocols).addCallback(lambda results: (True, results))

    def status(self):
        """
        JSON-ready state for the admin C{/status} page: each section's
        certificates (names, not-after, file), and the last reload and push.
        """
        return {
            "certificates": {name: s.describe() for name, s in sorted(self.current.items())},
            "last_reload": self.last_reload,
            "last_push": self.last_push,
        }
