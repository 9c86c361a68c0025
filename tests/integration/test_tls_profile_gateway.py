"""
The shipped TLS example (C{etc/examples/tls.ini}) answers a scanner's
Mozilla-"intermediate" questions as that profile wants, through a real
gateway: only TLS 1.2 and 1.3, only the profile's groups and AEAD suites,
the client's cipher order, HSTS. A stand-in for sslyze's check, which cannot
be installed beside this project's cryptography release.
"""

import os
import re

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

import gatelayer
from gatelayer.testing.certs import CertificateAuthority
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.tls_sessions import offer, tls_exchange

NAME = "www.example.test"
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(gatelayer.__file__))),
                       "etc", "examples", "tls.ini")

#: Mozilla intermediate's TLS 1.2 suites a server with an ECDSA certificate
#: can negotiate.
INTERMEDIATE_ECDSA = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                      "ECDHE-ECDSA-CHACHA20-POLY1305")

#: Suites outside the profile that an ECDSA server could otherwise take.
OUTSIDE = ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256",
           "ECDHE-ECDSA-AES256-SHA384")


def example_config():
    """
    The shipped example with every listener and the admin endpoint on a
    free loopback port.
    """
    with open(EXAMPLE) as f:
        text = f.read()
    return re.sub(r"^(bind|admin) = 127\.0\.0\.1:\d+", r"\1 = 127.0.0.1:0", text, flags=re.M)


class ExampleProfileTests(TestCase):
    """
    The example configuration, as a scanner probes it.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        CertificateAuthority().issue([NAME]).write(os.path.join(directory, "certs", f"{NAME}.pem"))
        self.gate = yield start_gateway(self, reactor, example_config(), directory)
        self.address = self.gate.address("secure")

    def assertRefused(self, outcome, what):
        """
        The handshake failed with a TLS error.
        """
        ok, error = outcome
        self.assertFalse(ok, what)
        self.assertIsInstance(error, SSL.Error, what)

    def test_versions(self):
        """
        TLS 1.2 and 1.3 are served; TLS 1.0 and 1.1 are refused though the
        client offers them with every cipher it has.
        """
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            self.assertTrue(offer(self.address, NAME, version)[0], version)
        for version in (SSL.TLS1_VERSION, SSL.TLS1_1_VERSION):
            self.assertRefused(offer(self.address, NAME, version, ciphers="ALL:@SECLEVEL=0"), version)

    def test_groups(self):
        """
        X25519, P-256 and P-384 are each accepted alone; X448 and P-521
        are refused. Asked over TLS 1.3, where the group is the key
        exchange's alone (over TLS 1.2 the client's list also limits the
        curve of an ECDSA certificate).
        """
        for group in ("X25519", "P-256", "P-384"):
            self.assertTrue(offer(self.address, NAME, SSL.TLS1_3_VERSION, groups=group)[0], group)
        for group in ("X448", "P-521"):
            self.assertRefused(offer(self.address, NAME, SSL.TLS1_3_VERSION, groups=group), group)

    def test_tls12_suites(self):
        """
        Each of the profile's suites is accepted alone; suites outside it
        (CBC ones) are refused.
        """
        for suite in INTERMEDIATE_ECDSA:
            self.assertEqual(offer(self.address, NAME, SSL.TLS1_2_VERSION, ciphers=suite), (True, suite))
        for suite in OUTSIDE:
            self.assertRefused(offer(self.address, NAME, SSL.TLS1_2_VERSION, ciphers=suite), suite)

    def test_client_order(self):
        """
        With AEAD suites only, the server follows the client's order of
        preference, whichever it is.
        """
        for first, second in (INTERMEDIATE_ECDSA[2:0:-1], INTERMEDIATE_ECDSA[1:3]):
            ok, chosen = offer(self.address, NAME, SSL.TLS1_2_VERSION, ciphers=f"{first}:{second}")
            self.assertEqual((ok, chosen), (True, first))

    def test_hsts(self):
        """
        The example's HSTS value is on its answers, an upstream failure
        included.
        """
        status, headers = tls_exchange(
            self.address, b"GET / HTTP/1.1\r\nHost: " + NAME.encode() + b"\r\nConnection: close\r\n\r\n", NAME)
        self.assertEqual(status, 502)
        self.assertEqual(headers[b"strict-transport-security"], [b"max-age=31536000"])
