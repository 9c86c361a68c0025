"""
Tests for L{gatelayer.tls.store}: reading, validating and indexing the
certificates of a C{[tls:NAME]} section.
"""

import datetime
import os

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.model import TlsSpec
from gatelayer.testing.certs import CertificateAuthority, write_pem
from gatelayer.tls.store import (
    CertificateError,
    CertificateSet,
    certificate_names,
    load_certificate_set,
    pem_blocks,
    read_pem_bundle,
)

_CA = CertificateAuthority()


def _spec(certificates, default=None, name="main"):
    return TlsSpec(name=name, certificates=tuple(certificates), default=default)


class LoadTests(SynchronousTestCase):
    """
    L{load_certificate_set} reads files and directories and indexes names.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def write(self, name, issued, **kw):
        return issued.write(os.path.join(self.dir, name), **kw)

    def test_directory(self):
        """
        Every C{*.pem} and C{*.crt} file of a directory is loaded, in name
        order; other files and hidden files are ignored.
        """
        self.write("b.pem", _CA.issue(["b.example.com"]))
        self.write("a.crt", _CA.issue(["a.example.com"]))
        write_pem(os.path.join(self.dir, "notes.txt"), b"not a certificate")
        write_pem(os.path.join(self.dir, ".c.pem.tmp"), b"half")
        write_pem(os.path.join(self.dir, ".hidden.pem"), b"half")
        certificate_set = load_certificate_set(_spec([self.dir]))
        self.assertEqual(
            [os.path.basename(e.path) for e in certificate_set.entries], ["a.crt", "b.pem"])
        self.assertEqual(certificate_set.names(), ["a.example.com", "b.example.com"])

    def test_files_and_default(self):
        """
        A list of files is loaded in order; C{default} is marked as the
        default, and is loaded once even when it is also in the list.
        """
        a = self.write("a.pem", _CA.issue(["a.example.com"]))
        b = self.write("b.pem", _CA.issue(["b.example.com"]))
        certificate_set = load_certificate_set(_spec([a, b], default=b))
        self.assertEqual([e.path for e in certificate_set.entries], [a, b])
        self.assertEqual(certificate_set.default.path, b)
        self.assertEqual([e.default for e in certificate_set.entries], [False, True])

    def test_default_outside_list(self):
        """
        A C{default} file outside C{certificates} is loaded too.
        """
        a = self.write("a.pem", _CA.issue(["a.example.com"]))
        other = self.mktemp()
        d = _CA.issue(["fallback.test"]).write(os.path.join(other, "default.pem"))
        certificate_set = load_certificate_set(_spec([a], default=d))
        self.assertEqual(certificate_set.default.path, d)
        self.assertEqual(certificate_set.match("fallback.test").path, d)

    def test_first_is_default_without_setting(self):
        """
        Without C{default}, the first certificate read is the default.
        """
        self.write("z.pem", _CA.issue(["z.example.com"]))
        self.write("m.pem", _CA.issue(["m.example.com"]))
        certificate_set = load_certificate_set(_spec([self.dir]))
        self.assertEqual(os.path.basename(certificate_set.default.path), "m.pem")

    def test_chain_kept(self):
        """
        Certificates after the first in a file are its chain.
        """
        intermediate = _CA.intermediate()
        path = self.write("a.pem", intermediate.issue(["a.example.com"]))
        entry = load_certificate_set(_spec([path])).entries[0]
        self.assertEqual(entry.chain, (intermediate.certificate,))

    def test_key_first_accepted(self):
        """
        The key may come before the certificates in the file.
        """
        issued = _CA.issue(["a.example.com"])
        path = write_pem(os.path.join(self.dir, "a.pem"), issued.key_pem() + issued.cert_pem())
        entry = load_certificate_set(_spec([path])).entries[0]
        self.assertEqual(entry.names, ("a.example.com",))

    def test_rsa_and_ed25519(self):
        """
        RSA and Ed25519 keys load as well as EC ones.
        """
        self.write("r.pem", _CA.issue(["r.example.com"], key_type="rsa"))
        self.write("e.pem", _CA.issue(["e.example.com"], key_type="ed25519"))
        self.assertEqual(len(load_certificate_set(_spec([self.dir])).entries), 2)

    def test_legacy_key_format(self):
        """
        A traditional C{EC PRIVATE KEY} block (what C{openssl ecparam
        -genkey} writes, parameters block included) is accepted.
        """
        issued = _CA.issue(["a.example.com"])
        legacy = issued.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())
        params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
        path = write_pem(os.path.join(self.dir, "a.pem"), issued.cert_pem() + params + legacy)
        self.assertEqual(load_certificate_set(_spec([path])).entries[0].names, ("a.example.com",))

    def test_describe(self):
        """
        C{describe} gives each certificate's file, names, dates, fingerprint
        and default flag, JSON-ready.
        """
        issued = _CA.issue(["a.example.com", "www.a.example.com"])
        path = self.write("a.pem", issued)
        [summary] = load_certificate_set(_spec([path])).describe()
        self.assertEqual(summary["file"], path)
        self.assertEqual(summary["names"], ["a.example.com", "www.a.example.com"])
        self.assertEqual(summary["not_after"], issued.certificate.not_valid_after_utc.isoformat())
        self.assertEqual(summary["sha256"], issued.fingerprint().hex())
        self.assertTrue(summary["default"])
        self.assertIn("CN=a.example.com", summary["subject"])

    def test_now_decides_validity(self):
        """
        Validity is checked against the C{now} given: a certificate valid
        today is rejected when checked against a date after its end.
        """
        issued = _CA.issue(["a.example.com"], days=10)
        path = self.write("a.pem", issued)
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=11)
        self.assertRaises(CertificateError, load_certificate_set, _spec([path]), later)
        naive_now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        load_certificate_set(_spec([path]), naive_now)


class RejectionTests(SynchronousTestCase):
    """
    Every kind of bad input is refused with the file and the reason named.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.good = _CA.issue(["good.example.com"]).write(os.path.join(self.dir, "good.pem"))

    def assertRejected(self, path, reason_part, spec=None):
        spec = spec or _spec([self.dir])
        error = self.assertRaises(CertificateError, load_certificate_set, spec)
        self.assertEqual(error.path, path)
        self.assertIn(reason_part, error.reason)
        self.assertIn(path, str(error))
        self.assertIn("[tls:main]", str(error))
        return error

    def bad(self, data, name="bad.pem"):
        return write_pem(os.path.join(self.dir, name), data)

    def test_truncated(self):
        """
        A file cut inside a PEM block is reported as truncated, with the
        block's line.
        """
        issued = _CA.issue(["bad.example.com"])
        path = self.bad(issued.cert_pem()[:200])
        self.assertRejected(path, "truncated PEM: the CERTIFICATE block starting on line 1")

    def test_half_written(self):
        """
        A file caught half-written (certificate complete, key cut) is
        refused.
        """
        path = self.bad(_CA.issue(["bad.example.com"]).truncated_pem(0.8))
        self.assertRejected(path, "truncated PEM")

    def test_key_missing(self):
        """
        A file with the certificate but no key is refused.
        """
        path = self.bad(_CA.issue(["bad.example.com"]).cert_pem())
        self.assertRejected(path, "holds no private key")

    def test_certificate_missing(self):
        """
        A file with only a key is refused.
        """
        path = self.bad(_CA.issue(["bad.example.com"]).key_pem())
        self.assertRejected(path, "holds no certificate")

    def test_empty_file(self):
        """
        An empty file is refused.
        """
        path = self.bad(b"")
        self.assertRejected(path, "is empty")

    def test_garbage(self):
        """
        A file without PEM blocks is refused.
        """
        path = self.bad(b"hello\n")
        self.assertRejected(path, "holds no PEM certificate or key")

    def test_corrupt_base64(self):
        """
        A complete block whose content does not parse is refused.
        """
        issued = _CA.issue(["bad.example.com"])
        pem = issued.cert_pem().replace(b"M", b"A", 5) + issued.key_pem()
        path = self.bad(pem)
        self.assertRejected(path, "certificate #1 does not parse")

    def test_key_not_matching(self):
        """
        A key that belongs to another certificate is refused.
        """
        one, two = _CA.issue(["one.example.com"]), _CA.issue(["two.example.com"])
        path = self.bad(one.cert_pem() + two.key_pem())
        self.assertRejected(path, "the private key does not match the certificate")

    def test_chain_before_leaf(self):
        """
        A key matching a later certificate of the file gets advice on order.
        """
        intermediate = _CA.intermediate()
        issued = intermediate.issue(["bad.example.com"])
        path = self.bad(issued.chain_pem() + issued.cert_pem() + issued.key_pem())
        self.assertRejected(path, "belongs to certificate #2")

    def test_two_keys(self):
        """
        Two keys in one file are refused.
        """
        issued = _CA.issue(["bad.example.com"])
        path = self.bad(issued.bundle_pem() + issued.key_pem())
        self.assertRejected(path, "holds 2 private keys")

    def test_encrypted_key(self):
        """
        An encrypted key is refused (workers could not use it unattended).
        """
        issued = _CA.issue(["bad.example.com"])
        encrypted = issued.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"))
        path = self.bad(issued.cert_pem() + encrypted)
        self.assertRejected(path, "encrypted")

    def test_unexpected_block(self):
        """
        A PEM block that does not belong in a certificate file is refused.
        """
        issued = _CA.issue(["bad.example.com"])
        csr = b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        path = self.bad(issued.bundle_pem() + csr)
        self.assertRejected(path, "unexpected PEM block 'CERTIFICATE REQUEST'")

    def test_expired(self):
        """
        An expired certificate is refused with its end date.
        """
        issued = _CA.expired(["bad.example.com"])
        path = self.bad(issued.bundle_pem())
        self.assertRejected(path, "expired on " + issued.certificate.not_valid_after_utc.isoformat())

    def test_not_yet_valid(self):
        """
        A certificate whose validity has not begun is refused.
        """
        issued = _CA.not_yet_valid(["bad.example.com"])
        path = self.bad(issued.bundle_pem())
        self.assertRejected(path, "not valid before")

    def test_missing_file(self):
        """
        A listed file that does not exist is refused.
        """
        path = os.path.join(self.dir, "gone.pem")
        self.assertRejected(path, "does not exist", _spec([self.good, path]))

    def test_missing_default(self):
        """
        A C{default} that does not exist is refused.
        """
        path = os.path.join(self.dir, "gone.pem")
        self.assertRejected(path, "does not exist (the default certificate)", _spec([self.good], default=path))

    def test_empty_directory(self):
        """
        A directory without certificate files is refused.
        """
        empty = self.mktemp()
        os.makedirs(empty)
        write_pem(os.path.join(empty, "README"), b"certificates go here")
        self.assertRejected(empty, "directory holds no *.pem or *.crt file", _spec([empty]))

    def test_dangling_link(self):
        """
        A certificate file that is a broken symbolic link (a rotation tool's
        link to a removed file) is reported, not skipped.
        """
        path = os.path.join(self.dir, "link.pem")
        os.symlink(os.path.join(self.dir, "removed.pem"), path)
        self.assertRejected(path, "cannot be read (No such file or directory)")

    def test_unreadable(self):
        """
        A file the gateway may not read is refused with the system's reason.
        """
        with open(self.good, "rb") as f:
            data = f.read()
        path = write_pem(os.path.join(self.dir, "locked.pem"), data, mode=0o000)
        self.addCleanup(os.chmod, path, 0o600)
        if os.access(path, os.R_OK):
            # Permissions do not stop the superuser; the dangling link test
            # covers the same path.
            os.chmod(path, 0o600)
            return
        self.assertRejected(path, "cannot be read")

    def test_all_problems_reported(self):
        """
        Every bad file is reported, not only the first.
        """
        first = self.bad(b"", "a.pem")
        second = self.bad(_CA.expired(["x.example.com"]).bundle_pem(), "b.pem")
        error = self.assertRaises(CertificateError, load_certificate_set, _spec([self.dir]))
        self.assertEqual([p for p, _ in error.problems], [first, second])
        self.assertIn(first, str(error))
        self.assertIn(second, str(error))


