"""
Tests for one JWKS fetch per host (gatelayer.filters.jwks_shared): the
master part sends each fetched document to every worker, a new worker
gets the current ones, a worker's unknown key id asks the master, and a
reload keeps or replaces the fetchers. Over in-memory AMP connections with
a scripted fetcher.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.auth import testing as t
from gatelayer.config import parse_config_text
from gatelayer.filters.jwks_shared import JwksPart, MasterJwksSource, register_worker_responders
from gatelayer.process.control import ControlProtocol

CONFIG = """
[gateway]
workers = 2
[listener:web]
bind = 127.0.0.1:8080
[filter:idp]
type = jwt
jwks_url = https://idp.example.com/jwks.json
[route:hello]
path = /
respond = 200 hi
filters = idp
"""


class ScriptedFetcher:
    """
    A JWKS fetcher whose fetches the test makes happen.
    """

    def __init__(self, reactor, settings):
        self.url = settings.jwks_url
        self.keys = ()
        self.on_document = None
        self.running = False
        self.refetches = []

    def start(self):
        """
        Start.
        """
        self.running = True

    def stop(self):
        """
        Stop.
        """
        self.running = False

    def fetched(self, document):
        """
        A fetch succeeded with C{document}.
        """
        self.on_document(document)

    def refetch_for_unknown_key(self):
        """
        Record the request; the test fires it.
        """
        waiting = Deferred()
        self.refetches.append(waiting)
        return waiting


class Holder:
    """
    A filter as the worker's responder finds it: C{fetcher} is its source.
    """

    def __init__(self, fetcher):
        self.fetcher = fetcher


def document(*kids):
    """
    A JWKS document with one RSA key per kid.
    """
    return t.jwks(*(t.public_jwk(t.private_key("RSA", index), kid) for index, kid in enumerate(kids)))


class JwksPartTests(SynchronousTestCase):
    """
    The master part and two workers' sources.
    """

    def setUp(self):
        """
        A started part for CONFIG and two workers joined to it.
        """
        self.config = parse_config_text(CONFIG, "/etc/gate.ini")
        self.controls = []
        self.pumps = []
        self.sources = []
        self.part = JwksPart(self.config, Clock(), lambda: list(self.controls),
                             fetcher_factory=ScriptedFetcher)
        self.part.startService()
        for _ in range(2):
            self.add_worker()

    def add_worker(self):
        """
        One more worker with the source of filter idp.
        """
        master_side, worker_side, pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
        source = MasterJwksSource("idp", worker_side, ["RS256"], "https://idp.example.com/jwks.json")
        register_worker_responders(worker_side, lambda: {"idp": Holder(source)})
        self.part.register(master_side)
        self.controls.append(master_side)
        self.pumps.append(pump)
        self.sources.append(source)
        return master_side, source

    def flush(self):
        """
        Deliver what is in flight on every connection.
        """
        for _ in range(4):
            for pump in self.pumps:
                pump.flush()

    def test_one_fetch_every_worker(self):
        """
        The master's one fetch reaches every worker's filter.
        """
        fetcher = self.part.fetchers["idp"]
        self.assertTrue(fetcher.running)
        seen = []
        self.sources[0].on_keys = seen.append
        fetcher.fetched(document("k1", "k2"))
        self.flush()
        for source in self.sources:
            self.assertEqual(source.keys.kids, {"k1", "k2"})
        self.assertEqual([keys.kids for keys in seen], [{"k1", "k2"}])
        self.assertEqual(self.part.status(), {"jwks": {"idp": {"url": "https://idp.example.com/jwks.json",
                                                               "keys": 0}}})

    def test_new_worker_synced(self):
        """
        A worker that connects later gets the last document at sync.
        """
        self.part.fetchers["idp"].fetched(document("k1"))
        self.flush()
        control, source = self.add_worker()
        d = self.part.sync(control)
        self.flush()
        self.successResultOf(d)
        self.assertEqual(source.keys.kids, {"k1"})

    def test_unknown_key_asks_master(self):
        """
        Unknown key ids in two requests make one question to the master;
        both wait until the master's fetch ended, and the new document has
        arrived by then.
        """
        source = self.sources[0]
        first = source.refetch_for_unknown_key()
        second = source.refetch_for_unknown_key()
        self.flush()
        fetcher = self.part.fetchers["idp"]
        self.assertEqual(len(fetcher.refetches), 1)
        self.assertNoResult(first)
        fetcher.fetched(document("k9"))
        fetcher.refetches[0].callback(None)
        self.flush()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(source.keys.kids, {"k9"})

    def test_bad_document_ignored(self):
        """
        A document the worker cannot use leaves its keys as they were.
        """
        source = self.sources[0]
        source.take(document("k1"))
        source.take(b"{not json")
        self.assertEqual(source.keys.kids, {"k1"})

    def test_reconfigure(self):
        """
        A reload keeps the fetcher of an unchanged filter, replaces one
        whose URL changed, and stops one whose filter is gone.
        """
        kept = self.part.fetchers["idp"]
        self.part.reconfigure(parse_config_text(CONFIG, "/etc/gate.ini"))
        self.assertIs(self.part.fetchers["idp"], kept)
        self.part.reconfigure(parse_config_text(CONFIG.replace("idp.example.com", "idp2.example.com"),
                                                "/etc/gate.ini"))
        replaced = self.part.fetchers["idp"]
        self.assertIsNot(replaced, kept)
        self.assertFalse(kept.running)
        self.assertTrue(replaced.running)
        without = CONFIG.replace("filters = idp\n", "").split("[filter:idp]")[0] + "[route:x]\npath = /x\nrespond = 200 x\n"
        self.part.reconfigure(parse_config_text(without, "/etc/gate.ini"))
        self.assertEqual(self.part.fetchers, {})
        self.assertFalse(replaced.running)
