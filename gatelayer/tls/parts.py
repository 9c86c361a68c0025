"""
TLS as the master and worker processes see it: one master part that loads,
reloads and hands out certificates, and the worker's side of the same.

The master part follows the shape of the other master parts: C{sync(control)}
sends a new (or respawned) worker the current certificates before it starts
accepting, C{reload(master)} is SIGHUP, C{status()} feeds the admin
C{/status} page.
"""

from twisted.logger import Logger

from .control import CertificateReceiver, CertificateReloader, push_certificates
from .ocsp_control import StapleBook
from .sni import wrap_server_factory
from .ticket_control import TicketKeyReceiver
from .upstream import upstream_tls_creator

__all__ = ["CertificatePart", "worker_tls", "upstream_tls_creators"]


class CertificatePart:
    """
    The master's certificates: loaded when the part is made (a bad
    certificate stops start-up with the file and reason), pushed to each
    worker as it connects, reloaded on SIGHUP.

    @ivar reloader: the L{CertificateReloader}.
    """

    log = Logger()

    def __init__(self, config, reactor, controls):
        """
        @param config: the L{gatelayer.config.model.GateConfig}.
        @param reactor: an C{IReactorTime}.
        @param controls: a callable returning the connected workers' control
            protocols.
        @raise gatelayer.tls.store.CertificateError: a certificate is
            unusable.
        @raise gatelayer.tls.policy.PolicyError: C{min_version} or
            C{ciphers} is refused by OpenSSL.
        """
        self._controls = controls
        self.reloader = CertificateReloader(config.tls, reactor)
        self.reloader.load()

    def sync(self, control):
        """
        Send a worker that just connected the current certificates; fires
        when it has swapped them in.
        """
        d = push_certificates(control, self.reloader.current)

        def failed(failure):
            self.log.error("a new worker did not take the certificates: {error}", error=failure.getErrorMessage())
            return failure
        return d.addErrback(failed)

    def reload(self, master=None):
        """
        SIGHUP: re-read and check every certificate; push them to every
        worker only if all are good. Fires with C{(ok, results or error)}.
        """
        return self.reloader.reload_and_push(self._controls())

    def status(self):
        """
        C{{"tls": ...}} for C{/status}: each section's certificates (names,
        not-after, file) and the last reload and push.
        """
        return {"tls": self.reloader.status()}


def worker_tls(config, control, reactor):
    """
    A worker's TLS pieces.

    Registers certificate transfers on C{control} (the master's C{sync}
    fills them before the worker begins) and returns C{(tls_wrapper,
    tls_creator_for)}: C{tls_wrapper(listener_spec, factory)} wraps a TLS
    listener's factory, C{tls_creator_for(upstream_spec)} gives the upstream
    TLS creator function (or L{None} without C{tls = yes}).
    """
    staples = StapleBook(reactor).register(control)
    tickets = TicketKeyReceiver(config.tls).register(control)
    receiver = CertificateReceiver(config.tls, staples=staples, tickets=tickets.ring_for).register(control)

    def tls_wrapper(listener, factory):
        creator = receiver.creators.get(listener.tls)
        if creator is None:
            raise RuntimeError(
                f"[listener:{listener.name}] tls = {listener.tls}: the master has not sent its certificates")
        return wrap_server_factory(creator, factory, reactor)

    tls_wrapper.receiver = receiver
    tls_wrapper.tickets = tickets
    return tls_wrapper, upstream_tls_creator


def upstream_tls_creators(config):
    """
    C{{upstream name: creator function}} for every upstream with C{tls =
    yes}, for the master's health checks (they verify like the proxy does).
    """
    creators = {}
    for name, spec in config.upstreams.items():
        creator_for = upstream_tls_creator(spec)
        if creator_for is not None:
            creators[name] = creator_for
    return creators
