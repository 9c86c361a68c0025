"""
API keys: an INI file mapping consumer names to the SHA-256 of their keys.

Plain keys are never stored: C{apikeys.ini} holds C{alice = <sha256 hex>}, so
the file can be read by more people than the keys themselves. A request's
key is hashed once and looked up; the lookup is by digest, so its timing
tells a client nothing about other consumers' keys.
"""

import configparser
import hashlib
import re
import secrets

CONSUMER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")
"""What a consumer may be called: it goes upstream in the X-Consumer header."""

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}\Z")

KEY_PREFIX = "glk_"
"""Generated keys start with this, so a leaked one is easy to recognise."""

MAX_KEY_LENGTH = 1024
"""A longer key sent by a client is refused without hashing it."""


class ApiKeysError(ValueError):
    """
    An API key file cannot be used.

    @ivar problems: one message per problem, each naming the file and entry.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def hash_key(key):
    """
    The lowercase SHA-256 hex digest of C{key} (text or bytes), as written
    in C{apikeys.ini}.
    """
    if isinstance(key, str):
        key = key.encode("utf-8")
    return hashlib.sha256(key).hexdigest()


def new_key():
    """
    A new random API key (256 bits, URL-safe).
    """
    return KEY_PREFIX + secrets.token_urlsafe(32)


def config_line(consumer, key):
    """
    The C{[consumers]} line for C{consumer} holding C{key}.

    @raise ValueError: C{consumer} is not a valid consumer name.
    """
    if not CONSUMER_NAME.match(consumer):
        raise ValueError(f"{consumer!r} is not a consumer name (letters, digits and . _ @ + -)")
    return f"{consumer} = {hash_key(key)}"


class ApiKeyStore:
    """
    The consumers of one API key file, looked up by key.
    """

    def __init__(self, digests, source=""):
        """
        @param digests: a mapping of lowercase hex SHA-256 digest to
            consumer name.
        @param source: where they came from, for logs.
        """
        self._digests = {bytes.fromhex(digest): name for digest, name in digests.items()}
        self.source = source

    def __len__(self):
        return len(self._digests)

    def __repr__(self):
        return f"<ApiKeyStore of {len(self._digests)} consumers from {self.source!r}>"

    @property
    def consumers(self):
        """
        The consumer names, sorted.
        """
        return sorted(self._digests.values())

    def consumer_for(self, key):
        """
        The consumer whose key is C{key} (bytes), or L{None}.
        """
        if not key or len(key) > MAX_KEY_LENGTH:
            return None
        return self._digests.get(hashlib.sha256(key).digest())


def parse_apikeys(text, source):
    """
    Parse the text of an API key file into an L{ApiKeyStore}.

    @raise ApiKeysError: listing every problem found.
    """
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), strict=True,
        default_section="\0no-defaults",
    )
    parser.optionxform = str
    try:
        parser.read_string(text, source=source)
    except configparser.MissingSectionHeaderError as e:
        raise ApiKeysError([f"{source}: line {e.lineno} comes before the [consumers] section header"]) from None
    except configparser.Error as e:
        raise ApiKeysError([f"{source}: {e}".replace("\n", " ")]) from None
    problems = []
    for section in parser.sections():
        if section != "consumers":
            problems.append(f"{source} [{section}]: is not a known section (only [consumers])")
    if not parser.has_section("consumers"):
        raise ApiKeysError(problems + [f"{source}: has no [consumers] section"])
    digests = {}
    for name, value in parser.items("consumers"):
        where = f"{source} [consumers] {name}"
        value = (value or "").strip()
        if not CONSUMER_NAME.match(name):
            problems.append(f"{where}: is not a consumer name (letters, digits and . _ @ + -)")
            continue
        if not _HEX_DIGEST.match(value):
            problems.append(
                f"{where}: is not a SHA-256 hex digest (64 hex digits; "
                "gatelayer-apikey prints the line for a new key)")
            continue
        digest = value.lower()
        if digest in digests:
            problems.append(f"{where}: has the same key as {digests[digest]}")
            continue
        digests[digest] = name
    if not digests and not problems:
        problems.append(f"{source} [consumers]: lists no consumer")
    if problems:
        raise ApiKeysError(problems)
    return ApiKeyStore(digests, source)


def load_apikeys(path):
    """
    Read and parse the API key file at C{path}.

    @raise ApiKeysError: the file cannot be read or has problems.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ApiKeysError([f"{path}: cannot be read: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ApiKeysError([f"{path}: is not UTF-8 text"]) from None
    return parse_apikeys(text, path)
