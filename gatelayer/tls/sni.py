"""
The server side of TLS: picking a certificate by SNI for every handshake.

Each connection starts on a I{front} context that holds the policy but no
certificate. OpenSSL calls the server-name callback for every ClientHello
(with or without SNI); the callback switches the connection to the cached
context of the matching certificate: exact name, then wildcard, then the
default. With C{strict_sni}, an unknown or missing name is left on the front
context, which has no certificate, so the handshake fails right there.

Contexts are built once per certificate and kept; L{SNIServerCreator.swap}
replaces the whole lookup in one assignment, so new handshakes see the new
certificates while established connections keep the contexts they started
with.
"""

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import implementer

from .policy import server_context

__all__ = ["SNIServerCreator", "ServerTLSFactory", "wrap_server_factory", "certificate_context"]


def certificate_context(spec, entry, tickets=None):
    """
    A server context with the policy of C{spec} serving the certificate,
    chain and key of C{entry} (a L{gatelayer.tls.store.CertificateEntry}),
    taking its session ticket keys from C{tickets} (a
    L{gatelayer.tls.tickets.TicketKeyRing}) when given.
    """
    context = server_context(spec)
    if tickets is not None:
        tickets.install(context)
    context.use_certificate(entry.certificate)
    for extra in entry.chain:
        context.add_extra_chain_cert(extra)
    context.use_privatekey(entry.key)
    context.check_privatekey()
    return context


class _Selection:
    """
    One certificate set with its contexts: replaced whole, never mutated.
    """

    __slots__ = ("certificate_set", "contexts")

    def __init__(self, certificate_set, contexts):
        self.certificate_set = certificate_set
        self.contexts = contexts


@implementer(IOpenSSLServerConnectionCreator)
class SNIServerCreator:
    """
    Builds the OpenSSL connection of each accepted TLS connection of the
    listeners using one C{[tls:NAME]} section, choosing the certificate by
    the client's server name.

    @ivar spec: the L{gatelayer.config.model.TlsSpec}.
    @ivar refused: how many handshakes strict SNI refused (for metrics).
    @ivar selected: counts of how certificates were chosen, by C{"exact"},
        C{"wildcard"} and C{"default"}.
    @ivar tickets: the L{gatelayer.tls.tickets.TicketKeyRing} every context
        takes its session ticket keys from (shared by the workers), or
        L{None} for OpenSSL's own keys.
    """

    log = Logger()

    def __init__(self, spec, certificate_set, staples=None, tickets=None):
        """
        @param staples: a L{gatelayer.tls.ocsp_control.StapleBook} that
            staples OCSP responses on each certificate's context when the
            section has C{ocsp_staple}, or L{None}.
        @param tickets: the section's session ticket key ring, or L{None}.
        """
        self.spec = spec
        self._staples = staples if spec.ocsp_staple else None
        self.tickets = tickets
        self.refused = 0
        self.selected = {"exact": 0, "wildcard": 0, "default": 0}
        self._front = server_context(spec)
        if tickets is not None:
            # OpenSSL takes ticket keys from the context a connection began
            # on (this one), whichever certificate context SNI then chose.
            tickets.install(self._front)
        self._front.set_tlsext_servername_callback(self._server_name_received)
        self._selection = self._build(certificate_set, {})

    @property
    def certificate_set(self):
        """
        The L{gatelayer.tls.store.CertificateSet} new handshakes are served
        from.
        """
        return self._selection.certificate_set

    def _build(self, certificate_set, previous):
        # Contexts of certificates whose bytes did not change are kept, so a
        # reload that touches one file rebuilds one context.
        contexts = {}
        for entry in certificate_set.entries:
            context = previous.get(entry.pem)
            if context is None:
                context = certificate_context(self.spec, entry, self.tickets)
                if self._staples is not None:
                    self._staples.attach(context, entry)
            contexts[entry.pem] = context
        return _Selection(certificate_set, contexts)

    def prepare(self, certificate_set):
        """
        Build the contexts of C{certificate_set} without serving it yet; hand
        the result to L{install}. Lets a caller swap several creators all or
        nothing: prepare every one (any may raise), then install them all.
        """
        return self._build(certificate_set, self._selection.contexts)

    def install(self, prepared):
        """
        Serve what L{prepare} built from the next handshake on.
        """
        self._selection = prepared
        certificate_set = prepared.certificate_set
        self.log.info(
            "[tls:{section}] now serving {count} certificate(s): {names}",
            section=self.spec.name, count=len(certificate_set.entries),
            names=", ".join(certificate_set.names()))

    def swap(self, certificate_set):
        """
        Serve C{certificate_set} from the next handshake on. Every context
        is built before the switch, so a failure leaves the old set in place;
        connections already established are not touched.
        """
        self.install(self.prepare(certificate_set))

    def serverConnectionForTLS(self, tlsProtocol):
        """
        A new server connection on the front context; the certificate is
        picked once the ClientHello arrives.
        """
        connection = SSL.Connection(self._front, None)
        # ALPN asks the wrapper's factory what the listener offers.
        connection.set_app_data(tlsProtocol)
        return connection

    def select(self, server_name):
        """
        The entry a handshake for C{server_name} (bytes, str or L{None}) is
        served, and how it was found (C{"exact"}, C{"wildcard"},
        C{"default"}); C{(None, "refused")} under strict SNI when nothing
        matches.
        """
        return self._select(self._selection, server_name)

    def _select(self, selection, server_name):
        certificate_set = selection.certificate_set
        entry = certificate_set.match(server_name)
        if entry is not None:
            return entry, ("wildcard" if _is_wildcard_match(entry, server_name) else "exact")
        if self.spec.strict_sni:
            return None, "refused"
        return certificate_set.default, "default"

    def _server_name_received(self, connection):
        # Read the selection once: one handshake sees one set even if a swap
        # were to happen while it runs.
        selection = self._selection
        server_name = connection.get_servername()
        entry, kind = self._select(selection, server_name)
        if entry is None:
            self.refused += 1
            self.log.debug(
                "[tls:{section}] refused a handshake: no certificate for server name {server_name!r}",
                section=self.spec.name, server_name=server_name)
            # Staying on the front context (no certificate) ends the
            # handshake with a handshake_failure alert.
            return
        self.selected[kind] += 1
        connection.set_context(selection.contexts[entry.pem])


