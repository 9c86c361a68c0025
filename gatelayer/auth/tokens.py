"""
JSON Web Token verification, written to reject rather than to interpret.

The verifier parses the compact form itself (strict base64url, JSON objects
without duplicate names or NaN), refuses C{alg=none}, algorithms the operator
did not allow and any C{crit} extension, picks candidate keys only among the
configured ones (a token's C{kid} is a dictionary lookup; C{jku}, C{x5u},
C{x5c} and C{jwk} are never followed), checks the signature with the key's
pinned algorithm and then the registered claims against an injected clock.
Every failure is a L{TokenRejected} with a short description safe to put in a
response header; no token a client can send raises anything else.
"""

import base64
import binascii
import hashlib
import json
import math
import re

from gatelayer.auth.cache import ExpiringCache
from gatelayer.auth.jwks import MAX_KID_LENGTH, KeySet

DEFAULT_MAX_TOKEN_SIZE = 8192
"""Tokens longer than this many bytes are refused before any decoding."""

_COMPACT = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")


class TokenRejected(Exception):
    """
    A token is not acceptable. C{description} is a fixed sentence (never
    echoing client data) for the C{error_description} of the challenge.
    """

    status = 401
    error = "invalid_token"

    def __init__(self, description):
        super().__init__(description)
        self.description = description


class UnknownKey(TokenRejected):
    """
    No configured key has the token's C{kid} and algorithm. With a JWKS URL
    the key set may be stale, so the caller may refetch once and retry.
    """


class InsufficientScope(TokenRejected):
    """
    The token is valid but lacks a scope the route requires (403).
    """

    status = 403
    error = "insufficient_scope"


def _b64decode(segment):
    if len(segment) % 4 == 1:
        raise TokenRejected("token is not valid base64url")
    try:
        return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenRejected("token is not valid base64url") from None


def _no_duplicates(pairs):
    result = {}
    for name, value in pairs:
        if name in result:
            raise ValueError("duplicate member")
        result[name] = value
    return result


def _no_constants(name):
    raise ValueError("NaN and Infinity are not JSON")


def _json_object(data, what):
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                           parse_constant=_no_constants)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise TokenRejected(f"token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenRejected(f"token {what} is not a JSON object")
    return value


def _is_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        # An integer beyond any float: no time, and arithmetic on it would raise.
        return False


def token_scopes(claims):
    """
    The scopes a token grants: the space-separated C{scope} claim (RFC 8693)
    and the C{scp} claim (a list or a space-separated string), together.
    """
    granted = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(item for item in value if isinstance(item, str))
    return granted


class TokenVerifier:
    """
    Verify compact JWS tokens against a L{KeySet} and a claims policy,
    caching the claims of good tokens until they expire.

    @ivar keys: the current L{KeySet}; replace it through L{set_keys}.
    """

    def __init__(self, keys, algorithms, issuer=None, audiences=(), leeway=0.0,
                 required_claims=("exp",), max_size=DEFAULT_MAX_TOKEN_SIZE, cache_size=10000):
        """
        @param keys: the L{KeySet} to verify with.
        @param algorithms: the algorithms a token header may name.
        @param issuer: the exact C{iss} required, or L{None}.
        @param audiences: C{aud} must name one of these; when empty, a
            token carrying C{aud} is refused (it is addressed to someone
            else, RFC 7519 4.1.3).
        @param leeway: seconds of clock skew tolerated on C{exp}, C{nbf} and
            C{iat}.
        @param required_claims: claims that must be present; C{exp} always is.
        @param max_size: the longest token accepted, in bytes.
        @param cache_size: how many verified tokens to remember.
        """
        self.keys = keys
        self.algorithms = frozenset(algorithms)
        self.issuer = issuer
        self.audiences = tuple(audiences)
        self.leeway = float(leeway)
        self.required_claims = tuple(dict.fromkeys(("exp", *required_claims)))
        self.max_size = max_size
        self._cache = ExpiringCache(cache_size)

    def set_keys(self, keys):
        """
        Verify with C{keys} from now on. Cached results are forgotten: a key
        that left the set must stop vouching for its tokens at once.
        """
        self.keys = keys
        self._cache.clear()

    def verify(self, token, now):
        """
        Verify C{token} (bytes) at time C{now} and return its claims (a new
        dict each call, so callers may keep it).

        @raise TokenRejected: (or L{UnknownKey}) with the reason.
        """
        if len(token) > self.max_size:
            raise TokenRejected("token is too large")
        cache_key = hashlib.sha256(token).digest()
        cached = self._cache.get(cache_key, now)
        if cached is not None:
            return dict(cached)
        claims = self._verify(token, now)
        self._cache.put(cache_key, claims, claims["exp"] + self.leeway)
        return dict(claims)

    def _verify(self, token, now):
        if not _COMPACT.match(token):
            raise TokenRejected("token is not a signed JWT in compact form")
        header_segment, payload_segment, signature_segment = token.split(b".")
        header = _json_object(_b64decode(header_segment), "header")
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise TokenRejected("token header has no algorithm")
        if algorithm.lower() == "none":
            raise TokenRejected("unsigned tokens are not accepted")
        if algorithm not in self.algorithms:
            raise TokenRejected("token algorithm is not accepted")
        if "crit" in header:
            raise TokenRejected("token header lists critical extensions that are not supported")
        if header.get("b64", True) is not True or "zip" in header:
            raise TokenRejected("token header asks for an unsupported encoding")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
            raise TokenRejected("token key id is not a short string")
        signature = _b64decode(signature_segment)
        candidates = self.keys.candidates(algorithm, kid)
        if not candidates:
            raise UnknownKey("no configured key matches the token")
        signing_input = header_segment + b"." + payload_segment
        if not any(key.verify(signing_input, signature) for key in candidates):
            raise TokenRejected("token signature does not verify")
        claims = _json_object(_b64decode(payload_segment), "payload")
        self._check_claims(claims, now)
        return claims

    def _check_claims(self, claims, now):
        for name in self.required_claims:
            if claims.get(name) is None:
                raise TokenRejected(f"token lacks the {name} claim")
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _is_number(claims[name]):
                raise TokenRejected(f"token {name} claim is not a number")
        if now >= claims["exp"] + self.leeway:
            raise TokenRejected("token has expired")
        if "nbf" in claims and now + self.leeway < claims["nbf"]:
            raise TokenRejected("token is not valid yet")
        if "iat" in claims and now + self.leeway < claims["iat"]:
            raise TokenRejected("token is issued in the future")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise TokenRejected("token issuer is not accepted")
        if "aud" in claims or self.audiences:
            audience = claims.get("aud")
            if isinstance(audience, str):
                audience = [audience]
            if not isinstance(audience, list) or not all(isinstance(a, str) for a in audience):
                raise TokenRejected("token audience is not accepted")
            if not set(audience) & set(self.audiences):
                raise TokenRejected("token audience is not accepted")
        if "sub" in claims and not isinstance(claims["sub"], str):
            raise TokenRejected("token sub claim is not a string")

    def check_scopes(self, claims, scopes):
        """
        Raise L{InsufficientScope} unless C{claims} grant every one of
        C{scopes}.
        """
        if scopes and not set(scopes) <= token_scopes(claims):
            raise InsufficientScope("token lacks a required scope")


__all__ = ["InsufficientScope", "KeySet", "TokenRejected", "TokenVerifier", "UnknownKey", "token_scopes"]
