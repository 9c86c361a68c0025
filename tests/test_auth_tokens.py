"""
Tests for L{gatelayer.auth.tokens}: what a token must be to pass, table-style.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.auth import testing as t
from gatelayer.auth.jwks import KeySet, VerificationKey, load_secret_file, parse_jwks
from gatelayer.auth.tokens import InsufficientScope, TokenRejected, TokenVerifier, UnknownKey, token_scopes

NOW = 1_000_000.0
GOOD = {"sub": "alice", "exp": NOW + 300, "iss": "https://idp.example.com", "aud": "api"}


def _keys():
    rsa, ec, ed = t.private_key("RSA"), t.private_key("P-256"), t.private_key("Ed25519")
    keys, _ = parse_jwks(
        t.jwks(t.public_jwk(rsa, "rsa1"), t.public_jwk(ec, "ec1"), t.public_jwk(ed, "ed1")),
        {"RS256", "ES256", "EdDSA"}, "test jwks")
    secret = VerificationKey(algorithm="HS256", key=t.HMAC_SECRET, kid="hs1", source="secret")
    return keys.merged([secret])


def _verifier(**kwargs):
    options = dict(algorithms=("RS256", "ES256", "EdDSA", "HS256"), issuer="https://idp.example.com",
                   audiences=("api",))
    options.update(kwargs)
    return TokenVerifier(_keys(), **options)


def _claims(**changes):
    claims = dict(GOOD)
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


class BadTokenTests(SynchronousTestCase):
    """
    Every malformed, forged, expired or misaddressed token is refused with a
    L{TokenRejected}, never another exception.
    """

    def test_table(self):
        """
        Each token of the table is refused (401) with a description.
        """
        verifier = _verifier()
        for description, token in t.bad_tokens(GOOD, NOW):
            try:
                verifier.verify(token, NOW)
            except TokenRejected as e:
                self.assertEqual(e.status, 401, description)
                self.assertTrue(e.description, description)
                self.assertNotIn('"', e.description, description)
            else:
                self.fail(f"{description}: accepted")

    def test_descriptions(self):
        """
        The main cases are told apart in the description.
        """
        verifier = _verifier()
        cases = [
            (t.token(_claims(exp=NOW - 1), kid="rsa1"), "token has expired"),
            (t.token(_claims(nbf=NOW + 60), kid="rsa1"), "token is not valid yet"),
            (t.b64({"alg": "none"}) + b"." + t.b64(GOOD) + b"." + t.b64(b"x"), "unsigned tokens are not accepted"),
            (t.token(GOOD, kid="rsa1", crit=["exp"]), "token header lists critical extensions that are not supported"),
            (t.token(_claims(aud="other"), kid="rsa1"), "token audience is not accepted"),
            (t.token(_claims(iss="x"), kid="rsa1"), "token issuer is not accepted"),
            (t.token(GOOD, key=t.private_key("RSA", 1), kid="rsa1"), "token signature does not verify"),
            (b"abc", "token is not a signed JWT in compact form"),
        ]
        for token, expected in cases:
            with self.assertRaises(TokenRejected) as raised:
                verifier.verify(token, NOW)
            self.assertEqual(raised.exception.description, expected)

    def test_algorithm_confusion_without_secrets(self):
        """
        With only an RSA key configured, an HS256 token made with that key's
        public PEM as secret finds no key at all (HS256 is not even allowed).
        """
        keys, _ = parse_jwks(t.jwks(t.public_jwk(t.private_key("RSA"), "rsa1")), {"RS256"}, "jwks")
        token = t.hmac_token(t.public_pem(t.private_key("RSA")), {"alg": "HS256", "kid": "rsa1"}, GOOD)
        self.assertRaises(TokenRejected, TokenVerifier(keys, ["RS256"]).verify, token, NOW)
        permissive = TokenVerifier(keys, ["RS256", "HS256"], audiences=("api",))
        self.assertRaises(UnknownKey, permissive.verify, token, NOW)

    def test_unknown_kid(self):
        """
        A token naming a key id nobody configured raises L{UnknownKey} (the
        filter may refetch a JWKS URL), before any signature work.
        """
        token = t.token(GOOD, kid="rotated")
        self.assertRaises(UnknownKey, _verifier().verify, token, NOW)

    def test_deeply_nested_payload(self):
        """
        A validly signed payload nested deeper than the JSON parser goes is
        refused, not a crash.
        """
        nested = b"[" * 50000 + b"]" * 50000
        token = t.sign({"alg": "RS256", "kid": "rsa1"}, nested, t.private_key("RSA"), "RS256")
        verifier = _verifier(max_size=len(token))
        self.assertRaises(TokenRejected, verifier.verify, token, NOW)

    def test_random_bytes(self):
        """
        Arbitrary byte strings, in three dot-separated parts or not, are only
        ever refused.
        """
        import random

        rng = random.Random(6)
        verifier = _verifier()
        alphabet = b"ABCxyz019-_.=+/ \x00\xff{}\"'"
        for _ in range(500):
            token = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
            self.assertRaises(TokenRejected, verifier.verify, token, NOW)


class GoodTokenTests(SynchronousTestCase):
    """
    Well-formed tokens signed by a configured key, on time and addressed to
    us, give their claims.
    """

    def test_each_key_type(self):
        """
        RS256, ES256, EdDSA and HS256 tokens verify with their own keys.
        """
        verifier = _verifier()
        for key, alg, kid in [
                (t.private_key("RSA"), "RS256", "rsa1"),
                (t.private_key("P-256"), "ES256", "ec1"),
                (t.private_key("Ed25519"), "EdDSA", "ed1"),
                (t.HMAC_SECRET, "HS256", "hs1")]:
            self.assertEqual(verifier.verify(t.token(GOOD, key=key, alg=alg, kid=kid), NOW), GOOD)

    def test_without_kid(self):
        """
        A token without a kid is tried against the keys of its algorithm.
        """
        self.assertEqual(_verifier().verify(t.token(GOOD), NOW), GOOD)

    def test_audience_list(self):
        """
        An audience list passes when one of its members is configured.
        """
        claims = _claims(aud=["web", "api"])
        self.assertEqual(_verifier().verify(t.token(claims, kid="rsa1"), NOW), claims)

    def test_no_policy(self):
        """
        Without issuer and audience configured, only exp is needed.
        """
        claims = {"exp": NOW + 1}
        verifier = _verifier(issuer=None, audiences=())
        self.assertEqual(verifier.verify(t.token(claims, kid="rsa1"), NOW), claims)

    def test_leeway(self):
        """
        The leeway tolerates an expiry, a not-before and an issued-at that
        are off by less than it, and no more.
        """
        verifier = _verifier(leeway=30)
        for claims in (_claims(exp=NOW - 29), _claims(nbf=NOW + 29), _claims(iat=NOW + 29)):
            self.assertEqual(verifier.verify(t.token(claims, kid="rsa1"), NOW), claims)
        for claims in (_claims(exp=NOW - 30), _claims(nbf=NOW + 31), _claims(iat=NOW + 31)):
            self.assertRaises(TokenRejected, verifier.verify, t.token(claims, kid="rsa1"), NOW)

    def test_required_claims(self):
        """
        Claims listed as required must be present; exp always is.
        """
        verifier = _verifier(required_claims=("sub", "tenant"))
        with self.assertRaises(TokenRejected) as raised:
            verifier.verify(t.token(GOOD, kid="rsa1"), NOW)
        self.assertEqual(raised.exception.description, "token lacks the tenant claim")
        claims = _claims(tenant="t1")
        self.assertEqual(verifier.verify(t.token(claims, kid="rsa1"), NOW), claims)

    def test_typ_and_unknown_header_members(self):
        """
        Header members other than the checked ones are ignored.
        """
        token = t.token(GOOD, kid="rsa1", typ="at+jwt", cty="whatever")
        self.assertEqual(_verifier().verify(token, NOW), GOOD)

    def test_claims_are_copies(self):
        """
        Each call gives its own dict: a filter changing it does not change
        the cache.
        """
        verifier = _verifier()
        token = t.token(GOOD, kid="rsa1")
        verifier.verify(token, NOW)["sub"] = "mallory"
        self.assertEqual(verifier.verify(token, NOW)["sub"], "alice")


class CacheTests(SynchronousTestCase):
    """
    Verified tokens are remembered until they expire, boundedly.
    """

    def test_cached_until_exp(self):
        """
        A cached token is not checked against the keys again, but still
        expires at its exp.
        """
        verifier = _verifier()
        token = t.token(GOOD, kid="rsa1")
        verifier.verify(token, NOW)
        verifier.keys = KeySet()
        self.assertEqual(verifier.verify(token, NOW + 299), GOOD)
        self.assertRaises(TokenRejected, verifier.verify, token, NOW + 300)

    def test_new_keys_forget(self):
        """
        Replacing the key set forgets cached results: a removed key stops
        vouching for its tokens at once.
        """
        verifier = _verifier()
        token = t.token(GOOD, kid="rsa1")
        verifier.verify(token, NOW)
        verifier.set_keys(KeySet())
        self.assertRaises(UnknownKey, verifier.verify, token, NOW)

    def test_bounded(self):
        """
        The cache holds at most cache_size tokens.
        """
        verifier = _verifier(cache_size=2)
        for n in range(5):
            verifier.verify(t.token(_claims(jti=str(n)), kid="rsa1"), NOW)
        self.assertEqual(len(verifier._cache), 2)

    def test_failures_not_cached(self):
        """
        A refused token stays refused and a good one is unaffected.
        """
        verifier = _verifier()
        bad = t.token(GOOD, key=t.private_key("RSA", 1), kid="rsa1")
        for _ in range(2):
            self.assertRaises(TokenRejected, verifier.verify, bad, NOW)
        self.assertEqual(len(verifier._cache), 0)


class ScopeTests(SynchronousTestCase):
    """
    Scopes come from the scope and scp claims.
    """

    def test_token_scopes(self):
        """
        scope is space-separated; scp is a list or a string; both count.
        """
        self.assertEqual(token_scopes({"scope": "a b", "scp": ["c", 5]}), {"a", "b", "c"})
        self.assertEqual(token_scopes({"scp": "d e"}), {"d", "e"})
        self.assertEqual(token_scopes({"scope": 7}), set())

    def test_check(self):
        """
        All required scopes must be granted, else 403.
        """
        verifier = _verifier()
        verifier.check_scopes({"scope": "orders:read orders:write"}, ("orders:read",))
        with self.assertRaises(InsufficientScope) as raised:
            verifier.check_scopes({"scope": "orders:write"}, ("orders:read",))
        self.assertEqual(raised.exception.status, 403)
        self.assertEqual(raised.exception.error, "insufficient_scope")


class SecretFileTests(SynchronousTestCase):
    """
    HS tokens verify with a secret file.
    """

    def test_secret_file(self):
        """
        The trailing line break of a secret file is not part of the secret.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(t.HMAC_SECRET + b"\n")
        verifier = TokenVerifier(load_secret_file(path, ("HS256",)), ["HS256"])
        claims = {"exp": NOW + 5}
        self.assertEqual(verifier.verify(t.token(claims, key=t.HMAC_SECRET, alg="HS256"), NOW), claims)
