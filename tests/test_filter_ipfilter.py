"""
Tests for the ip_filter filter: its settings
(L{gatelayer.config.filter_ipfilter}), its decisions
(L{gatelayer.filters.ipfilter}) through a gateway with trusted proxies, and
its list files as the master reads, reloads and sends them
(L{gatelayer.filters.iplists}).
"""

import json
import os

from twisted.internet.defer import succeed
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from gatelayer.chain import Exchange, IFilter
from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.filter_ipfilter import parse_filter
from gatelayer.config.model import FilterSpec
from gatelayer.filters import FilterServices, build_filter, validate_filters
from gatelayer.filters.ipfilter import IpFilter
from gatelayer.filters.iplists import CHUNK_SIZE, IpListsPart, WorkerIpLists, push_lists
from gatelayer.net.cidr import parse_cidr
from gatelayer.testing.config import parse_section, section_settings
from gatelayer.testing.server import InMemoryGateway, parse_response

GATE = """
[gateway]
workers = 1
trusted_proxies = 127.0.0.1
[listener:web]
bind = 127.0.0.1:0
[filter:office]
type = ip_filter
{keys}
[route:app]
path = /
respond = 200 hello
filters = office
"""


def _filter(**items):
    return IpFilter("office", section_settings(parse_filter, "filter:office", items))


