"""
Verification keys: JWKS documents, PEM public keys and shared secrets, each
pinned to exactly one algorithm.

A key is pinned when it is loaded (from its C{alg}, its curve, or the one
algorithm of its family the operator allows), never from a token: a token
naming C{HS256} can only be checked against shared secrets pinned to
C{HS256}, so an RSA public key can never be misused as an HMAC secret
(algorithm confusion). Nothing here does I/O beyond reading the files the
operator configured; fetching a JWKS over HTTP lives in
L{gatelayer.auth.fetch}.
"""

import json

from attrs import frozen
from jwt.algorithms import get_default_algorithms
from jwt.api_jwk import PyJWK
from jwt.exceptions import PyJWTError

# The algorithm names are shared with the config parser, which must not
# import this module (it loads key material).
from gatelayer.auth.names import ALGORITHMS, EC_ALGORITHMS, HMAC_ALGORITHMS, OKP_ALGORITHMS, RSA_ALGORITHMS

_EC_CURVES = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_FAMILIES = {"oct": HMAC_ALGORITHMS, "RSA": RSA_ALGORITHMS, "EC": EC_ALGORITHMS, "OKP": OKP_ALGORITHMS}

MAX_KEYS = 100
"""The most keys one JWKS document may hold; more is refused as a whole."""

MAX_KID_LENGTH = 256
"""A longer C{kid} in a token is not looked up at all."""

_IMPLEMENTATIONS = {name: impl for name, impl in get_default_algorithms().items() if name in ALGORITHMS}


class KeyLoadError(ValueError):
    """
    A key file or JWKS document cannot be used; the message says why and
    which key.
    """


@frozen
class VerificationKey:
    """
    One key that may verify token signatures, for one algorithm only.

    @ivar algorithm: the single algorithm this key verifies (e.g. C{RS256}).
    @ivar key: the prepared key object (a C{cryptography} public key, or the
        secret bytes of an HMAC key).
    @ivar kid: the key id tokens name it by, or L{None} (PEM files, secrets).
    @ivar source: where the key came from, for logs and error messages.
    """

    algorithm: str
    key: object
    kid: str = None
    source: str = ""

    def verify(self, signing_input, signature):
        """
        Whether C{signature} over C{signing_input} was made with this key.
        Malformed signatures are just a mismatch, never an exception.
        """
        try:
            return bool(_IMPLEMENTATIONS[self.algorithm].verify(signing_input, self.key, signature))
        except Exception:
            return False


class KeySet:
    """
    An immutable collection of L{VerificationKey}s with the lookup a token
    verifier needs.
    """

    def __init__(self, keys=()):
        self.keys = tuple(keys)
        self._by_kid = {}
        self._unnamed = {}
        self._by_algorithm = {}
        for key in self.keys:
            self._by_algorithm.setdefault(key.algorithm, []).append(key)
            if key.kid is None:
                self._unnamed.setdefault(key.algorithm, []).append(key)
            else:
                self._by_kid.setdefault((key.kid, key.algorithm), []).append(key)

    def __len__(self):
        return len(self.keys)

    def __iter__(self):
        return iter(self.keys)

    def __repr__(self):
        return f"<KeySet of {len(self.keys)} keys>"

    @property
    def kids(self):
        """
        The key ids in this set.
        """
        return frozenset(key.kid for key in self.keys if key.kid is not None)

    def candidates(self, algorithm, kid=None):
        """
        The keys that may have signed a token with header C{alg=algorithm}
        and C{kid}: keys of that algorithm with that id, else keys of that
        algorithm without an id; every key of the algorithm when the token
        names none. Only keys pinned to C{algorithm} are ever returned.
        """
        if kid is None:
            return tuple(self._by_algorithm.get(algorithm, ()))
        named = self._by_kid.get((kid, algorithm))
        if named:
            return tuple(named)
        return tuple(self._unnamed.get(algorithm, ()))

    def merged(self, other):
        """
        A new set with the keys of both.
        """
        return KeySet(self.keys + tuple(other))