class NameTests(SynchronousTestCase):
    """
    SNI names come from the certificate, and lookups honour exact names,
    one-label wildcards and overlaps.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def load(self, *issued):
        for index, item in enumerate(issued):
            item.write(os.path.join(self.dir, f"{index:02d}.pem"))
        return load_certificate_set(_spec([self.dir]))

    def test_san_names(self):
        """
        Names are the subjectAltName DNS entries, lower-cased; the CN is not
        added when SANs exist; partial wildcards are left out.
        """
        issued = _CA.issue(["A.Example.com", "*.b.example.com", "w*.c.example.com"], common_name="cn.example.com",
                           ip_addresses=["127.0.0.1"])
        self.assertEqual(certificate_names(issued.certificate), ("a.example.com", "*.b.example.com"))

    def test_cn_fallback(self):
        """
        Without subjectAltName DNS entries the common name is the name.
        """
        issued = _CA.issue([], common_name="legacy.example.com")
        self.assertEqual(certificate_names(issued.certificate), ("legacy.example.com",))

    def test_file_name_irrelevant(self):
        """
        The file name plays no part in matching.
        """
        certificate_set = self.load(_CA.issue(["real.example.com"]))
        self.assertIsNone(certificate_set.match("00.pem"))
        self.assertIsNotNone(certificate_set.match("real.example.com"))

    def test_exact_beats_wildcard(self):
        """
        An exact name is preferred to a wildcard covering it, whatever the
        file order.
        """
        certificate_set = self.load(_CA.issue(["*.example.com"]), _CA.issue(["api.example.com"]))
        self.assertEqual(certificate_set.match("api.example.com").names, ("api.example.com",))
        self.assertEqual(certificate_set.match("www.example.com").names, ("*.example.com",))

    def test_wildcard_one_label(self):
        """
        C{*.example.com} covers one label: not the bare domain, not deeper
        names.
        """
        certificate_set = self.load(_CA.issue(["*.example.com"]))
        self.assertIsNotNone(certificate_set.match("a.example.com"))
        self.assertIsNone(certificate_set.match("example.com"))
        self.assertIsNone(certificate_set.match("a.b.example.com"))
        self.assertIsNone(certificate_set.match(".example.com"))

    def test_case_trailing_dot_bytes(self):
        """
        Matching ignores case and a trailing dot, and takes bytes as sent
        by clients.
        """
        certificate_set = self.load(_CA.issue(["api.example.com"]))
        self.assertIsNotNone(certificate_set.match(b"API.example.COM."))
        self.assertIsNone(certificate_set.match(b"\xff.example.com"))
        self.assertIsNone(certificate_set.match(None))
        self.assertIsNone(certificate_set.match(""))

    def test_overlap_longest_valid_wins(self):
        """
        When two certificates claim a name (a rotation in progress), the one
        valid longer is served.
        """
        old = _CA.issue(["api.example.com"], days=5)
        new = _CA.issue(["api.example.com"], days=90)
        certificate_set = self.load(new, old)
        self.assertEqual(certificate_set.match("api.example.com").fingerprint, new.fingerprint().hex())
        certificate_set = self.load(old, new)
        self.assertEqual(certificate_set.match("api.example.com").fingerprint, new.fingerprint().hex())


class WireTests(SynchronousTestCase):
    """
    L{CertificateSet.to_wire} / L{CertificateSet.from_wire} carry a set to a
    worker unchanged.
    """

    def test_round_trip(self):
        """
        A set rebuilt from its wire form has the same files, names, default
        and bytes.
        """
        directory = self.mktemp()
        a = _CA.issue(["a.example.com"]).write(os.path.join(directory, "a.pem"))
        b = _CA.intermediate().issue(["*.b.example.com"]).write(os.path.join(directory, "b.pem"))
        spec = _spec([directory], default=b)
        original = load_certificate_set(spec)
        copy = CertificateSet.from_wire(spec, original.to_wire())
        self.assertEqual(copy.describe(), original.describe())
        self.assertEqual([e.pem for e in copy.entries], [e.pem for e in original.entries])
        self.assertEqual(copy.default.path, b)
        self.assertEqual(copy.match("x.b.example.com").path, b)
        self.assertEqual(copy.match("a.example.com").path, a)

    def test_corrupt_blob(self):
        """
        A blob damaged on the way is refused, naming the file.
        """
        directory = self.mktemp()
        path = _CA.issue(["a.example.com"]).write(os.path.join(directory, "a.pem"))
        spec = _spec([directory])
        [blob] = load_certificate_set(spec).to_wire()
        error = self.assertRaises(CertificateError, CertificateSet.from_wire, spec, [blob[:-300]])
        self.assertEqual(error.path, path)
        error = self.assertRaises(CertificateError, CertificateSet.from_wire, spec, [b"nonsense\n" + blob])
        self.assertIn("has no valid header", str(error))

    def test_empty_set_refused(self):
        """
        A set needs at least one certificate.
        """
        error = self.assertRaises(CertificateError, CertificateSet.from_wire, _spec([]), [])
        self.assertIn("[tls:main] certificates: no certificate loaded", str(error))


class PemTests(SynchronousTestCase):
    """
    The PEM helpers used for other certificate files (CA bundles, client
    certificates).
    """

    def test_blocks(self):
        """
        L{pem_blocks} lists labels and blocks, ignoring text between them.
        """
        issued = _CA.issue(["a.example.com"])
        blocks = pem_blocks(b"comment\n" + issued.cert_pem() + b"more\n" + issued.key_pem())
        self.assertEqual([label for label, _ in blocks], [b"CERTIFICATE", b"PRIVATE KEY"])

    def test_bundle_errors_are_value_errors(self):
        """
        L{read_pem_bundle} and L{pem_blocks} raise L{ValueError} with the
        reason.
        """
        self.assertRaises(ValueError, read_pem_bundle, b"")
        self.assertRaises(ValueError, pem_blocks, b"-----BEGIN CERTIFICATE-----\nAAA")
