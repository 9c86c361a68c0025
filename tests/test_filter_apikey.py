"""
Tests for the api_key filter: its settings (L{gatelayer.config.filter_apikey}),
its key file (L{gatelayer.filters.keys}) and its behaviour on requests
(L{gatelayer.filters.apikey}).
"""

import json
import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.auth.apikeys import hash_key
from gatelayer.chain import Exchange, IFilter, Reply
from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.filter_apikey import parse_filter
from gatelayer.config.model import FilterSpec
from gatelayer.filters import FilterServices, build_filter, validate_filters
from gatelayer.filters.apikey import ApiKeyFilter
from gatelayer.filters.keys import key_material
from gatelayer.observe.metrics import WorkerMetrics
from gatelayer.testing.config import parse_section
from gatelayer.testing.exchange import raw_headers

ALICE = b"glk_alice-key"
BOB = b"glk_bob-key"


def _exchange(headers=(), query=b""):
    raw = raw_headers(headers)
    return Exchange(method=b"GET", path=b"/", query=query, headers=raw, client_ip="192.0.2.7")


class ApiKeyTestsMixin:
    """
    Writes an apikeys.ini and parses filter sections against it.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.write("apikeys.ini", f"[consumers]\nalice = {hash_key(ALICE)}\nbob = {hash_key(BOB)}\n")

    def write(self, name, text):
        with open(os.path.join(self.directory, name), "w") as f:
            f.write(text)

    def parse(self, **items):
        return parse_section(parse_filter, "filter:keys", items, self.directory)

    def load(self, **items):
        """
        Parse a section as the config does, then load its key file as the
        filter does: C{(store, problems)}, the problems of both steps.
        """
        settings, problems = self.parse(**items)
        if problems:
            return None, problems
        try:
            return key_material(FilterSpec("keys", "api_key", settings)), []
        except ConfigError as e:
            return None, e.problems

    def make(self, **items):
        items.setdefault("keys", "apikeys.ini")
        settings, problems = self.parse(**items)
        self.assertEqual(problems, [])
        return ApiKeyFilter("keys", settings, key_material(FilterSpec("keys", "api_key", settings)))


class SettingsTests(ApiKeyTestsMixin, SynchronousTestCase):
    """
    Settings are checked at load time; the key file is checked to be
    readable there and loaded where the filter is built, with problems in
    the same words.
    """

    def test_defaults(self):
        """
        The key comes from X-Api-Key and is hidden from upstream by default.
        """
        settings, problems = self.parse(keys="apikeys.ini")
        self.assertEqual(problems, [])
        self.assertEqual(settings.source, ("header", b"x-api-key"))
        self.assertTrue(settings.hide_credentials)
        self.assertEqual(key_material(FilterSpec("keys", "api_key", settings)).consumers, ["alice", "bob"])
        self.assertEqual(settings.keys_file, os.path.join(self.directory, "apikeys.ini"))

    def test_query(self):
        """
        query = NAME takes the key from the query string.
        """
        settings, problems = self.parse(keys="apikeys.ini", query="apikey", hide_credentials="no")
        self.assertEqual(problems, [])
        self.assertEqual((settings.source, settings.hide_credentials), (("query", b"apikey"), False))

    def test_problems(self):
        """
        Each problem names the section and key, and for the key file the
        file and consumer.
        """
        self.write("plain.ini", "[consumers]\nalice = my-plain-key\n")
        cases = [
            ({}, "gate.ini [filter:keys] keys: is required"),
            ({"keys": "missing.ini"}, "missing.ini: cannot be read"),
            ({"keys": "plain.ini"}, "plain.ini [consumers] alice: is not a SHA-256 hex digest"),
            ({"keys": "apikeys.ini", "header": "X-Key", "query": "k"}, "has header and query"),
            ({"keys": "apikeys.ini", "header": "Authorization"}, "cannot carry an API key"),
            ({"keys": "apikeys.ini", "header": "X Key"}, "is not a valid name"),
            ({"keys": "apikeys.ini", "hide_credentials": "maybe"}, "is not yes or no"),
            ({"keys": "apikeys.ini", "key": "x"}, "key: is not a known key"),
        ]
        for items, expected in cases:
            _, problems = self.load(**items)
            self.assertTrue(any(expected in p for p in problems), (items, problems))
            self.assertTrue(all(p.startswith("gate.ini [filter:keys]") for p in problems), problems)

    def test_file_checked_not_loaded(self):
        """
        The config reports a key file that cannot be read, naming it; one
        that reads but holds plain keys passes the config and is reported,
        in the same words as before, when its key material is loaded.
        """
        missing = os.path.join(self.directory, "missing.ini")
        self.assertEqual(self.parse(keys="missing.ini")[1], [
            f"gate.ini [filter:keys] keys: {missing}: cannot be read: No such file or directory"])
        os.makedirs(os.path.join(self.directory, "folder"))
        folder = os.path.join(self.directory, "folder")
        self.assertEqual(self.parse(keys="folder")[1], [
            f"gate.ini [filter:keys] keys: {folder}: cannot be read: Is a directory"])
        self.write("plain.ini", "[consumers]\nalice = my-plain-key\n")
        settings, problems = self.parse(keys="plain.ini")
        self.assertEqual(problems, [])
        plain = os.path.join(self.directory, "plain.ini")
        self.assertEqual(self.load(keys="plain.ini")[1], [
            f"gate.ini [filter:keys] keys: {plain} [consumers] alice: is not a SHA-256 hex digest "
            "(64 hex digits; gatelayer-apikey prints the line for a new key)"])

    def test_through_loader(self):
        """
        A gate.ini with an api_key filter loads; a bad key file stops it.
        """
        text = """
