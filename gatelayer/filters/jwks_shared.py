"""
One JWKS fetch per host: the master fetches the key set of every C{jwt}
filter with C{jwks_url} (L{JwksPart}) and sends the document to each worker
over the control channel, where the filter's L{MasterJwksSource} takes it.
A worker that meets an unknown key id asks the master to fetch again
(L{JwksRefetch}); the master's fetcher keeps its own pacing
(C{unknown_kid_interval}), so N workers cost the provider one fetch, not N.
"""

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.protocols import amp

from gatelayer.auth.jwks import KeyLoadError, KeySet, parse_jwks
from gatelayer.service import MasterPart

__all__ = ["JwksDocument", "JwksPart", "JwksRefetch", "MasterJwksSource", "register_worker_responders"]

_CHUNK = 60000


class JwksDocument(amp.Command):
    """
    Master -> worker: a piece of the JWKS document of filter C{filter}; the
    worker takes the document when C{final} arrives.
    """

    arguments = [(b"filter", amp.Unicode()), (b"data", amp.String()), (b"final", amp.Boolean())]
    response = []


class JwksRefetch(amp.Command):
    """
    Worker -> master: a token named a key id filter C{filter} does not
    know; answered once the master's fetch ended (or at once when it
    fetched for an unknown key id too recently).
    """

    arguments = [(b"filter", amp.Unicode())]
    response = []


def push_document(control, name, document):
    """
    Send C{document} (bytes) of filter C{name} to one worker.
    """
    pieces = [document[i:i + _CHUNK] for i in range(0, len(document), _CHUNK)] or [b""]
    return gatherResults([
        control.callRemote(JwksDocument, filter=name, data=piece, final=index == len(pieces) - 1)
        for index, piece in enumerate(pieces)], consumeErrors=True)


class MasterJwksSource:
    """
    A worker's key set of one filter, as the master sends it: the same face
    as L{gatelayer.auth.fetch.JwksFetcher} to the filter (C{keys},
    C{on_keys}, C{refetch_for_unknown_key}), without fetching itself.
    """

    log = Logger()

    def __init__(self, name, master, algorithms, url):
        """
        @param master: the worker's control channel to the master.
        """
        self.name = name
        self.master = master
        self.algorithms = frozenset(algorithms)
        self.url = url
        self.keys = KeySet()
        self.on_keys = None
        self._asking = None

    def start(self):
        """
        Nothing to start: the master sends the keys.
        """

    def stop(self):
        """
        Nothing to stop.
        """

    def take(self, document):
        """
        A document from the master (which parsed it already).
        """
        try:
            keys, _ = parse_jwks(document, self.algorithms, self.url, allow_secrets=False, strict=False)
        except KeyLoadError as e:
            self.log.error("jwks: the master's document for [filter:{filter}] is unusable: {problem}",
                           filter=self.name, problem=str(e))
            return
        self.keys = keys
        if self.on_keys is not None:
            self.on_keys(keys)

    def refetch_for_unknown_key(self):
        """
        Ask the master to fetch again; a Deferred firing when it answered
        (one question at a time: later ones wait for the same answer).
        """
        if self.master is None or not self.master.connected:
            return None
        if self._asking is None:
            self._asking = []
            self.master.callRemote(JwksRefetch, filter=self.name).addBoth(self._answered)
        waiter = Deferred()
        self._asking.append(waiter)
        return waiter

    def _answered(self, result):
        waiters, self._asking = self._asking, None
        for waiter in waiters:
            waiter.callback(None)


class _Collector:
    """
    A worker's end of L{JwksDocument}: joins the pieces and hands the
    document to the filter's source.
    """

    def __init__(self, filters):
        self._filters = filters
        self._pending = {}

    def document(self, filter, data, final):
        parts = self._pending.setdefault(filter, [])
        parts.append(data)
        if final:
            del self._pending[filter]
            target = self._filters().get(filter)
            source = getattr(target, "fetcher", None)
            if isinstance(source, MasterJwksSource):
                source.take(b"".join(parts))
        return {}