def pin_algorithm(family, curve, declared, allowed):
    """
    The one algorithm a key of C{family} (a JWK C{kty}: RSA, EC, OKP, oct)
    verifies.

    @param curve: the EC or OKP curve name, if any.
    @param declared: the algorithm the key declares (its JWK C{alg}, or the
        one written after a PEM path), or L{None}.
    @param allowed: the algorithms the filter accepts.
    @raise KeyLoadError: when the algorithm is unknown, not allowed, does
        not fit the key, or cannot be told without a declaration.
    """
    family_algorithms = _FAMILIES.get(family)
    if family_algorithms is None:
        raise KeyLoadError(f"has key type {family!r}, which is not RSA, EC, OKP or oct")
    if declared is not None:
        if declared not in ALGORITHMS:
            raise KeyLoadError(f"declares algorithm {declared!r}, which is not supported")
        if declared not in family_algorithms:
            raise KeyLoadError(f"is an {family} key but declares algorithm {declared}")
        if family == "EC" and curve is not None and _EC_CURVES.get(curve) != declared:
            raise KeyLoadError(f"is a {curve} key but declares algorithm {declared}")
        if declared not in allowed:
            raise KeyLoadError(f"is pinned to {declared}, which algorithms does not allow")
        return declared
    if family == "EC":
        algorithm = _EC_CURVES.get(curve)
        if algorithm is None:
            raise KeyLoadError(f"has curve {curve!r}, which is not P-256, P-384 or P-521")
        if algorithm not in allowed:
            raise KeyLoadError(f"is a {curve} key, pinned to {algorithm}, which algorithms does not allow")
        return algorithm
    if family == "OKP":
        if curve not in ("Ed25519", "Ed448"):
            raise KeyLoadError(f"has curve {curve!r}, which is not Ed25519 or Ed448")
        if "EdDSA" not in allowed:
            raise KeyLoadError("is an EdDSA key, which algorithms does not allow")
        return "EdDSA"
    usable = [a for a in family_algorithms if a in allowed]
    if not usable:
        raise KeyLoadError(
            f"is an {family} key but algorithms allows none of " + ", ".join(family_algorithms))
    if len(usable) > 1:
        raise KeyLoadError(
            f"is an {family} key and algorithms allows several for it ({', '.join(usable)}): "
            "name the key's algorithm (JWK 'alg', or the algorithm after the file name)")
    return usable[0]


def _prepared(algorithm, key):
    """
    Check that C{key} fits C{algorithm} (type, curve, strength) and return the
    prepared key.
    """
    implementation = _IMPLEMENTATIONS[algorithm]
    try:
        prepared = implementation.prepare_key(key)
    except (PyJWTError, TypeError, ValueError) as e:
        raise KeyLoadError(f"does not fit {algorithm}: {e}") from None
    weakness = implementation.check_key_length(prepared)
    if weakness is not None:
        raise KeyLoadError(f"is too weak for {algorithm}: {weakness}")
    return prepared


def key_from_jwk(jwk, allowed, source, allow_secrets=True):
    """
    Build the L{VerificationKey} of one JWK (a dict), or L{None} when the
    key is published for something other than signatures (C{use=enc}).

    @param allow_secrets: whether C{oct} (shared secret) keys are acceptable;
        never for keys fetched over the network.
    @raise KeyLoadError: when the key cannot be used.
    """
    if not isinstance(jwk, dict):
        raise KeyLoadError(f"{source}: is not a JSON object")
    use = jwk.get("use")
    if use is not None and use != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH):
        raise KeyLoadError(f"{source}: has a kid that is not a short string")
    if kid is not None:
        source = f"{source} (kid {kid!r})"
    family = jwk.get("kty")
    if family == "oct" and not allow_secrets:
        raise KeyLoadError(f"{source}: is a shared secret, which is never taken from a JWKS URL")
    if family in ("RSA", "EC", "OKP") and "d" in jwk:
        raise KeyLoadError(f"{source}: holds private key material; publish public keys only")
    declared = jwk.get("alg")
    if declared is not None and not isinstance(declared, str):
        raise KeyLoadError(f"{source}: has an alg that is not a string")
    try:
        algorithm = pin_algorithm(family, jwk.get("crv"), declared, allowed)
    except KeyLoadError as e:
        raise KeyLoadError(f"{source}: {e}") from None
    try:
        built = PyJWK(jwk, algorithm=algorithm).key
    except (PyJWTError, TypeError, ValueError, KeyError) as e:
        raise KeyLoadError(f"{source}: is not a valid {family} key ({e})") from None
    try:
        prepared = _prepared(algorithm, built)
    except KeyLoadError as e:
        raise KeyLoadError(f"{source}: {e}") from None
    return VerificationKey(algorithm=algorithm, key=prepared, kid=kid, source=source)


