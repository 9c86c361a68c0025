"""
Tests for L{gatelayer.auth.jwks}: loading keys and pinning each to one
algorithm.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.auth import testing as t
from gatelayer.auth.jwks import (
    MAX_KEYS, KeyLoadError, KeySet, VerificationKey, key_from_jwk, load_key_file, load_secret_file,
    parse_jwks, pin_algorithm,
)
from gatelayer.auth.names import split_algorithm

ASYMMETRIC = ("RS256", "ES256", "ES384", "EdDSA")


class PinAlgorithmTests(SynchronousTestCase):
    """
    A key's algorithm comes from the key and the operator, never a token.
    """

    def test_pinned(self):
        """
        Declared algorithms, curves and single allowed family members pin.
        """
        cases = [
            (("RSA", None, None, {"RS256", "ES256"}), "RS256"),
            (("RSA", None, "PS384", {"PS384", "RS256"}), "PS384"),
            (("EC", "P-256", None, {"ES256"}), "ES256"),
            (("EC", "P-384", None, {"ES384"}), "ES384"),
            (("EC", "P-521", None, {"ES512"}), "ES512"),
            (("OKP", "Ed25519", None, {"EdDSA"}), "EdDSA"),
            (("oct", None, None, {"HS384", "RS256"}), "HS384"),
        ]
        for args, expected in cases:
            self.assertEqual(pin_algorithm(*args), expected, args)

    def test_refused(self):
        """
        Ambiguous, unknown, mismatched or disallowed algorithms are errors.
        """
        cases = [
            ("RSA", None, None, {"RS256", "PS256"}),
            ("RSA", None, None, {"ES256"}),
            ("RSA", None, "HS256", {"HS256", "RS256"}),
            ("RSA", None, "RS512", {"RS256"}),
            ("RSA", None, "none", {"RS256"}),
            ("EC", "P-384", None, {"ES256"}),
            ("EC", "secp256k1", None, {"ES256"}),
            ("EC", "P-256", "ES384", {"ES256", "ES384"}),
            ("OKP", "X25519", None, {"EdDSA"}),
            ("OKP", "Ed25519", None, {"RS256"}),
            ("oct", None, None, {"HS256", "HS512"}),
            ("oct", None, None, {"RS256"}),
            ("DSA", None, None, {"RS256"}),
        ]
        for args in cases:
            self.assertRaises(KeyLoadError, pin_algorithm, *args)


class JwkTests(SynchronousTestCase):
    """
    JWKs become keys, or are refused with a reason naming the key.
    """

    def test_signature_keys_only(self):
        """
        Keys published for encryption, or not for verifying, are skipped.
        """
        key = t.private_key("RSA")
        self.assertIsNone(key_from_jwk(t.public_jwk(key, "e", use="enc"), {"RS256"}, "k"))
        self.assertIsNone(key_from_jwk(t.public_jwk(key, "e", key_ops=["encrypt"]), {"RS256"}, "k"))
        built = key_from_jwk(t.public_jwk(key, "s", use="sig", key_ops=["verify"]), {"RS256"}, "k")
        self.assertEqual((built.kid, built.algorithm), ("s", "RS256"))

    def test_private_material(self):
        """
        A JWK with private parts is refused: only public keys belong there.
        """
        jwk = t.public_jwk(t.private_key("RSA"), "p")
        jwk["d"] = "AQAB"
        with self.assertRaises(KeyLoadError) as raised:
            key_from_jwk(jwk, {"RS256"}, "jwks.json key 1")
        self.assertIn("jwks.json key 1 (kid 'p')", str(raised.exception))
        self.assertIn("private", str(raised.exception))

    def test_secrets_from_network(self):
        """
        oct keys are refused when secrets are not allowed (fetched JWKS).
        """
        jwk = {"kty": "oct", "k": t.b64(t.HMAC_SECRET).decode(), "alg": "HS256"}
        self.assertEqual(key_from_jwk(jwk, {"HS256"}, "k").algorithm, "HS256")
        self.assertRaises(KeyLoadError, key_from_jwk, jwk, {"HS256"}, "k", allow_secrets=False)

    def test_bad_jwks(self):
        """
        Broken key material and documents are refused.
        """
        cases = [
            [1],
            {"kty": "RSA", "n": "!!", "e": "AQAB"},
            {"kty": "RSA"},
            {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": 5},
            {"kty": "RSA", "alg": ["RS256"]},
            {"kty": "oct", "k": t.b64(b"short").decode(), "alg": "HS256"},
            {"kty": "XYZ"},
        ]
        for jwk in cases:
            self.assertRaises(KeyLoadError, key_from_jwk, jwk, {"RS256", "ES256", "HS256"}, "k")

    def test_weak_rsa(self):
        """
        RSA keys under 2048 bits are refused.
        """
        from cryptography.hazmat.primitives.asymmetric import rsa

        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.assertRaises(KeyLoadError, key_from_jwk, t.public_jwk(weak, "w"), {"RS256"}, "k")


class ParseJwksTests(SynchronousTestCase):
    """
    Whole JWKS documents.
    """

    def test_documents(self):
        """
        Anything but an object with a keys list is refused.
        """
        for data in (b"", b"[]", b"{}", b'{"keys": {}}', b"{" * 100000, b'{"keys": []}', b"\xff"):
            self.assertRaises(KeyLoadError, parse_jwks, data, {"RS256"}, "jwks")

    def test_too_many(self):
        """
        A document with more than MAX_KEYS keys is refused whole.
        """
        jwk = t.public_jwk(t.private_key("RSA"), "k")
        self.assertRaises(KeyLoadError, parse_jwks, t.jwks(*[jwk] * (MAX_KEYS + 1)), {"RS256"}, "jwks")

    def test_lenient(self):
        """
        Not strict: unusable keys are skipped and reported, the rest used.
        """
        data = t.jwks(t.public_jwk(t.private_key("RSA"), "r"), t.public_jwk(t.private_key("P-384"), "e"))
        self.assertRaises(KeyLoadError, parse_jwks, data, {"RS256"}, "jwks")
        keys, skipped = parse_jwks(data, {"RS256"}, "jwks", strict=False)
        self.assertEqual([k.kid for k in keys], ["r"])
        self.assertEqual(len(skipped), 1)
        self.assertIn("kid 'e'", skipped[0])


class KeySetTests(SynchronousTestCase):
    """
    Candidate keys for a token's algorithm and key id.
    """

    def test_candidates(self):
        """
        Keys of the token's algorithm with its kid; else those without kid;
        every key of the algorithm when the token names none.
        """
        a = VerificationKey("RS256", object(), "a")
        b = VerificationKey("RS256", object(), "b")
        pem = VerificationKey("RS256", object(), None)
        ec = VerificationKey("ES256", object(), "a")
        keys = KeySet([a, b, pem, ec])
        self.assertEqual(keys.candidates("RS256", "a"), (a,))
        self.assertEqual(keys.candidates("ES256", "a"), (ec,))
        self.assertEqual(keys.candidates("RS256", "zzz"), (pem,))
        self.assertEqual(keys.candidates("ES256", "zzz"), ())
        self.assertEqual(keys.candidates("RS256"), (a, b, pem))
        self.assertEqual(keys.candidates("HS256", "a"), ())
        self.assertEqual(keys.kids, {"a", "b"})
        self.assertEqual(len(keys.merged([VerificationKey("HS256", b"x")])), 5)

    def test_verify_never_raises(self):
        """
        A key given a signature of the wrong shape says no.
        """
        key = VerificationKey("ES256", t.private_key("P-256").public_key())
        self.assertFalse(key.verify(b"a.b", b"short"))
        self.assertFalse(VerificationKey("RS256", "not a key").verify(b"a.b", b"x"))


class FileTests(SynchronousTestCase):
    """
    Key files named in the configuration.
    """

    def write(self, data, name="key"):
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_jwks_file(self):
        """
        A JSON file is a JWKS; every key must be usable.
        """
        path = self.write(t.jwks(t.public_jwk(t.private_key("RSA"), "r"), t.public_jwk(t.private_key("P-256"))))
        keys = load_key_file(path, ASYMMETRIC)
        self.assertEqual(sorted(k.algorithm for k in keys), ["ES256", "RS256"])

    def test_pem(self):
        """
        PEM public keys pin by type or by the algorithm after the path.
        """
        rsa_path = self.write(t.public_pem(t.private_key("RSA")))
        self.assertEqual(load_key_file(rsa_path, ASYMMETRIC).keys[0].algorithm, "RS256")
        self.assertEqual(load_key_file(rsa_path, {"RS256", "PS256"}, "PS256").keys[0].algorithm, "PS256")
        self.assertRaises(KeyLoadError, load_key_file, rsa_path, {"RS256", "PS256"})
        ec_path = self.write(t.public_pem(t.private_key("P-384")))
        self.assertEqual(load_key_file(ec_path, ASYMMETRIC).keys[0].algorithm, "ES384")
        ed_path = self.write(t.public_pem(t.private_key("Ed25519")))
        self.assertEqual(load_key_file(ed_path, ASYMMETRIC).keys[0].algorithm, "EdDSA")

    def test_certificate(self):
        """
        A PEM certificate gives its public key.
        """
        from gatelayer.testing.certs import CertificateAuthority

        authority = CertificateAuthority()
        issued = authority.issue("idp.example.com")
        path = self.write(issued.cert_pem())
        self.assertEqual(len(load_key_file(path, ASYMMETRIC)), 1)

    def test_refused_files(self):
        """
        Private keys, garbage and a JWKS with an algorithm suffix are
        refused, naming the file.
        """
        from cryptography.hazmat.primitives import serialization

        private = t.private_key("RSA").private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        for data, suffix in [(private, None), (b"hello", None), (b"-----BEGIN PUBLIC KEY-----\nAA\n", None),
                             (t.jwks(t.public_jwk(t.private_key("RSA"))), "RS256")]:
            path = self.write(data)
            with self.assertRaises(KeyLoadError) as raised:
                load_key_file(path, ASYMMETRIC, suffix)
            self.assertIn(path, str(raised.exception))
        self.assertRaises(KeyLoadError, load_key_file, path + ".missing", ASYMMETRIC)

    def test_secret(self):
        """
        Secrets must be long enough for their algorithm and pinned to one.
        """
        path = self.write(b"x" * 32 + b"\r\n")
        self.assertEqual(load_secret_file(path, {"HS256"}).keys[0].key, b"x" * 32)
        self.assertRaises(KeyLoadError, load_secret_file, path, {"HS512"})
        self.assertRaises(KeyLoadError, load_secret_file, path, {"HS256", "HS384"})
        self.assertEqual(load_secret_file(path, {"HS256", "HS384"}, "HS256").keys[0].algorithm, "HS256")
        self.assertRaises(KeyLoadError, load_secret_file, self.write(b"\n"), {"HS256"})
        pem = self.write(t.public_pem(t.private_key("RSA")))
        self.assertRaises(KeyLoadError, load_secret_file, pem, {"HS256"})

    def test_split_algorithm(self):
        """
        A known algorithm after the last space is split off; anything else
        is part of the path.
        """
        self.assertEqual(split_algorithm("a.pem RS384"), ("a.pem", "RS384"))
        self.assertEqual(split_algorithm("my keys/a.pem"), ("my keys/a.pem", None))
        self.assertEqual(split_algorithm("a.pem"), ("a.pem", None))
