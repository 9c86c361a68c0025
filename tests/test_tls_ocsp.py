"""
Tests for L{gatelayer.tls.ocsp}: the responder URL, the issuer, the request
and, table-style, which responses may be stapled.
"""

import datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.testing.certs import CertificateAuthority
from gatelayer.testing.ocsp import ocsp_response, ocsp_signer, unsuccessful_response
from gatelayer.tls.ocsp import (
    CLOCK_SKEW, OCSPError, build_request, check_response, find_issuer, responder_url,
)

_ROOT = CertificateAuthority()
_CA = _ROOT.intermediate()
_OTHER_CA = CertificateAuthority(name="another CA")
_URL = "http://127.0.0.1:9/ocsp"
_LEAF = _CA.issue(["www.example.com"], ocsp_url=_URL)
_OTHER_LEAF = _CA.issue(["other.example.com"], ocsp_url=_URL)
_SIGNER = ocsp_signer(_CA)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


class ResponderURLTests(SynchronousTestCase):
    """
    L{responder_url} reads the OCSP URL of the authorityInfoAccess
    extension.
    """

    def test_url(self):
        """
        A certificate naming a responder gives its URL.
        """
        self.assertEqual(responder_url(_LEAF.certificate), _URL)

    def test_none(self):
        """
        A certificate without the extension has no responder.
        """
        self.assertIsNone(responder_url(_CA.issue(["a.example.com"]).certificate))

    def test_not_http(self):
        """
        Only plain HTTP responders are used (what RFC 6960 responders
        speak); an ldap or https URL gives none.
        """
        self.assertIsNone(responder_url(_CA.issue(["a.example.com"], ocsp_url="ldap://x/").certificate))


class IssuerTests(SynchronousTestCase):
    """
    L{find_issuer} picks the certificate of the chain that signed the leaf.
    """

    def test_found(self):
        """
        The intermediate of the chain is the issuer.
        """
        self.assertEqual(find_issuer(_LEAF.certificate, _LEAF.chain), _CA.certificate)

    def test_only_signer_counts(self):
        """
        A certificate with the right name but another key is not the issuer,
        and an empty chain has none.
        """
        impostor = CertificateAuthority(name="gatelayer test intermediate CA")
        self.assertIsNone(find_issuer(_LEAF.certificate, (impostor.certificate, _ROOT.certificate)))
        self.assertIsNone(find_issuer(_LEAF.certificate, ()))

    def test_request(self):
        """
        The request asks about the leaf's serial with its issuer's hashes.
        """
        request = ocsp.load_der_ocsp_request(build_request(_LEAF.certificate, _CA.certificate))
        self.assertEqual(request.serial_number, _LEAF.certificate.serial_number)
        expected = ocsp.OCSPRequestBuilder().add_certificate(
            _LEAF.certificate, _CA.certificate, hashes.SHA1()).build()
        self.assertEqual(request.issuer_key_hash, expected.issuer_key_hash)


