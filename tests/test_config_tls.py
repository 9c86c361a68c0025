"""
Tests for the C{[tls:NAME]} keys of the TLS policy and session resumption:
C{groups}, C{prefer_server_ciphers}, C{session_tickets} and
C{ticket_key_rotation}, from gate.ini to the OpenSSL context.
"""

import os

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.model import DEFAULT_TLS_GROUPS
from gatelayer.tls.policy import GROUPS_SETTABLE, PolicyError, check_policy, server_context


class TlsKeysTests(SynchronousTestCase):
    """
    The keys parse into the L{TlsSpec}, with Mozilla-intermediate defaults,
    and bad values are errors naming file, section, key and value.
    """

    def setUp(self):
        self.certificates = os.path.abspath(self.mktemp())
        os.makedirs(self.certificates)

    def parse(self, keys):
        text = (f"[listener:web]\nbind = 127.0.0.1:8443\ntls = main\n"
                f"[tls:main]\ncertificates = {self.certificates}\n{keys}"
                "[route:hello]\npath = /\nrespond = 200 hello\n")
        return parse_config_text(text, "/etc/gate/gate.ini", cpu_count=2).tls["main"]

    def test_defaults(self):
        """
        Without the keys: X25519, P-256, P-384; the cipher order decided by
        the suites (client's with AEAD only); tickets on, rotated hourly.
        """
        spec = self.parse("")
        self.assertEqual(spec.groups, DEFAULT_TLS_GROUPS)
        self.assertEqual(DEFAULT_TLS_GROUPS, ("X25519", "P-256", "P-384"))
        self.assertIsNone(spec.prefer_server_ciphers)
        self.assertTrue(spec.session_tickets)
        self.assertEqual(spec.ticket_key_rotation, 3600.0)

    def test_values(self):
        """
        Each key takes its documented syntax.
        """
        spec = self.parse("groups = P-384 , X25519\nprefer_server_ciphers = yes\n"
                          "session_tickets = no\nticket_key_rotation = 12h\n")
        self.assertEqual(spec.groups, ("P-384", "X25519"))
        self.assertTrue(spec.prefer_server_ciphers)
        self.assertFalse(spec.session_tickets)
        self.assertEqual(spec.ticket_key_rotation, 12 * 3600.0)

    def test_errors(self):
        """
        Hostile or mistaken values are refused, each naming the key and
        value.
        """
        cases = [
            ("groups = ,\n", "[tls:main] groups: ',' names no key exchange group"),
            ("groups = X25519; rm -rf\n", "[tls:main] groups: 'X25519; rm -rf' has 'X25519; rm -rf', not a group name"),
            ("groups = X25519:P-256\n", "'X25519:P-256', not a group name"),
            ("groups = P\u2011256\n", "not a group name"),
            ("groups = " + "A" * 65 + "\n", "not a group name"),
            ("prefer_server_ciphers = sometimes\n", "[tls:main] prefer_server_ciphers: 'sometimes' is not yes or no"),
            ("session_tickets = maybe\n", "[tls:main] session_tickets: 'maybe' is not yes or no"),
            ("ticket_key_rotation = hourly\n", "[tls:main] ticket_key_rotation: 'hourly' is not a duration"),
            ("ticket_key_rotation = 500ms\n", "[tls:main] ticket_key_rotation: '500ms' must be between 1s and 7d"),
            ("ticket_key_rotation = 8d\n", "[tls:main] ticket_key_rotation: '8d' must be between 1s and 7d"),
        ]
        for keys, expected in cases:
            error = self.assertRaises(ConfigError, self.parse, keys)
            self.assertIn("/etc/gate/gate.ini", str(error), keys)
            self.assertIn(expected, str(error), keys)


class GroupsPolicyTests(SynchronousTestCase):
    """
    C{groups} and C{prefer_server_ciphers} reach OpenSSL.
    """

    def setUp(self):
        self.certificates = os.path.abspath(self.mktemp())
        os.makedirs(self.certificates)

    def spec(self, keys=""):
        return TlsKeysTests.parse(self, keys)

    def test_unknown_group(self):
        """
        A well-formed name OpenSSL does not know is a L{PolicyError} naming
        the section, the key and the unknown name. Where the bindings cannot
        set groups (cryptography before 44, as on PyPy 3.9), the policy is
        built with OpenSSL's default groups and says so in the log, once per
        section.
        """
        cases = [("X25519, P-999", "'P-999'"), ("brainpool", "'brainpool'")]
        if not GROUPS_SETTABLE:
            for groups, _ in cases:
                check_policy(self.spec(f"groups = {groups}\n"))
                self.assertIsInstance(server_context(self.spec(f"groups = {groups}\n")), SSL.Context)
            return
        for groups, unknown in cases:
            error = self.assertRaises(PolicyError, check_policy, self.spec(f"groups = {groups}\n"))
            self.assertIn("[tls:main] groups:", str(error))
            self.assertIn(f"OpenSSL knows no group {unknown}", str(error))

    def test_known_groups(self):
        """
        OpenSSL's other spellings of the same groups are accepted.
        """
        check_policy(self.spec("groups = x25519, prime256v1, secp384r1, secp521r1\n"))

    def test_cipher_order(self):
        """
        With AEAD suites only the client's order wins unless
        C{prefer_server_ciphers = yes}; a list with a CBC suite keeps the
        server's order unless C{prefer_server_ciphers = no}.
        """
        server_order = SSL.OP_CIPHER_SERVER_PREFERENCE
        cbc = "ciphers = ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA\n"
        cases = [
            ("", 0),
            ("prefer_server_ciphers = yes\n", server_order),
            (cbc, server_order),
            (cbc + "prefer_server_ciphers = no\n", 0),
        ]
        for keys, expected in cases:
            context = server_context(self.spec(keys))
            self.assertEqual(context.set_options(0) & server_order, expected, keys)

    def test_session_tickets_off(self):
        """
        C{session_tickets = no} sets OpenSSL's no-ticket option; the default
        leaves tickets on.
        """
        self.assertEqual(server_context(self.spec()).set_options(0) & SSL.OP_NO_TICKET, 0)
        context = server_context(self.spec("session_tickets = no\n"))
        self.assertEqual(context.set_options(0) & SSL.OP_NO_TICKET, SSL.OP_NO_TICKET)