[listener:web]
bind = 127.0.0.1:0
[route:orders]
path = /orders/
respond = 200 ok
filters = keys
[filter:keys]
type = api_key
keys = apikeys.ini
header = X-Api-Key
hide_credentials = yes
"""
        path = os.path.join(self.directory, "gate.ini")
        config = parse_config_text(text, path)
        validate_filters(config)
        self.assertEqual(key_material(config.filters["keys"], config).consumers, ["alice", "bob"])
        self.write("apikeys.ini", "[consumers]\nalice = nope\n")
        config = parse_config_text(text, path)
        error = self.assertRaises(ConfigError, validate_filters, config)
        self.assertEqual(len(error.problems), 1)
        self.assertTrue(error.problems[0].startswith(f"{path} [filter:keys] keys: "), error.problems)
        services = FilterServices(reactor=MemoryReactorClock(), master=None, config=config)
        built = self.assertRaises(ConfigError, build_filter, config.filters["keys"], services)
        self.assertEqual(built.problems, error.problems)


class FilterTests(ApiKeyTestsMixin, SynchronousTestCase):
    """
    The filter on requests.
    """

    def assertRefused(self, result, description):
        self.assertIsInstance(result, Reply)
        self.assertEqual(result.status, 401)
        headers = dict(result.headers)
        self.assertEqual(json.loads(result.body), {"error": "invalid_key", "error_description": description})
        self.assertEqual(headers[b"www-authenticate"],
                         f'ApiKey error="invalid_key", error_description="{description}"'.encode())

    def test_interface(self):
        """
        The filter provides IFilter, and is built through the registry.
        """
        verifyObject(IFilter, self.make())
        settings, _ = self.parse(keys="apikeys.ini")
        services = FilterServices(reactor=MemoryReactorClock(), master=None, config=None)
        self.assertIsInstance(build_filter(FilterSpec("keys", "api_key", settings), services), ApiKeyFilter)

    def test_accepts(self):
        """
        A registered key passes: consumer in the context and X-Consumer
        upstream, the key hidden, the client's own X-Consumer gone.
        """
        exchange = _exchange([(b"X-Api-Key", ALICE), (b"X-Consumer", b"admin")])
        self.assertIsNone(self.make().on_request(exchange))
        self.assertEqual(exchange.context["consumer"], "alice")
        self.assertEqual(exchange.headers.getRawHeaders(b"x-consumer"), [b"alice"])
        self.assertIsNone(exchange.headers.getRawHeaders(b"x-api-key"))

    def test_keeps_key(self):
        """
        hide_credentials = no forwards the key.
        """
        exchange = _exchange([(b"X-Api-Key", BOB)])
        self.assertIsNone(self.make(hide_credentials="no").on_request(exchange))
        self.assertEqual(exchange.headers.getRawHeaders(b"x-api-key"), [BOB])
        self.assertEqual(exchange.headers.getRawHeaders(b"x-consumer"), [b"bob"])

    def test_refusals(self):
        """
        Missing, unknown, oversized and several different keys get 401; the
        client's X-Consumer is removed regardless.
        """
        keys = self.make()
        cases = [
            ([], "the request carries no API key"),
            ([(b"X-Api-Key", b"")], "the request carries no API key"),
            ([(b"X-Api-Key", b"glk_wrong")], "the API key is not valid"),
            ([(b"X-Api-Key", hash_key(ALICE).encode())], "the API key is not valid"),
            ([(b"X-Api-Key", ALICE + b"x")], "the API key is not valid"),
            ([(b"X-Api-Key", b"k" * 100000)], "the API key is not valid"),
            ([(b"X-Api-Key", ALICE), (b"X-Api-Key", BOB)], "the request carries several different API keys"),
            ([(b"X-Api-Key", ALICE + b", " + BOB)], "the request carries several different API keys"),
            ([(b"Authorization", b"Bearer " + ALICE)], "the request carries no API key"),
        ]
        for headers, description in cases:
            exchange = _exchange(headers + [(b"X-Consumer", b"admin")])
            self.assertRefused(keys.on_request(exchange), description)
            self.assertIsNone(exchange.headers.getRawHeaders(b"x-consumer"))
            self.assertNotIn("consumer", exchange.context)

    def test_outcomes_counted(self):
        """
        Through the registry with the worker's metrics, each decision is
        counted under the filter's name with a short reason.
        """
        settings, _ = self.parse(keys="apikeys.ini")
        metrics = WorkerMetrics(lambda: 0.0)
        services = FilterServices(reactor=MemoryReactorClock(), master=None, config=None, metrics=metrics)
        keys = build_filter(FilterSpec("keys", "api_key", settings), services)
        for headers in ([(b"X-Api-Key", ALICE)], [(b"X-Api-Key", BOB)], [], [(b"X-Api-Key", b"glk_wrong")],
                        [(b"X-Api-Key", b"k" * 100000)], [(b"X-Api-Key", ALICE + b", " + BOB)]):
            keys.on_request(_exchange(headers))
        counted = {tuple(k): v for k, v in metrics.snapshot()["gatelayer_auth_total"]}
        self.assertEqual(counted, {
            ("keys", "allowed", "ok"): 2, ("keys", "denied", "missing"): 1,
            ("keys", "denied", "unknown_key"): 2, ("keys", "denied", "ambiguous"): 1})

    def test_same_key_twice(self):
        """
        The same key sent twice is still one key.
        """
        exchange = _exchange([(b"X-Api-Key", ALICE), (b"X-Api-Key", ALICE)])
        self.assertIsNone(self.make().on_request(exchange))

    def test_query(self):
        """
        query = NAME reads the parameter (percent-decoded); several different
        values are refused; hiding removes only that parameter.
        """
        keys = self.make(query="apikey")
        exchange = _exchange(query=b"page=2&apikey=glk%5Falice-key&sort=asc")
        self.assertIsNone(keys.on_request(exchange))
        self.assertEqual(exchange.context["consumer"], "alice")
        self.assertEqual(exchange.query, b"page=2&sort=asc")
        self.assertRefused(keys.on_request(_exchange(query=b"apikey=" + ALICE + b"&apikey=" + BOB)),
                           "the request carries several different API keys")
        self.assertRefused(keys.on_request(_exchange([(b"X-Api-Key", ALICE)])), "the request carries no API key")
        self.assertRefused(keys.on_request(_exchange(query=b"apikey")), "the request carries no API key")
