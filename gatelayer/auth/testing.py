"""
Test helpers for authentication: keys, JWKS documents, signed (and
deliberately malformed) tokens, and an in-memory HTTP agent for JWKS fetches.

Key generation is slow enough to matter in a suite, so each kind of key is
made once per process and reused.
"""

import base64
import functools
import hashlib
import hmac
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


def _header(kid, **extra):
    header = {"alg": "RS256", "kid": kid}
    header.update(extra)
    return header


def bad_tokens(claims, now, kid="rsa1"):
    """
    C{(description, token)} pairs that a verifier must refuse with 401,
    given good C{claims} (with exp, iss, aud and sub) checked at time
    C{now}, for a key set holding L{private_key}C{("RSA")} under C{kid} (and
    an ES256 key C{ec1}). Covers malformed, unsigned, forged, confused,
    expired, early, misaddressed, huge and non-JSON tokens.
    """
    def changed(**changes):
        result = dict(claims)
        for name, value in changes.items():
            if value is None:
                result.pop(name, None)
            else:
                result[name] = value
        return result

    def without_exp(extra):
        return json.dumps(changed(exp=None)).encode()[:-1] + extra + b"}"

    GOOD, NOW, _claims = claims, now, changed  # noqa: N806 (the table reads better in capitals)
    rsa = private_key("RSA")
    other_rsa = private_key("RSA", 1)
    good = token(GOOD, kid=kid)
    head, payload, signature = good.split(b".")
    rsa_pem = public_pem(rsa)
    return [
        ("empty", b""),
        ("one segment", b"abc"),
        ("two segments", head + b"." + payload),
        ("four segments", good + b".abc"),
        ("empty signature", head + b"." + payload + b"."),
        ("padding in base64", head + b"=." + payload + b"." + signature),
        ("standard base64 alphabet", head + b"." + payload + b"+/." + signature),
        ("impossible base64 length", head + b"." + payload + b"." + signature
         + b"A" * ((1 - len(signature)) % 4)),
        ("impossible base64 length in the header", head + b"A" * ((1 - len(head)) % 4) + b"." + payload
         + b"." + signature),
        ("spaces", b" " + good),
        ("trailing newline", good + b"\n"),
        ("non-ascii", good + "\u00e9".encode("utf-8")),
        ("header not JSON", b"bm90IGpzb24." + payload + b"." + signature),
        ("header a JSON list", sign([1, 2], GOOD, rsa, "RS256")),
        ("header without alg", sign({"kid": kid}, GOOD, rsa, "RS256")),
        ("alg not a string", sign({"alg": ["RS256"]}, GOOD, rsa, "RS256")),
        ("alg none", b64({"alg": "none"}) + b"." + b64(GOOD) + b"." + b64(b"x")),
        ("alg None", b64({"alg": "None"}) + b"." + b64(GOOD) + b"." + b64(b"x")),
        ("alg NONE unsigned", b64({"alg": "NONE"}) + b"." + b64(GOOD) + b"."),
        ("alg not allowed", token(GOOD, key=HMAC_SECRET, alg="HS512", kid="hs1")),
        ("HS256 signed with the RSA public key", hmac_token(rsa_pem, {"alg": "HS256", "kid": kid}, GOOD)),
        ("HS256 signed with the RSA public key, no kid", hmac_token(rsa_pem, {"alg": "HS256"}, GOOD)),
        ("crit", token(GOOD, kid=kid, crit=["exp"], exp=1)),
        ("empty crit", token(GOOD, kid=kid, crit=[])),
        ("b64 false", token(GOOD, kid=kid, b64=False, crit=["b64"])),
        ("b64 false without crit", token(GOOD, kid=kid, b64=False)),
        ("zip", token(GOOD, kid=kid, zip="DEF")),
        ("kid not a string", token(GOOD, kid=7)),
        ("kid too long", token(GOOD, kid="k" * 300)),
        ("embedded jwk of the attacker", token(GOOD, key=other_rsa, jwk=public_jwk(other_rsa))),
        ("jku to the attacker", token(GOOD, key=other_rsa, kid=kid, jku="https://evil.example/jwks")),
        ("x5u to the attacker", token(GOOD, key=other_rsa, x5u="https://evil.example/cert.pem")),
        ("signed by another key", token(GOOD, key=other_rsa, kid=kid)),
        ("signature truncated", head + b"." + payload + b"." + signature[:-10]),
        ("signature of another token", head + b"." + b64(_claims(sub="mallory")) + b"." + signature),
        ("RS256 header on an ES256 key id", token(GOOD, key=rsa, kid="ec1")),
        ("payload not JSON", sign(_header(kid), b"not json", rsa, "RS256")),
        ("payload a JSON list", sign(_header(kid), b"[1,2,3]", rsa, "RS256")),
        ("payload a JSON string", sign(_header(kid), b'"alice"', rsa, "RS256")),
        ("payload not UTF-8", sign(_header(kid), b'{"sub":"\xff"}', rsa, "RS256")),
        ("duplicate claim", sign(_header(kid), b'{"exp":1,"sub":"a","exp":99999999999}', rsa, "RS256")),
        ("exp NaN", sign(_header(kid), without_exp(b',"exp":NaN'), rsa, "RS256")),
        ("exp Infinity", sign(_header(kid), without_exp(b',"exp":Infinity'), rsa, "RS256")),
        ("exp overflowing to infinity", sign(_header(kid), without_exp(b',"exp":1e999'), rsa, "RS256")),
        ("exp an integer beyond any float", sign(_header(kid), without_exp(b',"exp":1' + b"0" * 400), rsa, "RS256")),
        ("exp an integer too long to parse", sign(_header(kid), without_exp(b',"exp":' + b"9" * 5000), rsa,
                                                  "RS256")),
        ("nbf a huge negative integer", token(_claims(nbf=-10 ** 400), kid=kid)),
        ("exp a string", token(_claims(exp=str(NOW + 300)), kid=kid)),
        ("exp true", token(_claims(exp=True), kid=kid)),
        ("no exp", token(_claims(exp=None), kid=kid)),
        ("expired", token(_claims(exp=NOW - 1), kid=kid)),
        ("expiring now", token(_claims(exp=NOW), kid=kid)),
        ("not valid yet", token(_claims(nbf=NOW + 60), kid=kid)),
        ("nbf a string", token(_claims(nbf="soon"), kid=kid)),
        ("issued in the future", token(_claims(iat=NOW + 3600), kid=kid)),
        ("wrong issuer", token(_claims(iss="https://evil.example"), kid=kid)),
        ("issuer with a trailing slash", token(_claims(iss="https://idp.example.com/"), kid=kid)),
        ("no issuer", token(_claims(iss=None), kid=kid)),
        ("wrong audience", token(_claims(aud="other"), kid=kid)),
        ("audience list without ours", token(_claims(aud=["a", "b"]), kid=kid)),
        ("audience a number", token(_claims(aud=5), kid=kid)),
        ("no audience", token(_claims(aud=None), kid=kid)),
        ("sub a number", token(_claims(sub=42), kid=kid)),
        ("huge token", token(_claims(pad="x" * 20000), kid=kid)),
        ("huge header", b"e" * 100000 + b"." + payload + b"." + signature),
        ("ES256 token with a bad signature length", b64({"alg": "ES256", "kid": "ec1"}) + b"." + payload
         + b"." + b64(b"\x00" * 10)),
        ("EdDSA token with a bad signature", b64({"alg": "EdDSA", "kid": "ed1"}) + b"." + payload
         + b"." + b64(b"\x01" * 64)),
    ]


def hmac_token(secret, header, claims):
    """
    A token signed with HMAC-SHA256 under any bytes C{secret}, even the PEM
    of a public key (which PyJWT itself refuses to use): the algorithm
    confusion attack.
    """
    signing_input = b64(header) + b"." + b64(claims)
    return signing_input + b"." + b64(hmac.new(secret, signing_input, hashlib.sha256).digest())


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
        """
        Remember the response this one followed (redirects).
        """
        self.previousResponse = response

    def deliverBody(self, protocol):
        """
        Connect C{protocol} to an in-memory transport and, unless hanging,
        deliver the whole body.
        """
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
        """
        Record the request; answer it with the next queued response, or
        return a Deferred for L{respond}.
        """
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
