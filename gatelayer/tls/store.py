"""
Loading and validating the certificates of a C{[tls:NAME]} section.

Every file holds one server certificate, its chain and its private key, in
PEM. A whole section is read and checked at once (each PEM parses, each key
matches its certificate, each certificate is valid right now) and becomes an
immutable L{CertificateSet}; a single bad file rejects the whole set, so a
reload either replaces everything or nothing.

The master reads the files; workers get the master's validated bytes over the
control channel (L{CertificateSet.to_wire} / L{CertificateSet.from_wire}) and
never read certificate files themselves, so all workers serve exactly what
the master checked.

It is a little over the house's module size on purpose: reading, checking and
the wire form of one set are one unit, and a split would put the check of a
file and the check of the set it belongs to in two places.
"""

import datetime
import json
import os
import re

import attrs
from attrs import frozen
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

__all__ = [
    "CertificateError",
    "CertificateEntry",
    "CertificateSet",
    "load_certificate_set",
    "read_pem_bundle",
    "pem_blocks",
    "certificate_names",
    "certificate_files",
    "CERTIFICATE_SUFFIXES",
]

#: Files of a certificate directory that are read; anything else (keys kept
#: aside, READMEs, editors' and rotation tools' temporary files) is ignored.
CERTIFICATE_SUFFIXES = (".pem", ".crt")

_BLOCK_START = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
_IGNORED_LABELS = {b"EC PARAMETERS", b"DH PARAMETERS"}


class CertificateError(Exception):
    """
    One or more certificate files are unusable.

    @ivar problems: every C{(file, reason)} found, in reading order.
    @ivar section: the gate.ini section they belong to (C{"tls:main"},
        C{"upstream:users"}), or L{None}.
    @ivar key: the key of that section naming the files, or L{None}.
    @ivar path: the first bad file.
    @ivar reason: why the first bad file was rejected.
    """

    def __init__(self, problems, section=None, key=None):
        self.problems = list(problems)
        self.section = section
        self.key = key
        self.path, self.reason = self.problems[0]
        prefix = f"[{section}] " if section else ""
        if key:
            prefix += f"{key} "
        super().__init__("; ".join(f"{prefix}{path}: {reason}" for path, reason in self.problems))


class _Problem(Exception):
    """
    Internal: the reason one file is rejected.
    """


@frozen(eq=False)
class CertificateEntry:
    """
    One validated certificate file: the server certificate, its chain, its
    key, and the SNI names it answers for.

    @ivar path: the file it came from.
    @ivar pem: the file's bytes, as validated (what workers receive).
    @ivar certificate: the server certificate (C{cryptography}).
    @ivar chain: the certificates after it in the file, in order.
    @ivar key: its private key.
    @ivar names: lower-case DNS names from subjectAltName (the common name
        when the certificate has no DNS names); wildcards as C{*.example.com}.
    @ivar default: whether it is served when no name matches.
    """

    path: str
    pem: bytes
    certificate: object
    chain: tuple
    key: object
    names: tuple
    default: bool = False

    @property
    def not_before(self):
        """
        Start of validity, an aware UTC datetime.
        """
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self):
        """
        End of validity, an aware UTC datetime.
        """
        return self.certificate.not_valid_after_utc

    @property
    def fingerprint(self):
        """
        Hex SHA-256 of the certificate (what C{openssl x509 -fingerprint
        -sha256} prints, without colons).
        """
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    def describe(self):
        """
        A JSON-ready summary for the admin C{/status} page.
        """
        return {
            "file": self.path,
            "names": list(self.names),
            "subject": self.certificate.subject.rfc4514_string(),
            "issuer": self.certificate.issuer.rfc4514_string(),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "sha256": self.fingerprint,
            "default": self.default,
        }


def _split_pem(data):
    """
    The C{(label, block)} PEM blocks of C{data}; text between blocks is
    ignored. A block without its END line is a truncated file.
    """
    blocks = []
    position = 0
    while True:
        start = _BLOCK_START.search(data, position)
        if start is None:
            return blocks
        label = start.group(1)
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, start.end())
        next_start = _BLOCK_START.search(data, start.end())
        if end < 0 or (next_start is not None and next_start.start() < end):
            line = data.count(b"\n", 0, start.start()) + 1
            raise _Problem(
                f"truncated PEM: the {label.decode()} block starting on line {line} has no END line "
                "(was the file still being written?)")
        blocks.append((label, data[start.start():end + len(end_marker)]))
        position = end + len(end_marker)


def pem_blocks(data):
    """
    The C{(label, block)} PEM blocks of C{data} (bytes), labels as bytes
    (C{b"CERTIFICATE"}); text between blocks is ignored.

    @raise ValueError: when a block has no END line (a truncated file).
    """
    try:
        return _split_pem(data)
    except _Problem as e:
        raise ValueError(str(e)) from None


