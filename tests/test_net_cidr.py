"""
Tests for L{gatelayer.net.cidr}: parsing address list entries and files, and
looking addresses up in the compiled ranges.
"""

import ipaddress
import os

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.net.cidr import (
    AddressSet, CidrError, load_cidr_file, parse_cidr, parse_cidr_lines, parse_client_address,
)

GOOD_ENTRIES = [
    ("192.0.2.7", "192.0.2.7/32"),
    (" 10.0.0.0/8 ", "10.0.0.0/8"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("2001:db8::/32", "2001:db8::/32"),
    ("2001:DB8::1", "2001:db8::1/128"),
    ("::/0", "::/0"),
    ("::ffff:192.0.2.7", "192.0.2.7/32"),
    ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
    ("::ffff:0.0.0.0/96", "0.0.0.0/0"),
]

BAD_ENTRIES = [
    ("", "is empty"),
    ("10.0.0.300", "is not an address or CIDR network"),
    ("10.0.0.0/33", "is not an address or CIDR network"),
    ("example.com", "is not an address or CIDR network"),
    ("10.0.0.1/8", "has host bits set (the network is 10.0.0.0/8)"),
    ("2001:db8::1/32", "has host bits set (the network is 2001:db8::/32)"),
    ("10.0.0.0/8/8", "is not an address or CIDR network"),
]


class ParseTests(SynchronousTestCase):
    """
    Entries are addresses or strict CIDR networks; mapped IPv6 is IPv4.
    """

    def test_good_entries(self):
        """
        Each good entry parses to its network, mapped IPv6 entries to IPv4.
        """
        for text, expected in GOOD_ENTRIES:
            with self.subTest(text=text):
                self.assertEqual(str(parse_cidr(text)), expected)

    def test_bad_entries(self):
        """
        Each bad entry is refused with a message saying what is wrong.
        """
        for text, message in BAD_ENTRIES:
            with self.subTest(text=text):
                error = self.assertRaises(CidrError, parse_cidr, text)
                self.assertEqual(str(error), message)

    def test_lines_with_comments(self):
        """
        Comments, on their own line or after an entry, and blank lines are
        skipped.
        """
        lines = ["# office", "", "192.0.2.0/24  # first floor", "   ", "2001:db8::/48"]
        self.assertEqual([str(n) for n in parse_cidr_lines(lines, "office.txt")],
                         ["192.0.2.0/24", "2001:db8::/48"])

    def test_bad_lines_named(self):
        """
        Every bad line is named with the file and its line number.
        """
        error = self.assertRaises(CidrError, parse_cidr_lines, ["10.0.0.0/8", "nope", "# x", "1.2.3.4/40"], "f.txt")
        self.assertEqual(str(error), "f.txt line 2: 'nope' is not an address or CIDR network; "
                                     "f.txt line 4: '1.2.3.4/40' is not an address or CIDR network")

    def test_many_bad_lines_bounded(self):
        """
        Only ten bad lines are listed, with how many more there are.
        """
        error = self.assertRaises(CidrError, parse_cidr_lines, ["x"] * 25, "f.txt")
        self.assertIn("f.txt line 10:", str(error))
        self.assertNotIn("f.txt line 11:", str(error))
        self.assertTrue(str(error).endswith("(and 15 more)"))

    def test_file(self):
        """
        A file is read as UTF-8 (a byte order mark is allowed); an unreadable
        or non-UTF-8 file is named.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "deny.txt")
        with open(path, "wb") as f:
            f.write(b"\xef\xbb\xbf203.0.113.0/24\n")
        self.assertEqual([str(n) for n in load_cidr_file(path)], ["203.0.113.0/24"])
        with open(path, "wb") as f:
            f.write(b"203.0.113.0/24\n\xff\n")
        self.assertIn(f"{path}: is not UTF-8", str(self.assertRaises(CidrError, load_cidr_file, path)))
        missing = os.path.join(directory, "missing.txt")
        self.assertIn(f"{missing}: cannot be read", str(self.assertRaises(CidrError, load_cidr_file, missing)))


class ClientAddressTests(SynchronousTestCase):
    """
    Client addresses become C{(version, integer)}.
    """

    def test_addresses(self):
        """
        IPv4, IPv6, mapped IPv6 (as IPv4), zones dropped, non-addresses None.
        """
        table = [
            ("192.0.2.7", (4, int(ipaddress.ip_address("192.0.2.7")))),
            ("::ffff:192.0.2.7", (4, int(ipaddress.ip_address("192.0.2.7")))),
            ("2001:db8::1", (6, int(ipaddress.ip_address("2001:db8::1")))),
            ("fe80::1%eth0", (6, int(ipaddress.ip_address("fe80::1")))),
            ("", None),
            ("unix:/run/gate.sock", None),
            ("192.0.2.300", None),
        ]
        for text, expected in table:
            with self.subTest(text=text):
                self.assertEqual(parse_client_address(text), expected)


class AddressSetTests(SynchronousTestCase):
    """
    Lookups in compiled ranges agree with L{ipaddress} membership.
    """

    def build(self, *entries):
        return AddressSet(parse_cidr(entry) for entry in entries)

    def test_table(self):
        """
        Host routes, networks, their edges, both families, mapped clients.
        """
        networks = self.build("10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1")
        table = [
            ("10.0.0.0", True), ("10.255.255.255", True), ("9.255.255.255", False), ("11.0.0.0", False),
            ("192.0.2.7", True), ("192.0.2.6", False), ("192.0.2.8", False),
            ("::ffff:10.1.2.3", True), ("::ffff:11.1.2.3", False),
            ("2001:db8::", True), ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", True), ("2001:db9::", False),
            ("::1", True), ("::2", False), ("::", False),
            ("not an address", False),
        ]
        for address, expected in table:
            with self.subTest(address=address):
                self.assertEqual(address in networks, expected)

    def test_families_apart(self):
        """
        An IPv4 network never matches an IPv6 address with the same integer
        value, nor the other way round.
        """
        self.assertNotIn("::a00:1", self.build("10.0.0.0/8"))
        self.assertNotIn("10.0.0.1", self.build("::a00:0/104"))

    def test_everything(self):
        """
        C{/0} of a family matches every address of that family only.
        """
        everything4 = self.build("0.0.0.0/0")
        self.assertIn("255.255.255.255", everything4)
        self.assertIn("0.0.0.0", everything4)
        self.assertNotIn("::1", everything4)
        self.assertIn("::", self.build("::/0"))

    def test_overlaps_merged(self):
        """
        Overlapping, nested, adjacent and duplicate networks are merged and
        still give the same answers as L{ipaddress}.
        """
        entries = ["10.0.0.0/24", "10.0.0.128/25", "10.0.1.0/24", "10.0.0.0/24", "10.0.3.0/24", "10.0.2.7"]
        networks = self.build(*entries)
        self.assertEqual(len(networks), 6)
        self.assertEqual(networks._ranges[4][0], [int(ipaddress.ip_address("10.0.0.0")),
                                                  int(ipaddress.ip_address("10.0.2.7")),
                                                  int(ipaddress.ip_address("10.0.3.0"))])
        parsed = [ipaddress.ip_network(e) for e in entries]
        for last in range(0, 256 * 5, 3):
            address = ipaddress.ip_address(int(ipaddress.ip_address("10.0.0.0")) + last)
            with self.subTest(address=str(address)):
                self.assertEqual(str(address) in networks, any(address in n for n in parsed))

    def test_empty(self):
        """
        An empty set is false and matches nothing.
        """
        empty = AddressSet()
        self.assertFalse(empty)
        self.assertNotIn("10.0.0.1", empty)
        self.assertNotIn("::1", empty)
