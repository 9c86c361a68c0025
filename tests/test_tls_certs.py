"""
Tests for L{gatelayer.testing.certs}, the certificate factory other tests
rely on.
"""

import datetime
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.testing.certs import CertificateAuthority, generate_key, write_pem
from gatelayer.tls.store import read_pem_bundle


class FactoryTests(SynchronousTestCase):
    """
    The factory issues what a test asks for.
    """

    def setUp(self):
        self.ca = CertificateAuthority()

    def test_names_and_usage(self):
        """
        SANs, CN and extended key usages are as requested, and the issuer is
        the CA.
        """
        issued = self.ca.issue(["a.example.com", "*.b.example.com"], common_name="cn.example.com",
                               ip_addresses=["10.0.0.1"], client=True)
        certificate = issued.certificate
        alt = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(alt.get_values_for_type(x509.DNSName), ["a.example.com", "*.b.example.com"])
        self.assertEqual([str(a) for a in alt.get_values_for_type(x509.IPAddress)], ["10.0.0.1"])
        self.assertIn("CN=cn.example.com", certificate.subject.rfc4514_string())
        self.assertEqual(certificate.issuer, self.ca.certificate.subject)
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(set(usage), {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH})
        certificate.verify_directly_issued_by(self.ca.certificate)

    def test_validity(self):
        """
        Expired and not-yet-valid certificates lie outside now; explicit
        windows are kept.
        """
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(self.ca.expired(["x"]).certificate.not_valid_after_utc, now)
        self.assertGreater(self.ca.not_yet_valid(["x"]).certificate.not_valid_before_utc, now)
        start = datetime.datetime(2031, 1, 1, tzinfo=datetime.timezone.utc)
        issued = self.ca.issue(["x"], not_before=start, not_after=start + datetime.timedelta(days=2))
        self.assertEqual(issued.certificate.not_valid_before_utc, start)

    def test_key_types(self):
        """
        EC, RSA and Ed25519 keys are available; others are refused.
        """
        self.assertIsInstance(generate_key("ec"), ec.EllipticCurvePrivateKey)
        self.assertIsInstance(generate_key("rsa"), rsa.RSAPrivateKey)
        self.assertIsInstance(generate_key("ed25519"), ed25519.Ed25519PrivateKey)
        self.assertRaises(ValueError, generate_key, "dsa")

    def test_intermediate_chain(self):
        """
        Leaves of an intermediate carry it as their chain, and the bundle
        holds leaf, chain, key in that order.
        """
        intermediate = self.ca.intermediate()
        deeper = intermediate.intermediate(name="deeper")
        issued = deeper.issue(["a.example.com"])
        self.assertEqual(issued.chain, (deeper.certificate, intermediate.certificate))
        certificates, key = read_pem_bundle(issued.bundle_pem())
        self.assertEqual(certificates, [issued.certificate, deeper.certificate, intermediate.certificate])
        intermediate.certificate.verify_directly_issued_by(self.ca.certificate)

    def test_truncated(self):
        """
        L{IssuedCertificate.truncated_pem} is a prefix of the bundle.
        """
        issued = self.ca.issue(["a"])
        cut = issued.truncated_pem(0.5)
        self.assertTrue(issued.bundle_pem().startswith(cut))
        self.assertLess(len(cut), len(issued.bundle_pem()))

    def test_write(self):
        """
        L{write_pem} creates the directory and keeps key files private.
        """
        path = os.path.join(self.mktemp(), "sub", "a.pem")
        self.ca.issue(["a"]).write(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(write_pem(path, b"x"), path)
