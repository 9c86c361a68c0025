"""
Tests for C{ocsp_staple} of C{[tls:NAME]}: parsing, the check of a response
file at start-up and C{--check}, and the master part it brings.
"""

import datetime
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.process.wiring import master_parts, validate_runtime
from gatelayer.testing.certs import CertificateAuthority, write_pem
from gatelayer.testing.config import config_problems
from gatelayer.testing.ocsp import ocsp_response

_CA = CertificateAuthority().intermediate()
_LEAF = _CA.issue(["www.example.com"], ocsp_url="http://127.0.0.1:9/")
_OTHER = _CA.issue(["other.example.com"])

# A gateway with one TLS listener; the section's keys follow.
_BASE = """\
[listener:web]
bind = 127.0.0.1:0
tls = main
[route:hello]
path = /
respond = 200 hello
[tls:main]
"""


class _Directory(SynchronousTestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.certificate = _LEAF.write(os.path.join(self.directory, "www.pem"))

    def config(self, value):
        text = _BASE + f"certificates = {self.certificate}\nocsp_staple = {value}\n"
        return parse_config_text(text, os.path.join(self.directory, "gate.ini"), cpu_count=1)


class ParseTests(_Directory):
    """
    C{ocsp_staple} is off, C{auto} or an existing file.
    """

    def test_values(self):
        """
        Off by default and for C{off}/C{no}; C{auto} in any case; a path
        relative to the configuration file's directory.
        """
        write_pem(os.path.join(self.directory, "staple.der"), b"x")
        text = _BASE + f"certificates = {self.certificate}\n"
        self.assertIsNone(parse_config_text(text, "gate.ini", cpu_count=1).tls["main"].ocsp_staple)
        for value, expected in [("off", None), ("no", None), ("auto", "auto"), ("AUTO", "auto"),
                                ("staple.der", os.path.join(self.directory, "staple.der"))]:
            with self.subTest(value):
                self.assertEqual(self.config(value).tls["main"].ocsp_staple, expected)

    def test_bad_values(self):
        """
        Anything else is refused naming the file, section, key and value.
        """
        for value in ["missing.der", "yes-please", "."]:
            with self.subTest(value):
                text = _BASE + f"certificates = {self.certificate}\nocsp_staple = {value}\n"
                problems = config_problems(self, text)
                self.assertIn("gate.ini [tls:main] ocsp_staple: ", problems)
                self.assertIn("is not off, auto or an existing file", problems)


class RuntimeTests(_Directory):
    """
    A response file is checked against the section's certificates before
    the gateway starts (and by C{--check}).
    """

    def staple(self, der):
        return write_pem(os.path.join(self.directory, "staple.der"), der)

    def test_good_file(self):
        """
        A valid response for a certificate of the section passes.
        """
        self.staple(ocsp_response(_LEAF, _CA))
        validate_runtime(self.config("staple.der"))

    def test_bad_files(self):
        """
        A file that is not a response, is for another certificate, or has
        expired is refused naming the configuration, section, key, file and
        problem.
        """
        now = datetime.datetime.now(datetime.timezone.utc)
        cases = [
            (b"not an ocsp response", "not a DER OCSP response"),
            (ocsp_response(_OTHER, _CA), "another certificate"),
            (ocsp_response(_LEAF, _CA, this_update=now - datetime.timedelta(days=3),
                           next_update=now - datetime.timedelta(days=1)), "expired"),
        ]
        for der, reason in cases:
            with self.subTest(reason):
                path = self.staple(der)
                error = self.assertRaises(ConfigError, validate_runtime, self.config("staple.der"))
                [problem] = error.problems
                self.assertIn(f"gate.ini [tls:main] ocsp_staple: {path}: staples no certificate", problem)
                self.assertIn(reason, problem)

    def test_auto_needs_no_file(self):
        """
        C{auto} is not checked against anything at start: the responder is
        asked once the gateway runs.
        """
        validate_runtime(self.config("auto"))

    def test_master_part(self):
        """
        A configuration with TLS gets the C{ocsp} part right after the
        C{tls} part, which it follows.
        """
        clock = Clock()
        clock.advance(_LEAF.certificate.not_valid_before_utc.timestamp() + 3600)
        parts = master_parts(self.config("auto"), clock, lambda: [])
        names = [part.name for part in parts]
        self.assertEqual(names[names.index("tls") + 1], "ocsp")
