"""
Tests for L{gatelayer.auth.names}: the names the config parser and the
authentication filters share.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.auth import jwks, names


class NamesTests(SynchronousTestCase):
    """
    One definition of each shared name, re-exported where it used to live.
    """

    def test_facade(self):
        """
        Every name in C{__all__} exists.
        """
        for name in names.__all__:
            self.assertTrue(hasattr(names, name), name)

    def test_jwks_uses_the_same_names(self):
        """
        The key loader pins keys to the very algorithms the config accepts.
        """
        self.assertIs(jwks.ALGORITHMS, names.ALGORITHMS)
        self.assertIs(jwks.HMAC_ALGORITHMS, names.HMAC_ALGORITHMS)

    def test_consumer_header_reserved(self):
        """
        The header the gateway writes the consumer to can never carry a
        forwarded claim, so a token cannot set its own identity header.
        """
        self.assertEqual(names.CONSUMER_HEADER, b"x-consumer")
        self.assertIn("x-consumer", names.RESERVED_HEADERS)
        self.assertIn("authorization", names.RESERVED_HEADERS)