def read_pem_bundle(data):
    """
    Parse a certificate bundle: certificates (server first, then its chain)
    and exactly one unencrypted private key, in any order.

    @return: C{(certificates, key)}.
    @raise ValueError: with the reason (no file name: callers add it).
    """
    try:
        return _read_bundle(data)
    except _Problem as e:
        raise ValueError(str(e)) from None


def _read_bundle(data):
    if not data.strip():
        raise _Problem("is empty")
    certificates, keys = [], []
    for label, block in _split_pem(data):
        if label == b"CERTIFICATE":
            try:
                certificates.append(x509.load_pem_x509_certificate(block))
            except ValueError as e:
                raise _Problem(f"certificate #{len(certificates) + 1} does not parse ({e})") from None
        elif label in _KEY_LABELS:
            try:
                keys.append(serialization.load_pem_private_key(block, password=None))
            except TypeError:
                raise _Problem("the private key is encrypted; gatelayer needs it unencrypted") from None
            except (ValueError, UnsupportedAlgorithm) as e:
                raise _Problem(f"the private key does not parse ({e})") from None
        elif label == b"ENCRYPTED PRIVATE KEY":
            raise _Problem("the private key is encrypted; gatelayer needs it unencrypted")
        elif label not in _IGNORED_LABELS:
            raise _Problem(f"holds an unexpected PEM block {label.decode()!r}")
    if not certificates and not keys:
        raise _Problem("holds no PEM certificate or key")
    if not certificates:
        raise _Problem("holds no certificate (each file needs the certificate, its chain and its key)")
    if not keys:
        raise _Problem("holds no private key (each file needs the certificate, its chain and its key)")
    if len(keys) > 1:
        raise _Problem(f"holds {len(keys)} private keys; one file is one certificate with its key")
    key = keys[0]
    _check_key(certificates, key)
    return certificates, key


def _public_der(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_key(certificates, key):
    wanted = _public_der(key.public_key())
    if _public_der(certificates[0].public_key()) == wanted:
        return
    for index, other in enumerate(certificates[1:], 2):
        if _public_der(other.public_key()) == wanted:
            raise _Problem(
                f"the private key belongs to certificate #{index}, not the first one; "
                "put the server certificate first, then its chain")
    raise _Problem("the private key does not match the certificate")


def _check_time(certificate, now):
    if now < certificate.not_valid_before_utc:
        raise _Problem(f"the certificate is not valid before {certificate.not_valid_before_utc.isoformat()}")
    if now > certificate.not_valid_after_utc:
        raise _Problem(f"the certificate expired on {certificate.not_valid_after_utc.isoformat()}")


def _usable_name(name):
    # Only a whole leftmost wildcard label is honoured ("*.example.com");
    # partial wildcards ("w*.example.com") are not matched, as browsers do.
    name = name.strip().rstrip(".").lower()
    if not name:
        return None
    if "*" in name:
        if not name.startswith("*.") or "*" in name[2:] or not name[2:]:
            return None
    return name


def certificate_names(certificate):
    """
    The SNI names C{certificate} answers for: its subjectAltName DNS
    entries, or its common name when it has none, lower-cased, in order,
    without duplicates.
    """
    try:
        alt = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        raw = alt.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        raw = []
    if not raw:
        raw = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
               if isinstance(a.value, str)]
    names = []
    for name in raw:
        usable = _usable_name(name)
        if usable is not None and usable not in names:
            names.append(usable)
    return tuple(names)


def _entry(path, data, now, default):
    certificates, key = _read_bundle(data)
    if now is not None:
        _check_time(certificates[0], now)
    return CertificateEntry(
        path=path, pem=data, certificate=certificates[0], chain=tuple(certificates[1:]), key=key,
        names=certificate_names(certificates[0]), default=default)


def certificate_files(path):
    """
    The files a C{certificates} entry stands for: the file itself, or the
    C{*.pem} and C{*.crt} files of a directory (not hidden ones), sorted.

    @raise CertificateError: for a missing path or a directory with no such
        file.
    """
    if os.path.isdir(path):
        names = sorted(
            n for n in os.listdir(path)
            if not n.startswith(".") and n.endswith(CERTIFICATE_SUFFIXES)
            and not os.path.isdir(os.path.join(path, n)))
        if not names:
            raise CertificateError([(path, "directory holds no *.pem or *.crt file")])
        return [os.path.join(path, n) for n in names]
    if not os.path.exists(path):
        raise CertificateError([(path, "does not exist")])
    return [path]


def _as_utc(now):
    if now is None:
        return datetime.datetime.now(datetime.timezone.utc)
    if now.tzinfo is None:
        return now.replace(tzinfo=datetime.timezone.utc)
    return now


