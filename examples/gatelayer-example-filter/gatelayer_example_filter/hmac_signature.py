"""
The C{hmac_signature} filter: a request passes only when it carries a valid
HMAC-SHA256 signature made with a secret it shares with the gateway.

The signed text is four lines joined by C{\\n}: the method, the request
target (path, then C{?query} when there is one), the timestamp header's
value (Unix seconds) and the lower-case hex SHA-256 of the body. The
signature header holds the lower-case hex HMAC-SHA256 of that text. A
timestamp further than C{max_skew} from the gateway's clock is refused, so
a captured request cannot be replayed later.

Only the public filter API (L{gatelayer.filters.api}) is used.
"""

import hashlib
import hmac

from zope.interface import implementer

from gatelayer.filters.api import PATH, FilterType, IFilter, Key, duration, problem_reply

__all__ = ["FILTER_TYPE", "MIN_SECRET", "HmacSignatureFilter", "load_secret", "sign", "signed_text"]

MIN_SECRET = 32
"""The fewest bytes a secret may have."""

_CHUNK = 65536


def load_secret(path):
    """
    The secret in the file at C{path}: its bytes without a final line end.

    @raise ValueError: it cannot be read or is shorter than L{MIN_SECRET}.
    """
    try:
        with open(path, "rb") as f:
            secret = f.read().rstrip(b"\r\n")
    except OSError as e:
        raise ValueError(f"{path}: cannot be read: {e.strerror}") from None
    if len(secret) < MIN_SECRET:
        raise ValueError(f"{path}: the secret has {len(secret)} bytes, fewer than {MIN_SECRET}")
    return secret


def signed_text(method, target, timestamp, body_digest):
    """
    The text a signature covers (bytes): C{method}, C{target},
    C{timestamp} and C{body_digest} (hex), one a line.
    """
    return b"\n".join((method, target, timestamp, body_digest))


def sign(secret, method, target, timestamp, body=b""):
    """
    The signature (lower-case hex, bytes) of a request: what a client puts
    in the signature header.

    @param timestamp: the timestamp header's value (bytes).
    """
    digest = hashlib.sha256(body).hexdigest().encode("ascii")
    return hmac.new(secret, signed_text(method, target, timestamp, digest), hashlib.sha256).hexdigest() \
        .encode("ascii")


def _check(settings):
    try:
        load_secret(settings.secret_file)
    except ValueError as e:
        return [("secret_file", str(e))]
    if settings.max_skew <= 0:
        return [("max_skew", "must be more than 0s")]
    return []


@implementer(IFilter)
class HmacSignatureFilter:
    """
    Refuse requests without a valid, fresh signature (401 problem details
    naming the reason); pass the others unchanged.
    """

    def __init__(self, name, secret, header, timestamp_header, max_skew, clock):
        """
        @param secret: the shared secret (bytes).
        @param header: the signature header's name (bytes).
        @param timestamp_header: the timestamp header's name (bytes).
        @param max_skew: how far (seconds) the timestamp may be from C{clock}.
        @param clock: an L{twisted.internet.interfaces.IReactorTime}.
        """
        self.name = name
        self._secret = secret
        self._header = header
        self._timestamp_header = timestamp_header
        self._max_skew = max_skew
        self._clock = clock

    def _refuse(self, reason):
        return problem_reply(401, "Unauthorized", f"request signature refused: {reason}", reason=reason)

    def on_request(self, exchange):
        """
        Check the signature of C{exchange}'s request.
        """
        headers = exchange.headers
        signatures = headers.getRawHeaders(self._header)
        if not signatures:
            return self._refuse("missing signature")
        stamps = headers.getRawHeaders(self._timestamp_header)
        if not stamps:
            return self._refuse("missing timestamp")
        if len(signatures) != 1 or len(stamps) != 1:
            return self._refuse("more than one signature or timestamp")
        stamp = stamps[0]
        if not stamp.isdigit() or len(stamp) > 12:
            return self._refuse("timestamp is not Unix seconds")
        if abs(self._clock.seconds() - int(stamp)) > self._max_skew:
            return self._refuse("timestamp outside the allowed skew")
        target = exchange.path + (b"?" + exchange.query if exchange.query else b"")
        expected = hmac.new(self._secret, signed_text(exchange.method, target, stamp, self._body_digest(exchange)),
                            hashlib.sha256).hexdigest().encode("ascii")
        if not hmac.compare_digest(expected, signatures[0].strip().lower()):
            return self._refuse("signature does not match")
        exchange.context["hmac_signature.verified"] = self.name
        return None

    def _body_digest(self, exchange):
        digest = hashlib.sha256()
        if exchange.body_length():
            body = exchange.body
            body.seek(0)
            for chunk in iter(lambda: body.read(_CHUNK), b""):
                digest.update(chunk)
            body.seek(0)
        return digest.hexdigest().encode("ascii")

    def on_response(self, exchange):
        """
        Nothing to add to the response.
        """


def _build(name, settings, reactor):
    return HmacSignatureFilter(
        name, load_secret(settings.secret_file), settings.header.encode("ascii"),
        settings.timestamp_header.encode("ascii"), settings.max_skew, reactor)


def _header_name(value):
    if not value or not all(33 <= ord(c) < 127 and c not in '()<>@,;:\\"/[]?={}' for c in value):
        raise ValueError("is not a header name")
    return value


FILTER_TYPE = FilterType(
    keys=(
        Key("secret_file", PATH, doc="the file holding the shared secret (at least 32 bytes)"),
        Key("header", _header_name, "X-Signature", doc="the header carrying the hex signature"),
        Key("timestamp_header", _header_name, "X-Signature-Timestamp",
            doc="the header carrying the signing time, Unix seconds"),
        Key("max_skew", duration, 300.0, doc="how far the timestamp may be from the gateway's clock"),
    ),
    build=_build,
    check=_check,
)
"""The C{hmac_signature} filter type: what the entry point names."""
