"""
OCSP stapling, the pure part: which responder a certificate names, which
certificate of its chain issued it, the request to send, and whether a
response may be stapled.

A response is stapled only when every check passes: the responder answered
C{successful}, the response speaks of exactly the served certificate (serial
and issuer hashes), it is signed by the issuer or by a responder certificate
the issuer gave the OCSP signing usage, and it is valid now
(C{thisUpdate <= now < nextUpdate}). A C{revoked} answer passes (telling
clients is the point of stapling) and the caller logs it as an error; an
C{unknown} answer does not.

Nothing here does I/O or reads a clock: the time is an argument.
"""

import datetime

from attrs import frozen
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

__all__ = [
    "OCSPError",
    "Staple",
    "CLOCK_SKEW",
    "responder_url",
    "find_issuer",
    "build_request",
    "check_response",
]

#: How far a response's C{thisUpdate} may lie ahead of our clock: a responder
#: whose clock runs a little fast must not make a fresh response unusable.
#: C{nextUpdate} gets no such grace: an expired response is never stapled.
CLOCK_SKEW = datetime.timedelta(minutes=5)

# What a responder is asked with; SHA-1 is what RFC 6960 responders must
# understand (it identifies the certificate, it signs nothing).
_REQUEST_HASH = hashes.SHA1()


class OCSPError(ValueError):
    """
    An OCSP response may not be stapled, or a certificate cannot be
    stapled at all; the message says why, in words an operator can act on.
    """


@frozen
class Staple:
    """
    A checked OCSP response for one certificate.

    @ivar der: the response as received: what is stapled.
    @ivar status: C{"good"} or C{"revoked"}.
    @ivar this_update: its C{thisUpdate}, an aware UTC datetime.
    @ivar next_update: its C{nextUpdate}: it is stapled until then, never
        after.
    @ivar revoked_at: the revocation time for a C{"revoked"} one, else
        L{None}.
    """

    der: bytes
    status: str
    this_update: datetime.datetime
    next_update: datetime.datetime
    revoked_at: datetime.datetime = None

    def usable(self, now):
        """
        Whether it may be stapled at C{now} (an aware datetime).
        """
        return self.this_update - CLOCK_SKEW <= now < self.next_update

    def describe(self):
        """
        JSON-ready fields for the admin C{/status} page.
        """
        return {
            "status": self.status,
            "this_update": self.this_update.isoformat(),
            "next_update": self.next_update.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "bytes": len(self.der),
        }


def responder_url(certificate):
    """
    The HTTP URL of the OCSP responder C{certificate} names in its
    authorityInfoAccess extension (the first one), or L{None}.
    """
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for description in access:
        if description.access_method != AuthorityInformationAccessOID.OCSP:
            continue
        location = description.access_location
        if isinstance(location, x509.UniformResourceIdentifier) and location.value.lower().startswith("http://"):
            return location.value
    return None


def _issued_by(certificate, candidate):
    if certificate.issuer != candidate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(candidate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def find_issuer(certificate, chain):
    """
    The certificate of C{chain} that signed C{certificate}, or L{None}: the
    issuer names the response's signer and the request's key hash.
    """
    for candidate in chain:
        if _issued_by(certificate, candidate):
            return candidate
    return None


def build_request(certificate, issuer):
    """
    The DER OCSP request asking about C{certificate} issued by C{issuer}.
    """
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, _REQUEST_HASH)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _identity(certificate, issuer, algorithm):
    # The issuer name and key hashes a responder computes, obtained from a
    # request built with the response's own hash algorithm.
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, algorithm).build()
    return request.issuer_name_hash, request.issuer_key_hash


def _verify(public_key, signature, data, algorithm):
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        public_key.verify(signature, data)
    else:
        raise InvalidSignature()


def _signed_by(response, public_key):
    try:
        _verify(public_key, response.signature, response.tbs_response_bytes, response.signature_hash_algorithm)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _can_sign_ocsp(responder):
    try:
        usages = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in usages


def _check_signature(response, issuer, now):
    if _signed_by(response, issuer.public_key()):
        return
    for responder in response.certificates:
        if not _signed_by(response, responder.public_key()):
            continue
        if not _issued_by(responder, issuer):
            raise OCSPError(
                f"it is signed by {responder.subject.rfc4514_string()}, which the issuer "
                f"{issuer.subject.rfc4514_string()} did not certify")
        if not _can_sign_ocsp(responder):
            raise OCSPError(
                f"its responder certificate {responder.subject.rfc4514_string()} lacks the OCSP signing "
                "extended key usage")
        if not responder.not_valid_before_utc <= now <= responder.not_valid_after_utc:
            raise OCSPError(
                f"its responder certificate {responder.subject.rfc4514_string()} is not valid now "
                f"({responder.not_valid_before_utc.isoformat()} to {responder.not_valid_after_utc.isoformat()})")
        return
    raise OCSPError(
        f"its signature does not verify with the issuer {issuer.subject.rfc4514_string()} "
        "or a responder certificate it delegated")


def _single_response(response, certificate, issuer):
    serials = []
    for single in response.responses:
        serials.append(single.serial_number)
        if single.serial_number != certificate.serial_number:
            continue
        try:
            name_hash, key_hash = _identity(certificate, issuer, single.hash_algorithm)
        except (ValueError, UnsupportedAlgorithm):
            continue
        if (single.issuer_name_hash, single.issuer_key_hash) == (name_hash, key_hash):
            return single
        raise OCSPError(
            f"it answers for serial {certificate.serial_number:x} of another issuer than "
            f"{issuer.subject.rfc4514_string()}")
    listed = ", ".join(f"{s:x}" for s in serials) or "none"
    raise OCSPError(
        f"it is for another certificate (serial {listed}, not {certificate.serial_number:x})")


def check_response(der, certificate, issuer, now):
    """
    Check the OCSP response C{der} (bytes) for C{certificate}, issued by
    C{issuer}, at C{now} (an aware datetime).

    @return: the L{Staple}; its C{status} is C{"revoked"} for a revoked
        certificate (staple it, and say so loudly).
    @raise OCSPError: saying why it may not be stapled.
    """
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as e:
        raise OCSPError(f"it is not a DER OCSP response ({e})") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OCSPError(f"the responder answered {response.response_status.name.lower()}, not successful")
    try:
        single = _single_response(response, certificate, issuer)
        _check_signature(response, issuer, now)
        status = single.certificate_status
        this_update, next_update = single.this_update_utc, single.next_update_utc
        revoked_at = single.revocation_time_utc if status == ocsp.OCSPCertStatus.REVOKED else None
    except OCSPError:
        raise
    except (ValueError, UnsupportedAlgorithm) as e:
        # A field cryptography cannot decode (an unknown hash, a bad time).
        raise OCSPError(f"it cannot be read ({e})") from None
    if status == ocsp.OCSPCertStatus.UNKNOWN:
        raise OCSPError("the responder does not know the certificate (status unknown)")
    if next_update is None:
        raise OCSPError("it has no nextUpdate, so nothing says when it stops being valid")
    if now < this_update - CLOCK_SKEW:
        raise OCSPError(f"it is not valid before {this_update.isoformat()} (thisUpdate)")
    if now >= next_update:
        raise OCSPError(f"it expired at {next_update.isoformat()} (nextUpdate)")
    return Staple(
        der=bytes(der), status="revoked" if revoked_at is not None else "good",
        this_update=this_update, next_update=next_update, revoked_at=revoked_at)