class SettingsTests(SynchronousTestCase):
    """
    Inline lists are parsed at load; every problem names section and key.
    """

    def test_inline_lists(self):
        """
        C{allow} and C{deny} are comma-separated addresses and networks.
        """
        settings, problems = parse_section(parse_filter, "filter:office", {
            "allow": "10.0.0.0/8, 2001:db8::/32, 192.0.2.7", "deny": "10.9.0.0/16"})
        self.assertEqual(problems, [])
        self.assertEqual([str(n) for n in settings.allow], ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"])
        self.assertEqual([str(n) for n in settings.deny], ["10.9.0.0/16"])
        self.assertEqual(settings.files, ())

    def test_bad_entries_named(self):
        """
        A bad entry is named with section, key and the entry.
        """
        _, problems = parse_section(parse_filter, "filter:office", {"allow": "10.0.0.0/8, 10.0.0.300",
                                                                     "deny": "10.0.0.1/8"})
        self.assertEqual(problems, [
            "gate.ini [filter:office] allow: '10.0.0.0/8, 10.0.0.300' has '10.0.0.300', "
            "which is not an address or CIDR network",
            "gate.ini [filter:office] deny: '10.0.0.1/8' has '10.0.0.1/8', "
            "which has host bits set (the network is 10.0.0.0/8)",
        ])

    def test_needs_a_list(self):
        """
        A filter with no list at all is an error, and so is an unknown key.
        """
        _, problems = parse_section(parse_filter, "filter:office", {"allowed": "10.0.0.0/8"})
        self.assertEqual(problems, [
            "gate.ini [filter:office]: needs at least one of allow, deny, allow_file, deny_file",
            "gate.ini [filter:office] allowed: is not a known key",
        ])

    def test_file_problems_at_check(self):
        """
        A bad list file stops a start or C{--check}, naming config file,
        section, key, list file and line.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "deny.txt"), "w") as f:
            f.write("# bad actors\n203.0.113.0/24\n203.0.113.999\n")
        config = parse_config_text(GATE.format(keys="deny_file = deny.txt"),
                                   os.path.join(directory, "gate.ini"), cpu_count=1)
        error = self.assertRaises(ConfigError, validate_filters, config)
        deny = os.path.join(directory, "deny.txt")
        self.assertEqual(error.problems, [
            f"{config.path} [filter:office] deny_file: {deny} line 3: '203.0.113.999' "
            "is not an address or CIDR network"])
        os.remove(deny)
        error = self.assertRaises(ConfigError, validate_filters, config)
        self.assertIn(f"[filter:office] deny_file: {deny}: cannot be read", error.problems[0])


class DecisionTests(SynchronousTestCase):
    """
    Deny wins; with an allow list, only allowed addresses pass.
    """

    def test_interface(self):
        """
        The filter provides L{IFilter}.
        """
        verifyObject(IFilter, _filter(deny="10.0.0.0/8"))

    def test_table(self):
        """
        The documented order: deny wins over allow; an allow list refuses
        what it does not list; without one, what is not denied passes.
        """
        table = [
            ({"deny": "10.0.0.0/8"}, "10.1.2.3", False),
            ({"deny": "10.0.0.0/8"}, "192.0.2.1", True),
            ({"allow": "10.0.0.0/8"}, "10.1.2.3", True),
            ({"allow": "10.0.0.0/8"}, "192.0.2.1", False),
            ({"allow": "10.0.0.0/8", "deny": "10.9.0.0/16"}, "10.9.1.1", False),
            ({"allow": "10.0.0.0/8", "deny": "10.9.0.0/16"}, "10.8.1.1", True),
            ({"allow": "0.0.0.0/0", "deny": "192.0.2.7"}, "192.0.2.7", False),
            ({"allow": "0.0.0.0/0"}, "2001:db8::1", False),
            ({"allow": "::/0"}, "2001:db8::1", True),
            ({"deny": "192.0.2.0/24"}, "::ffff:192.0.2.9", False),
            ({"allow": "::ffff:192.0.2.0/120"}, "192.0.2.9", True),
            ({"deny": "10.0.0.0/8"}, "not-an-address", True),
            ({"allow": "10.0.0.0/8"}, "not-an-address", False),
        ]
        for items, client, allowed in table:
            with self.subTest(items=items, client=client):
                self.assertEqual(_filter(**items).allows(client), allowed)

    def test_refusal(self):
        """
        A refused request gets a 403 problem+json naming nothing of the
        lists; an allowed one goes on.
        """
        ip_filter = _filter(deny="10.0.0.0/8")
        exchange = Exchange(method=b"GET", path=b"/", query=b"", headers=Headers(), client_ip="10.0.0.1")
        reply = ip_filter.on_request(exchange)
        self.assertEqual(reply.status, 403)
        self.assertEqual(dict(reply.headers)[b"content-type"], b"application/problem+json")
        problem = json.loads(reply.body)
        self.assertEqual((problem["status"], problem["title"]), (403, "Forbidden"))
        self.assertNotIn("10.0.0.0", reply.body.decode())
        exchange.client_ip = "10.0.0.1".replace("10.", "11.")
        self.assertIsNone(ip_filter.on_request(exchange))


class GatewayTests(SynchronousTestCase):
    """
    Through a gateway: the address is the one resolved through
    C{trusted_proxies}, never a client's own X-Forwarded-For.
    """

    def request(self, keys, peer, forwarded=None):
        gate = InMemoryGateway(GATE.format(keys=keys))
        head = b"GET / HTTP/1.1\r\nHost: example.com\r\n"
        if forwarded:
            head += b"X-Forwarded-For: " + forwarded + b"\r\n"
        return parse_response(gate.exchange(head + b"\r\n", peer=peer))

    def test_forwarded_by_trusted_proxy(self):
        """
        Behind the trusted proxy, the forwarded address decides.
        """
        status, headers, _ = self.request("deny = 203.0.113.0/24", "127.0.0.1", b"203.0.113.5")
        self.assertEqual(status, 403)
        self.assertEqual(headers[b"content-type"], [b"application/problem+json"])
        self.assertEqual(self.request("deny = 203.0.113.0/24", "127.0.0.1", b"198.51.100.5")[0], 200)

    def test_untrusted_peer_cannot_choose(self):
        """
        An untrusted peer's X-Forwarded-For is ignored: an allow list sees
        the peer itself.
        """
        self.assertEqual(self.request("allow = 198.51.100.0/24", "192.0.2.1", b"198.51.100.5")[0], 403)
        self.assertEqual(self.request("allow = 198.51.100.0/24", "198.51.100.9")[0], 200)


class _WorkerControl:
    """
    A worker's control channel as the master part sees it: each command is
    answered by a real L{WorkerIpLists} in the same process.
    """

    def __init__(self, filters):
        self.lists = WorkerIpLists(lambda: filters)
        self.calls = 0

    def callRemote(self, command, **arguments):
        self.calls += 1
        return succeed(self.lists.chunk(**arguments))


class ListFileTests(SynchronousTestCase):
    """
    The master reads the list files, sends them to workers, and on reload
    sends new lists or keeps the old ones when a file went bad.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.write("deny.txt", "203.0.113.0/24\n")
        self.write("allow.txt", "# partners\n198.51.100.0/24\n2001:db8::/32\n")
        self.config = parse_config_text(
            GATE.format(keys="allow_file = allow.txt\ndeny_file = deny.txt\nallow = 192.0.2.0/24"),
            os.path.join(self.directory, "gate.ini"), cpu_count=1)
        self.spec = self.config.filters["office"]

    def write(self, name, text):
        with open(os.path.join(self.directory, name), "w") as f:
            f.write(text)

    def test_built_without_master_reads_files(self):
        """
        Without a master the filter reads its files itself; inline and file
        lists both count.
        """
        ip_filter = build_filter(self.spec, FilterServices(reactor=None, master=None, config=self.config))
        self.assertEqual(ip_filter.sizes, (3, 1))
        self.assertTrue(ip_filter.allows("192.0.2.1"))
        self.assertTrue(ip_filter.allows("2001:db8::5"))
        self.assertFalse(ip_filter.allows("203.0.113.1"))

    def test_worker_gets_lists_from_master(self):
        """
        In a worker the files are not read; the master's sync sends them.
        """
        worker_filter = build_filter(self.spec, FilterServices(reactor=None, master=object(), config=self.config))
        self.assertEqual(worker_filter.sizes, (1, 0))
        control = _WorkerControl({"office": worker_filter})
        part = IpListsPart(self.config, lambda: [control])
        self.successResultOf(part.sync(control))
        self.assertEqual(worker_filter.sizes, (3, 1))
        self.assertFalse(worker_filter.allows("203.0.113.1"))
        self.assertEqual(part.status(), {"ip_lists": {"office": {"allow_file": 2, "deny_file": 1}}})

    def test_reload_pushes_new_lists(self):
        """
        SIGHUP re-reads the files and every worker gets the new lists.
        """
        worker_filter = IpFilter("office", self.spec.settings)
        control = _WorkerControl({"office": worker_filter})
        part = IpListsPart(self.config, lambda: [control])
        self.write("deny.txt", "203.0.113.0/24\n198.51.100.7\n")
        self.successResultOf(part.reload())
        self.assertFalse(worker_filter.allows("198.51.100.7"))
        self.assertTrue(worker_filter.allows("198.51.100.8"))

    def test_bad_file_on_reload_keeps_lists(self):
        """
        A bad line on reload is logged naming file and line, and nothing is
        sent: workers keep the old lists.
        """
        worker_filter = IpFilter("office", self.spec.settings)
        control = _WorkerControl({"office": worker_filter})
        part = IpListsPart(self.config, lambda: [control])
        self.successResultOf(part.sync(control))
        sent = control.calls
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.write("deny.txt", "203.0.113.0/24\n198.51.100.0/33\n")
        self.successResultOf(part.reload())
        self.assertEqual(control.calls, sent)
        self.assertFalse(worker_filter.allows("203.0.113.1"))
        self.assertTrue(worker_filter.allows("198.51.100.7"))
        problem = [event["problem"] for event in events if "problem" in event][-1]
        self.assertIn(os.path.join(self.directory, "deny.txt") + " line 2: '198.51.100.0/33'", problem)
        self.assertEqual(part.lists["office"][1], (parse_cidr("203.0.113.0/24"),))

    def test_large_lists_chunked(self):
        """
        Lists larger than one AMP value go in several chunks; the worker
        swaps only at the last one, and gets every network.
        """
        networks = [parse_cidr(f"10.{i // 256}.{i % 256}.0/24") for i in range(20000)]
        worker_filter = IpFilter("office", self.spec.settings)
        control = _WorkerControl({"office": worker_filter})
        self.successResultOf(push_lists(control, "office", networks, networks[:3]))
        self.assertGreater(control.calls, len(networks) * len("10.0.0.0/24") // CHUNK_SIZE)
        self.assertEqual(worker_filter.sizes, (1 + 20000, 3))
        self.assertTrue(worker_filter.allows("10.78.31.1"))
        self.assertFalse(worker_filter.allows("10.0.2.1"))
        self.assertFalse(worker_filter.allows("172.16.0.1"))
