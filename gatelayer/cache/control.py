"""
Purges and counters of the cache across workers: each worker keeps its own
memory store, so a purge goes to the master, which sends it to every
worker; the master's C{cache} part also gathers the workers' C{X-Cache}
counters for C{/status} and answers the admin C{POST /cache/purge}.
"""

import json

from twisted.internet.defer import DeferredList, succeed
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.web import resource, server

from gatelayer.service import MasterPart

__all__ = [
    "CachePart", "CachePurge", "CacheStats", "PurgeEverywhere", "PurgeResource", "key_of_url",
    "register_worker_responders", "worker_cache_filters",
]

_log = Logger(namespace="gatelayer.cache.control")


class CachePurge(amp.Command):
    """
    Master -> worker: remove the entries of a URL key, or of every URL key
    under a prefix, from each of the worker's cache filters.
    """

    commandName = b"CachePurge"
    arguments = [(b"key", amp.String(optional=True)), (b"prefix", amp.String(optional=True))]
    response = [(b"purged", amp.Integer())]


class PurgeEverywhere(amp.Command):
    """
    Worker -> master: a C{PURGE} a worker accepted, for the master to send
    to every worker (L{CachePurge}); answered with the total removed.
    """

    commandName = b"CachePurgeEverywhere"
    arguments = [(b"key", amp.String(optional=True)), (b"prefix", amp.String(optional=True))]
    response = [(b"purged", amp.Integer()), (b"workers", amp.Integer())]


class CacheStats(amp.Command):
    """
    Master -> worker: each cache filter's C{X-Cache} counters and store
    use, as JSON (C{{filter: {"HIT": n, ..., "entries": n, "bytes": n}}}).
    """

    commandName = b"CacheStats"
    arguments = []
    response = [(b"stats", amp.String())]


def key_of_url(url):
    """
    The URL key (bytes) of C{url} as an operator writes it
    (C{http://Example.com:8080/a?b}): the host lower-cased and the port
    dropped, as the cache filter keys requests
    (C{http://example.com/a?b}); anything that is not C{scheme://...} is
    taken as it is.
    """
    scheme, sep, rest = url.partition(b"://")
    if not sep:
        return url
    cut = min([i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0] or [len(rest)])
    authority, tail = rest[:cut], rest[cut:]
    if authority.startswith(b"["):
        host = authority[:authority.find(b"]") + 1] if b"]" in authority else authority
    else:
        host = authority.partition(b":")[0]
    if host.startswith(b"[") and host.endswith(b"]"):
        host = host[1:-1]
    return scheme.lower() + b"://" + host.lower() + tail


def worker_cache_filters(gateway):
    """
    The cache filters of C{gateway} (a worker's
    L{gatelayer.http.gateway.Gateway}), by name.
    """
    from gatelayer.filters.cache import CacheFilter
    return {name: flt for name, flt in gateway.filters.items() if isinstance(flt, CacheFilter)}


def register_worker_responders(control, filters):
    """
    Answer L{CachePurge} and L{CacheStats} on a worker's C{control}
    channel for the cache filters C{filters()} returns (a callable: the
    gateway is rebuilt on reload).
    """

    def purge(key=None, prefix=None):
        removed = 0
        for flt in filters().values():
            removed += flt.purge(key=key, prefix=prefix)
        return {"purged": removed}

    def stats():
        data = {}
        for name, flt in filters().items():
            row = dict(flt.counts)
            row["background_refreshes"] = flt.background_refreshes
            row["entries"] = len(flt.store)
            row["bytes"] = flt.store.used
            data[name] = row
        return {"stats": json.dumps(data).encode("utf-8")}

    control.register(CachePurge, purge)
    control.register(CacheStats, stats)


class CachePart(MasterPart):
    """
    The master's C{cache} service: sends purges to every worker and adds up
    their counters.
    """

    def __init__(self, controls):
        """
        @param controls: a callable returning the connected workers'
            control protocols.
        """
        self.name = "cache"
        self._controls = controls

    def register(self, control, record=None):
        """
        Let C{control}'s worker ask for a purge everywhere.
        """
        def everywhere(key=None, prefix=None):
            return self.purge(key=key, prefix=prefix).addCallback(
                lambda result: {"purged": result[0], "workers": result[1]})
        control.register(PurgeEverywhere, everywhere)

    def purge(self, key=None, prefix=None):
        """
        Send the purge to every connected worker; fires with C{(entries
        removed, workers that answered)}.
        """
        calls = [control.callRemote(CachePurge, key=key, prefix=prefix)
                 for control in self._controls() if getattr(control, "connected", True)]
        if not calls:
            return succeed((0, 0))

        def added(results):
            answered = [value["purged"] for ok, value in results if ok]
            if len(answered) < len(results):
                _log.warn("cache purge: {missing} of {total} workers did not answer",
                          missing=len(results) - len(answered), total=len(results))
            return sum(answered), len(answered)
        return DeferredList(calls, consumeErrors=True).addCallback(added)

    def status(self):
        """
        Each cache filter's counters and store use, summed over workers.
        """
        calls = [control.callRemote(CacheStats)
                 for control in self._controls() if getattr(control, "connected", True)]

        def added(results):
            total = {}
            for ok, value in results:
                if not ok:
                    continue
                for name, row in json.loads(value["stats"]).items():
                    into = total.setdefault(name, {})
                    for field, number in row.items():
                        into[field] = into.get(field, 0) + number
            return {"cache": total}
        return DeferredList(calls, consumeErrors=True).addCallback(added)


class PurgeResource(resource.Resource):
    """
    The admin C{POST /cache/purge?key=URL} or C{?prefix=URL}: the entries go
    from every worker; answered with C{{"purged": n, "workers": n}}.
    """

    isLeaf = True

    def __init__(self, master):
        super().__init__()
        self.master = master

    def _part(self):
        for part in self.master.parts():
            if isinstance(part, CachePart):
                return part
        return None

    @staticmethod
    def _answer(request, status, document):
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(document).encode("utf-8") + b"\n"

    def render_POST(self, request):
        """
        Purge what the query names, everywhere.
        """
        if request.postpath != [b"purge"]:
            return self._answer(request, 404, {"status": 404, "error": "use POST /cache/purge"})
        keys = request.args.get(b"key", [])
        prefixes = request.args.get(b"prefix", [])
        if len(keys) + len(prefixes) != 1 or not (keys or prefixes)[0]:
            return self._answer(request, 400, {
                "status": 400, "error": "give exactly one of key=URL or prefix=URL"})
        part = self._part()
        if part is None:
            return self._answer(request, 404, {"status": 404, "error": "no cache filter is configured"})
        key = key_of_url(keys[0]) if keys else None
        prefix = key_of_url(prefixes[0]) if prefixes else None

        def done(result):
            if not request._disconnected:
                request.write(self._answer(request, 200, {"purged": result[0], "workers": result[1]}))
                request.finish()
        part.purge(key=key, prefix=prefix).addCallback(done)
        return server.NOT_DONE_YET
