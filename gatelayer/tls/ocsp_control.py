"""
OCSP stapling across the processes: the master's C{ocsp} part
(L{StaplingPart}) keeps each certificate's response with an
L{gatelayer.tls.ocsp_fetch.OCSPStapler} and sends every change to the
workers (L{SetStaple}); a worker's L{StapleBook} holds them and answers
OpenSSL's status callback on the context of each certificate.

The worker checks the validity window again on every handshake with its own
clock, so a response is never stapled past its C{nextUpdate}, even if the
master's word that it expired has not arrived yet.
"""

from twisted.internet.defer import gatherResults
from twisted.logger import Logger
from twisted.protocols import amp

from gatelayer.service import MasterPart

from .ocsp import CLOCK_SKEW
from .ocsp_fetch import OCSPStapler

__all__ = ["SetStaple", "push_staple", "push_staples", "StapleBook", "StaplingPart"]


class SetStaple(amp.Command):
    """
    Master -> worker: staple C{response} (DER; empty: nothing) for the
    certificate whose SHA-256 is C{sha256}, between the POSIX times
    C{not_before} and C{not_after}.
    """

    arguments = [
        (b"sha256", amp.Unicode()),
        (b"response", amp.String()),
        (b"not_before", amp.Float()),
        (b"not_after", amp.Float()),
    ]
    response = []


def push_staple(protocol, fingerprint, staple):
    """
    Send one certificate's response (a L{gatelayer.tls.ocsp.Staple}, or
    L{None} to stop stapling) to the worker at the other end of
    C{protocol}.
    """
    if staple is None:
        return protocol.callRemote(SetStaple, sha256=fingerprint, response=b"", not_before=0.0, not_after=0.0)
    return protocol.callRemote(
        SetStaple, sha256=fingerprint, response=staple.der,
        not_before=(staple.this_update - CLOCK_SKEW).timestamp(), not_after=staple.next_update.timestamp())


def push_staples(protocol, staples):
    """
    Send every C{(fingerprint, Staple)} of C{staples} to one worker; a
    Deferred firing when it has them all.
    """
    return gatherResults([push_staple(protocol, f, s) for f, s in staples], consumeErrors=True)


class StapleBook:
    """
    A worker's OCSP responses by certificate fingerprint, and the status
    callback that staples them.

    @ivar stapled: how many handshakes got a response.
    """

    def __init__(self, clock):
        """
        @param clock: an C{IReactorTime}: validity is checked against it.
        """
        self.clock = clock
        self.stapled = 0
        self._staples = {}

    def register(self, protocol):
        """
        Answer L{SetStaple} on C{protocol}; returns C{self}.
        """
        protocol.register(SetStaple, self.set_staple)
        return self

    def set_staple(self, sha256, response, not_before, not_after):
        """
        Keep (or, with an empty C{response}, forget) the response of one
        certificate.
        """
        if response:
            self._staples[sha256] = (response, not_before, not_after)
        else:
            self._staples.pop(sha256, None)
        return {}

    def response_for(self, fingerprint):
        """
        The response to staple now for the certificate C{fingerprint}, or
        C{b""} (none, or the kept one is outside its validity).
        """
        kept = self._staples.get(fingerprint)
        if kept is None:
            return b""
        response, not_before, not_after = kept
        if not not_before <= self.clock.seconds() < not_after:
            return b""
        return response

    def attach(self, context, entry):
        """
        Make the server C{context} of C{entry} (a
        L{gatelayer.tls.store.CertificateEntry}) staple its response for
        clients that ask.
        """
        context.set_ocsp_server_callback(self._answer, entry.fingerprint)

    def _answer(self, connection, fingerprint):
        response = self.response_for(fingerprint)
        if response:
            self.stapled += 1
        return response


class StaplingPart(MasterPart):
    """
    The master's C{ocsp} service: the responses of the certificates of every
    C{[tls:NAME]} section with C{ocsp_staple}, following the certificates
    the C{tls} part serves (L{gatelayer.tls.control.CertificateReloader}).
    """

    log = Logger()

    def __init__(self, reloader, reactor, controls, **stapler_options):
        """
        @param reloader: the C{tls} part's certificate reloader; the
            sections and certificates are read from it, after it reloaded.
            L{None}: the one of the C{tls} part beside this one in the
            master's tree (added by a reload while that part ran).
        @param controls: a callable returning the connected workers' control
            protocols.
        @param stapler_options: passed to L{OCSPStapler} (tests give an
            in-memory C{post}).
        """
        self.name = "ocsp"
        self._reloader = reloader
        self._controls = controls
        self.stapler = OCSPStapler(reactor, self._changed, **stapler_options)
        if reloader is not None:
            self.stapler.update(reloader.specs, reloader.current)

    def _follow(self):
        if self._reloader is None:
            self._reloader = self.parent.getServiceNamed("tls").part.reloader
        self.stapler.update(self._reloader.specs, self._reloader.current)

    def _changed(self, fingerprint, staple):
        for control in self._controls():
            push_staple(control, fingerprint, staple).addErrback(self._push_failed)

    def _push_failed(self, failure):
        self.log.error("a worker did not take an OCSP response: {error}", error=failure.getErrorMessage())

    def startService(self):
        """
        Start fetching.
        """
        super().startService()
        if self._reloader is None:
            self._follow()
        self.stapler.start()

    def stopService(self):
        """
        Stop fetching.
        """
        super().stopService()
        self.stapler.stop()

    def sync(self, control):
        """
        Send a new worker every response stapled now.
        """
        return push_staples(control, self.stapler.staples())

    def reload(self):
        """
        SIGHUP (after the C{tls} part reloaded): follow the certificates now
        served, fetch for new ones, read the files again.
        """
        self._follow()

    def reconfigure(self, new_config):
        """
        A new configuration: the same as L{reload} (the C{tls} part, earlier
        in the tree, has taken the new sections).
        """
        self.reload()

    def status(self):
        """
        C{{"ocsp": ...}} for C{/status}: per section and certificate, the
        stapling state, the response's validity and the last error.
        """
        return {"ocsp": self.stapler.status()}
