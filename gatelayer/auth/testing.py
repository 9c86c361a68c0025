"""
Test helpers for authentication: keys, JWKS documents, signed (and
deliberately malformed) tokens, and an in-memory HTTP agent for JWKS fetches.

Key generation is slow enough to matter in a suite, so each kind of key is
made once per process and reused.
"""

import base64
import functools
import json

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IResponse
from zope.interface import implementer

from jwt.algorithms import get_default_algorithms

HMAC_SECRET = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
"""A 64-byte secret, long enough for HS256, HS384 and HS512."""


def b64(data):
    """
    Unpadded base64url of C{data} (bytes, or a dict/list encoded as JSON).
    """
    if not isinstance(data, bytes):
        data = json.dumps(data, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@functools.lru_cache(maxsize=None)
def private_key(kind="RSA", index=0):
    """
    A private key: C{RSA} (2048 bits), C{P-256}, C{P-384} or C{Ed25519};
    C{index} tells several keys of one kind apart.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "P-256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "P-384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def public_pem(key):
    """
    The PEM SubjectPublicKeyInfo of C{key}'s public half.
    """
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_jwk(key, kid=None, alg=None, **extra):
    """
    The public JWK (a dict) of C{key}, with C{kid} and C{alg} when given.
    """
    algorithms = get_default_algorithms()
    family = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}
    jwk = None
    for name in ("RS256", "ES256", "EdDSA"):
        try:
            jwk = algorithms[name].to_jwk(key.public_key(), as_dict=True)
            break
        except Exception:
            continue
    assert jwk is not None and jwk["kty"] in family
    jwk.pop("alg", None)
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    jwk.update(extra)
    return jwk


def jwks(*keys):
    """
    A JWKS document (bytes) holding the JWKs C{keys}.
    """
    return json.dumps({"keys": list(keys)}).encode("utf-8")


def sign(header, payload, key, alg):
    """
    A compact token with C{header} and C{payload} (dicts, or raw bytes to
    encode as they are) signed with C{key} (a private key or secret bytes)
    under C{alg}, whatever the header says.
    """
    signing_input = b64(header) + b"." + b64(payload)
    implementation = get_default_algorithms()[alg]
    signature = implementation.sign(signing_input, implementation.prepare_key(key)
                                    if isinstance(key, bytes) else key)
    return signing_input + b"." + b64(signature)


def token(claims, key=None, alg="RS256", kid=None, **header):
    """
    A well-formed token for C{claims}, signed with C{key} (the first RSA key
    by default) under C{alg}; extra header members as keywords.
    """
    if key is None:
        key = private_key("RSA")
    full_header = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        full_header["kid"] = kid
    full_header.update(header)
    return sign(full_header, claims, key, alg)


@implementer(IResponse)
class FakeResponse:
    """
    An L{IResponse} whose body is delivered at once, or held back
    (C{hang=True}) until L{finish} is called.
    """

    version = (b"HTTP", 1, 1)
    phrase = b"OK"
    length = UNKNOWN_LENGTH
    request = None
    previousResponse = None

    def __init__(self, code=200, body=b"", hang=False):
        self.code = code
        self.body = body
        self.hang = hang
        self.headers = Headers()
        self.protocol = None
        self.transport = StringTransport()

    def setPreviousResponse(self, response):
        self.previousResponse = response

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        if not self.hang:
            self.finish()

    def finish(self):
        """
        Deliver the body and end it.
        """
        from twisted.python.failure import Failure

        if self.body:
            self.protocol.dataReceived(self.body)
        self.protocol.connectionLost(Failure(ResponseDone()))


@implementer(IAgent)
class FakeAgent:
    """
    An L{IAgent} that records requests; each returns a Deferred the test
    fires (or the next queued response, at once).

    @ivar requests: C{(method, uri, headers, deferred)} for each request.
    """

    def __init__(self):
        self.requests = []
        self.queued = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        if self.queued:
            response = self.queued.pop(0)
            self.requests.append((method, uri, headers, None))
            return succeed(response)
        d = Deferred()
        self.requests.append((method, uri, headers, d))
        return d

    def respond(self, response):
        """
        Answer the oldest request still waiting with C{response}.
        """
        for index, (method, uri, headers, d) in enumerate(self.requests):
            if d is not None and not d.called:
                d.callback(response)
                return
        raise AssertionError("no request is waiting")

    @property
    def pending(self):
        """
        How many requests have not been answered.
        """
        return sum(1 for *_, d in self.requests if d is not None and not d.called)