def register_worker_responders(control, filters):
    """
    Make a worker's C{control} take the JWKS documents of its C{jwt}
    filters (C{filters}: a callable returning its filters by name).
    """
    control.register(JwksDocument, _Collector(filters).document)


class JwksPart(MasterPart):
    """
    The master's C{jwks} service: one fetcher per C{jwt} filter with
    C{jwks_url}, each good document sent to every worker (and to each new
    worker before it begins).

    @ivar fetchers: filter name -> L{gatelayer.auth.fetch.JwksFetcher}.
    @ivar documents: filter name -> the last good document (bytes).
    """

    log = Logger()

    def __init__(self, config, reactor, controls, fetcher_factory=None):
        """
        @param controls: returns the connected workers' control channels.
        @param fetcher_factory: builds a fetcher from C{(reactor, settings)}
            (a L{gatelayer.auth.fetch.JwksFetcher} by default).
        """
        self.name = "jwks"
        self.reactor = reactor
        self._controls = controls
        self._factory = fetcher_factory or _fetcher
        self.fetchers = {}
        self.documents = {}
        self.specs = {}
        self._take(config)

    def _take(self, config):
        specs = {name: spec.settings for name, spec in config.filters.items()
                 if spec.type == "jwt" and spec.settings.jwks_url is not None}
        for name in list(self.fetchers):
            if name not in specs or _fetch_settings(specs[name]) != _fetch_settings(self.specs[name]):
                self.fetchers.pop(name).stop()
                self.documents.pop(name, None)
        for name, settings in specs.items():
            if name not in self.fetchers:
                fetcher = self._factory(self.reactor, settings)
                fetcher.on_document = lambda document, name=name: self._fetched(name, document)
                self.fetchers[name] = fetcher
                if self.running:
                    fetcher.start()
        self.specs = specs

    def _fetched(self, name, document):
        self.documents[name] = document
        for control in self._controls():
            push_document(control, name, document).addErrback(
                lambda f: self.log.failure("jwks: a worker did not take the keys of {filter}", f, filter=name))

    def startService(self):
        """
        Fetch every key set now, then keep them fresh.
        """
        super().startService()
        for fetcher in self.fetchers.values():
            fetcher.start()

    def stopService(self):
        """
        Stop fetching.
        """
        super().stopService()
        for fetcher in self.fetchers.values():
            fetcher.stop()

    def reconfigure(self, new_config):
        """
        A reload: keep the fetchers (and documents) of filters whose JWKS
        settings stayed, start those of new ones, stop the others.
        """
        self._take(new_config)

    def register(self, control, record=None):
        """
        Answer a worker's refetch requests.
        """
        def refetch(filter):
            fetcher = self.fetchers.get(filter)
            waiting = fetcher.refetch_for_unknown_key() if fetcher is not None else None
            if waiting is None:
                return {}
            return waiting.addCallback(lambda _: {})
        control.register(JwksRefetch, refetch)

    def sync(self, control):
        """
        Send a new worker every document fetched so far.
        """
        if not self.documents:
            return succeed(None)
        return gatherResults([push_document(control, name, document)
                              for name, document in self.documents.items()], consumeErrors=True)

    def status(self):
        """
        C{{"jwks": {filter: {"url", "keys"}}}} for C{/status}.
        """
        return {"jwks": {name: {"url": fetcher.url, "keys": len(fetcher.keys)}
                         for name, fetcher in sorted(self.fetchers.items())}}


def _fetch_settings(settings):
    return (settings.jwks_url, frozenset(settings.algorithms), settings.jwks_refresh, settings.jwks_timeout)


def _fetcher(reactor, settings):
    from gatelayer.auth.fetch import JwksFetcher
    return JwksFetcher(reactor, settings.jwks_url, settings.algorithms,
                       refresh=settings.jwks_refresh, timeout=settings.jwks_timeout)