def parse_jwks(data, allowed, source, allow_secrets=True, strict=True):
    """
    Parse a JWKS document (C{{"keys": [...]}}) into a L{KeySet}.

    @param data: the document, bytes or text.
    @param strict: raise on the first unusable key (a file the operator
        wrote); otherwise skip unusable keys and report them (a document
        fetched from an identity provider, which may publish key types or
        algorithms this filter does not allow).
    @return: C{(key_set, skipped)} where C{skipped} lists a message per key
        left out.
    @raise KeyLoadError: the document is not a JWKS, or (strict) a key is
        unusable, or no key at all is usable.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise KeyLoadError(f"{source}: is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyLoadError(f'{source}: is not a JWKS (a JSON object with a "keys" list)')
    entries = document["keys"]
    if len(entries) > MAX_KEYS:
        raise KeyLoadError(f"{source}: has {len(entries)} keys, more than the {MAX_KEYS} accepted")
    keys, skipped = [], []
    for index, entry in enumerate(entries):
        try:
            key = key_from_jwk(entry, allowed, f"{source} key {index + 1}", allow_secrets)
        except KeyLoadError as e:
            if strict:
                raise
            skipped.append(str(e))
            continue
        if key is not None:
            keys.append(key)
    if not keys:
        raise KeyLoadError(f"{source}: holds no key usable for verifying signatures")
    return KeySet(keys), skipped


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise KeyLoadError(f"{path}: cannot be read: {e.strerror}") from None


def load_key_file(path, allowed, algorithm=None):
    """
    Load a C{keys} file: a JWKS document (C{.json}, or anything starting
    with C{{}) or a PEM public key or certificate.

    @param algorithm: the algorithm written after the path, if any (PEM only).
    @raise KeyLoadError: naming the file and what is wrong with it.
    """
    data = _read(path)
    if data.lstrip().startswith(b"{"):
        if algorithm is not None:
            raise KeyLoadError(f"{path}: is a JWKS; its keys name their own algorithm (alg)")
        return parse_jwks(data, allowed, path)[0]
    return KeySet([_pem_key(path, data, allowed, algorithm)])


def _pem_key(path, data, allowed, declared):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if b"PRIVATE KEY-----" in data:
        raise KeyLoadError(f"{path}: is a private key; configure the public key only")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            public = x509.load_pem_x509_certificate(data).public_key()
        else:
            public = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyLoadError(f"{path}: is neither a JWKS nor a PEM public key or certificate") from None
    curve = None
    if isinstance(public, rsa.RSAPublicKey):
        family = "RSA"
    elif isinstance(public, ec.EllipticCurvePublicKey):
        family = "EC"
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(
            public.curve.name, public.curve.name)
    elif isinstance(public, ed25519.Ed25519PublicKey):
        family, curve = "OKP", "Ed25519"
    elif isinstance(public, ed448.Ed448PublicKey):
        family, curve = "OKP", "Ed448"
    else:
        raise KeyLoadError(f"{path}: holds a key type tokens are not signed with")
    try:
        algorithm = pin_algorithm(family, curve, declared, allowed)
        prepared = _prepared(algorithm, public)
    except KeyLoadError as e:
        raise KeyLoadError(f"{path}: {e}") from None
    return VerificationKey(algorithm=algorithm, key=prepared, kid=None, source=path)


def load_secret_file(path, allowed, algorithm=None):
    """
    Load a shared secret for HS256/384/512 from C{path}: the file's bytes,
    without a trailing line break.

    @raise KeyLoadError: unreadable, empty, too short for its algorithm, or
        its algorithm cannot be told.
    """
    secret = _read(path).rstrip(b"\r\n")
    if not secret:
        raise KeyLoadError(f"{path}: is empty")
    try:
        pinned = pin_algorithm("oct", None, algorithm, allowed)
        prepared = _prepared(pinned, secret)
    except KeyLoadError as e:
        raise KeyLoadError(f"{path}: {e}") from None
    return KeySet([VerificationKey(algorithm=pinned, key=prepared, kid=None, source=path)])