def _is_wildcard_match(entry, server_name):
    if isinstance(server_name, bytes):
        server_name = server_name.decode("ascii", "replace")
    return server_name.rstrip(".").lower() not in entry.names


class _CountedTLS(BufferingTLSTransport):
    """
    A server TLS connection that tells its factory's C{on_handshake} how
    its handshake ended: C{True} once it completed, C{False} when the
    connection closed before it did.
    """

    _told = False

    def _checkHandshakeStatus(self):
        super()._checkHandshakeStatus()
        if self._handshakeDone and not self._told:
            self._told = True
            on_handshake = self.factory.on_handshake
            if on_handshake is not None:
                on_handshake(True)

    def connectionLost(self, reason):
        """
        A connection closed before its handshake completed is a failed
        handshake. One that completed keeps its session resumable even when
        the client left without close_notify (OpenSSL drops the session of a
        connection freed before a shutdown was sent; a fatal alert has
        already dropped it, so this never revives a broken session). The
        application then sees the end of the stream as a clean close; an
        HTTP request cut short is incomplete either way.
        """
        if self._handshakeDone and self._tlsConnection is not None:
            self._tlsConnection.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
        if not self._told:
            self._told = True
            on_handshake = self.factory.on_handshake
            if on_handshake is not None:
                on_handshake(False)
        super().connectionLost(reason)


class ServerTLSFactory(TLSMemoryBIOFactory):
    """
    A listener's TLS wrapping factory.

    @ivar on_handshake: called with C{True} for each completed handshake
        and C{False} for each connection closed before its handshake
        completed (the worker's metrics), or L{None}.
    @ivar alpn_protocols: what ALPN may settle on for this listener.
    """

    protocol = _CountedTLS
    on_handshake = None
    #: The ALPN protocols this listener offers, in order of preference.
    alpn_protocols = (b"http/1.1",)


def wrap_server_factory(creator, factory, clock):
    """
    Wrap the application C{factory} of a listener (the HTTP site) so its
    connections speak TLS through C{creator}; the worker passes the result
    to C{adoptStreamPort}. C{clock} is the reactor (TLS batches small writes
    with it).
    """
    return ServerTLSFactory(creator, False, factory, clock=clock)