class CertificateSet:
    """
    The validated certificates of one C{[tls:NAME]} section and the SNI
    lookup over them. Immutable: a reload builds a new one.

    @ivar name: the section's name.
    @ivar entries: the L{CertificateEntry}s in reading order.
    @ivar default: the entry served when no name matches (C{default} of the
        section, else the first entry).
    """

    def __init__(self, name, entries):
        self.name = name
        entries = list(entries)
        if not entries:
            raise CertificateError([("certificates", "no certificate loaded")], f"tls:{name}")
        if not any(e.default for e in entries):
            entries[0] = attrs.evolve(entries[0], default=True)
        self.entries = tuple(entries)
        self.default = [e for e in self.entries if e.default][0]
        self._exact = {}
        self._wildcard = {}
        for entry in self.entries:
            for name_ in entry.names:
                if name_.startswith("*."):
                    table, key = self._wildcard, name_[2:]
                else:
                    table, key = self._exact, name_
                current = table.get(key)
                # Two certificates for one name (an overlap during a
                # rotation): the one valid longer wins, so the newer
                # certificate is served as soon as it is in place.
                if current is None or entry.not_after > current.not_after:
                    table[key] = entry

    def match(self, server_name):
        """
        The entry for C{server_name} (str or bytes, as the client sent it):
        an exact name first, then a wildcard covering exactly one more label;
        L{None} when nothing matches (the caller decides on the default).
        """
        if not server_name:
            return None
        if isinstance(server_name, bytes):
            try:
                server_name = server_name.decode("ascii")
            except UnicodeDecodeError:
                return None
        server_name = server_name.rstrip(".").lower()
        entry = self._exact.get(server_name)
        if entry is not None:
            return entry
        label, dot, rest = server_name.partition(".")
        if label and dot and rest:
            return self._wildcard.get(rest)
        return None

    def names(self):
        """
        Every name served, exact and wildcard, sorted.
        """
        return sorted(set(self._exact) | {"*." + w for w in self._wildcard})

    def describe(self):
        """
        One JSON-ready summary per certificate (file, names, validity,
        fingerprint, default), for the admin C{/status} page.
        """
        return [entry.describe() for entry in self.entries]

    def to_wire(self):
        """
        The set as a list of byte strings for the control channel: per file,
        a one-line JSON header (file name, default flag) and the file's PEM.
        """
        return [
            json.dumps({"file": e.path, "default": e.default}).encode("utf-8") + b"\n" + e.pem
            for e in self.entries
        ]

    @classmethod
    def from_wire(cls, spec, blobs):
        """
        Rebuild a set sent with L{to_wire}, for the section C{spec}. The PEM
        is parsed and keys are checked again (a corrupted transfer must not
        be served), but validity dates are not: the master already decided.

        @raise CertificateError: when a blob is malformed.
        """
        entries, problems = [], []
        for index, blob in enumerate(blobs):
            header, _, pem = blob.partition(b"\n")
            try:
                meta = json.loads(header)
                path, default = meta["file"], bool(meta["default"])
            except (ValueError, KeyError, TypeError):
                problems.append((f"certificate #{index + 1} received", "has no valid header"))
                continue
            try:
                entries.append(_entry(path, pem, None, default))
            except _Problem as e:
                problems.append((path, str(e)))
        if problems:
            raise CertificateError(problems, f"tls:{spec.name}")
        return cls(spec.name, entries)


def load_certificate_set(spec, now=None):
    """
    Read and validate every certificate file of the section C{spec} (a
    L{gatelayer.config.model.TlsSpec}) and its C{default}.

    Every file is checked and every problem reported together, so an
    operator fixes a rotation in one go.

    @param now: the time validity is checked against (default: now, UTC).
    @raise CertificateError: naming each bad file and why; nothing is
        returned unless all files are good.
    """
    now = _as_utc(now)
    problems = []
    paths = []
    for item in spec.certificates:
        try:
            paths.extend(certificate_files(item))
        except CertificateError as e:
            problems.extend(e.problems)
    default_real = os.path.realpath(spec.default) if spec.default else None
    if spec.default is not None:
        if not os.path.isfile(spec.default):
            problems.append((spec.default, "does not exist (the default certificate)"))
        elif default_real not in {os.path.realpath(p) for p in paths}:
            paths.append(spec.default)
    entries, seen = [], set()
    for path in paths:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            problems.append((path, f"cannot be read ({e.strerror or e})"))
            continue
        try:
            entries.append(_entry(path, data, now, real == default_real))
        except _Problem as e:
            problems.append((path, str(e)))
    if problems:
        raise CertificateError(problems, f"tls:{spec.name}")
    return CertificateSet(spec.name, entries)
