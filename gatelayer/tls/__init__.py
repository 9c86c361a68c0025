"""
TLS for gatelayer: terminating client TLS with certificates picked by SNI,
reloading certificates without a restart, and verified TLS to upstreams.

The pieces, each in its own module:
 - L{store}: read and validate the certificate files of a C{[tls:NAME]}
   section into an immutable L{CertificateSet};
 - L{policy}: protocol versions, ciphers, key exchange groups and ALPN of
   every server context;
 - L{sni}: L{SNIServerCreator}, the connection creator of TLS listeners;
 - L{control}: the master/worker certificate reload over AMP;
 - L{ocsp}, L{ocsp_fetch}, L{ocsp_control}: OCSP stapling (checking a
   response, the master's fetches and files, the workers' staples);
 - L{tickets}, L{ticket_control}: session ticket keys the master makes,
   rotates and shares with every worker (L{native} reaches the OpenSSL call
   pyOpenSSL lacks; L{ticket_proof} proves it works before it is used);
 - L{upstream}: client TLS from the gateway to upstream servers;
 - L{parts}: how the master and worker processes use all of the above.
"""

from .control import (
    CertificateReceiver,
    CertificateReloader,
    CertificateTransferError,
    push_certificates,
    register_worker_responders,
)
from .parts import CertificatePart, upstream_tls_creators, worker_tls
from .policy import PolicyError, check_policy, hsts_header
from .sni import SNIServerCreator, wrap_server_factory
from .ticket_control import TicketKeyPart, TicketKeyReceiver
from .tickets import TicketKeyRing, shared_tickets
from .store import CertificateError, CertificateSet, load_certificate_set
from .upstream import upstream_tls_creator

__all__ = [
    "CertificateError",
    "CertificateSet",
    "load_certificate_set",
    "PolicyError",
    "check_policy",
    "hsts_header",
    "SNIServerCreator",
    "wrap_server_factory",
    "CertificateReceiver",
    "CertificateReloader",
    "CertificateTransferError",
    "push_certificates",
    "register_worker_responders",
    "upstream_tls_creator",
    "TicketKeyPart",
    "TicketKeyReceiver",
    "TicketKeyRing",
    "shared_tickets",
    "CertificatePart",
    "worker_tls",
    "upstream_tls_creators",
]