class CheckTests(SynchronousTestCase):
    """
    L{check_response} staples only what is successful, for the certificate,
    signed by its issuer or a delegated responder, and valid now.
    """

    def check(self, der, leaf=_LEAF, now=None):
        return check_response(der, leaf.certificate, _CA.certificate, now or _now())

    def test_good_by_issuer(self):
        """
        A good response signed by the issuer is stapled as it came.
        """
        der = ocsp_response(_LEAF, _CA)
        staple = self.check(der)
        self.assertEqual((staple.der, staple.status), (der, "good"))
        self.assertTrue(staple.usable(_now()))

    def test_good_by_delegate(self):
        """
        A response signed by a responder certificate the issuer gave the
        OCSP signing usage is stapled.
        """
        self.assertEqual(self.check(ocsp_response(_LEAF, _CA, signer=_SIGNER)).status, "good")

    def test_sha256_id(self):
        """
        A response identifying the certificate with SHA-256 hashes matches
        too.
        """
        self.assertEqual(self.check(ocsp_response(_LEAF, _CA, algorithm=hashes.SHA256())).status, "good")

    def test_revoked(self):
        """
        A revoked answer is stapled, with its status and time.
        """
        staple = self.check(ocsp_response(_LEAF, _CA, status="revoked"))
        self.assertEqual(staple.status, "revoked")
        self.assertIsNotNone(staple.revoked_at)
        self.assertEqual(staple.describe()["status"], "revoked")

    def test_clock_skew(self):
        """
        A thisUpdate a little ahead of our clock (a fast responder clock) is
        accepted; beyond the allowance it is not.
        """
        now = _now()
        self.check(ocsp_response(_LEAF, _CA, this_update=now + CLOCK_SKEW / 2), now=now)
        self.assertRaises(OCSPError, self.check,
                          ocsp_response(_LEAF, _CA, this_update=now + 2 * CLOCK_SKEW), now=now)

    def test_refused(self):
        """
        Every way a response can be wrong is refused with a reason saying
        which: a table of hostile and broken responses.
        """
        now = _now()
        hour = datetime.timedelta(hours=1)
        forger = CertificateAuthority(name="forger")
        cases = [
            ("garbage", b"\x00not der at all", "not a DER OCSP response"),
            ("empty", b"", "not a DER OCSP response"),
            ("truncated", ocsp_response(_LEAF, _CA)[:40], "not a DER OCSP response"),
            ("unsuccessful", unsuccessful_response("try_later"), "try_later"),
            ("unauthorized", unsuccessful_response("unauthorized"), "unauthorized"),
            ("expired", ocsp_response(_LEAF, _CA, this_update=now - 3 * hour, next_update=now - hour),
             "expired"),
            ("ends now", ocsp_response(_LEAF, _CA, this_update=now - hour, next_update=now), "expired"),
            ("not yet valid", ocsp_response(_LEAF, _CA, this_update=now + hour), "not valid before"),
            ("no nextUpdate", ocsp_response(_LEAF, _CA, no_next_update=True), "no nextUpdate"),
            ("wrong serial", ocsp_response(_OTHER_LEAF, _CA), "another certificate"),
            ("wrong issuer", ocsp_response(_LEAF, _CA, issuer=_OTHER_CA.certificate), "another issuer"),
            ("bad signature", _flip_signature(ocsp_response(_LEAF, _CA)), "does not verify"),
            ("signed by another CA", _sign_as(forger), "does not verify"),
            ("delegate without EKU", ocsp_response(_LEAF, _CA, signer=ocsp_signer(_CA, eku=False)),
             "lacks the OCSP signing"),
            ("delegate of another CA", ocsp_response(_LEAF, _CA, signer=ocsp_signer(_OTHER_CA)),
             "did not certify"),
            ("forged delegation", ocsp_response(_LEAF, _CA, signer=ocsp_signer(_CA, issuer_key=forger.key)),
             "did not certify"),
            ("unknown status", ocsp_response(_LEAF, _CA, status="unknown"), "does not know"),
        ]
        for name, der, reason in cases:
            with self.subTest(name):
                e = self.assertRaises(OCSPError, self.check, der, now=now)
                self.assertIn(reason, str(e), name)

    def test_usable_window(self):
        """
        A kept staple stops being usable at its nextUpdate.
        """
        now = _now()
        staple = self.check(ocsp_response(_LEAF, _CA, next_update=now + datetime.timedelta(seconds=10)), now=now)
        self.assertTrue(staple.usable(now + datetime.timedelta(seconds=9)))
        self.assertFalse(staple.usable(now + datetime.timedelta(seconds=10)))


def _flip_signature(der):
    response = ocsp.load_der_ocsp_response(der)
    signature = response.signature
    index = der.rindex(signature)
    return der[:index] + bytes([signature[0] ^ 1]) + signature[1:] + der[index + len(signature):]


def _sign_as(forger):
    # The right certificate id, signed by a key that is neither the
    # issuer's nor a delegated responder's.
    now = _now()
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=_LEAF.certificate, issuer=_CA.certificate, algorithm=hashes.SHA1(),
        cert_status=ocsp.OCSPCertStatus.GOOD, this_update=now - datetime.timedelta(hours=1),
        next_update=now + datetime.timedelta(hours=1), revocation_time=None, revocation_reason=None)
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, forger.certificate)
    return builder.sign(forger.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
