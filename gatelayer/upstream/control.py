"""
Control-channel commands for upstream health, between the master (which runs
the active checks) and the workers (which balance requests).

The master pushes every verdict change to all workers with L{HealthChanged},
sends the full current picture to a newly spawned worker with
L{HealthStates}, and collects per-server counters from each worker with
L{UpstreamStatus} for the admin /status.
"""

from twisted.internet.defer import DeferredList, succeed
from twisted.logger import Logger
from twisted.protocols import amp

__all__ = [
    "HealthChanged",
    "HealthStates",
    "UpstreamStatus",
    "register_worker_responders",
    "push_health_change",
    "push_all_states",
    "collect_status",
]

_log = Logger(namespace="gatelayer.upstream.control")

# An AMP value is at most 65535 bytes; a batch of this many verdicts stays
# well below that even with long host names.
_BATCH = 200


class HealthChanged(amp.Command):
    """
    Master -> worker: the active checks changed their verdict on one server.
    """

    arguments = [
        (b"upstream", amp.Unicode()),
        (b"address", amp.Unicode()),
        (b"healthy", amp.Boolean()),
    ]
    response = []


class HealthStates(amp.Command):
    """
    Master -> worker: the verdict on many servers at once (sent to a worker
    when it starts, in batches).
    """

    arguments = [
        (b"states", amp.AmpList([
            (b"upstream", amp.Unicode()),
            (b"address", amp.Unicode()),
            (b"healthy", amp.Boolean()),
        ])),
    ]
    response = []


_STATUS_FIELDS = [
    (b"address", amp.Unicode()),
    (b"weight", amp.Integer()),
    (b"backup", amp.Boolean()),
    (b"down", amp.Boolean()),
    (b"healthy", amp.Boolean()),
    (b"ejected", amp.Boolean()),
    (b"active", amp.Integer()),
    (b"requests", amp.Integer()),
    (b"failures", amp.Integer()),
    (b"ejections", amp.Integer()),
]


class UpstreamStatus(amp.Command):
    """
    Master -> worker: this worker's view of one upstream's servers
    (L{gatelayer.upstream.state.UpstreamState.snapshot}); an unknown upstream
    gives an empty list.
    """

    arguments = [(b"upstream", amp.Unicode())]
    response = [(b"servers", amp.AmpList(_STATUS_FIELDS))]


def _lookup(states):
    if callable(states):
        return states
    return lambda: states


def register_worker_responders(protocol, states):
    """
    Make the worker's control C{protocol} (a
    L{gatelayer.process.control.ControlProtocol}) answer the commands of this
    module.

    @param states: the worker's dict of upstream name to
        L{gatelayer.upstream.state.UpstreamState}, or a callable returning
        the current one (so a configuration reload can swap the dict).
    """
    current = _lookup(states)

    def health_changed(upstream, address, healthy):
        state = current().get(upstream)
        if state is None or not state.set_healthy(address, healthy):
            _log.debug("health change for unknown server {upstream} {address} ignored",
                       upstream=upstream, address=address)
        return {}

    def health_states(states):
        known = current()
        for entry in states:
            state = known.get(entry["upstream"])
            if state is not None:
                state.set_healthy(entry["address"], entry["healthy"])
        return {}

    def upstream_status(upstream):
        state = current().get(upstream)
        if state is None:
            return {"servers": []}
        keys = [name.decode("ascii") for name, _ in _STATUS_FIELDS]
        return {"servers": [{k: row[k] for k in keys} for row in state.snapshot()]}

    protocol.register(HealthChanged, health_changed)
    protocol.register(HealthStates, health_states)
    protocol.register(UpstreamStatus, upstream_status)


def _logged(d, what, **fields):
    def failed(failure):
        _log.warn("could not send {what} to a worker: {error}", what=what,
                  error=failure.getErrorMessage(), **fields)
        return None
    return d.addErrback(failed)


def push_health_change(protocols, upstream, address, healthy):
    """
    Send one verdict change to every worker's control protocol in
    C{protocols}. A worker that cannot be reached (it is exiting; its
    replacement gets the whole picture from L{push_all_states}) is logged and
    skipped.

    @return: a Deferred firing with L{None} once every worker answered or
        failed.
    """
    sends = []
    for protocol in protocols:
        if not getattr(protocol, "connected", True):
            continue
        sends.append(_logged(
            protocol.callRemote(HealthChanged, upstream=upstream, address=address, healthy=healthy),
            "a health change", upstream=upstream, address=address))
    if not sends:
        return succeed(None)
    return DeferredList(sends).addCallback(lambda _: None)


def push_all_states(protocol, monitor):
    """
    Send every current verdict of C{monitor} (a
    L{gatelayer.upstream.health.HealthMonitor}, or anything with
    C{states()}) to one worker, typically right after it was spawned.

    @return: a Deferred firing with L{None} once the worker has them (or the
        send failed, which is logged).
    """
    entries = [
        {"upstream": name, "address": address, "healthy": healthy}
        for name, servers in sorted(monitor.states().items())
        for address, healthy in servers.items()
    ]
    sends = [
        _logged(protocol.callRemote(HealthStates, states=entries[i:i + _BATCH]), "health states")
        for i in range(0, len(entries), _BATCH)
    ]
    if not sends:
        return succeed(None)
    return DeferredList(sends).addCallback(lambda _: None)


def collect_status(protocols, upstreams):
    """
    Ask every worker for its view of each upstream named in C{upstreams} and
    add them up, for the admin /status.

    @return: a Deferred firing with upstream name -> list of per-server dicts
        (C{address}, C{weight}, C{backup}, C{down}, C{healthy}, C{ejected}
        and the sums of C{active}, C{requests}, C{failures}, C{ejections}
        over the workers that answered; C{ejected} is true if any worker has
        the server ejected, C{ejected_by} counts those workers).
    """
    names = list(upstreams)
    calls = []
    for protocol in protocols:
        if not getattr(protocol, "connected", True):
            continue
        for name in names:
            calls.append((name, protocol.callRemote(UpstreamStatus, upstream=name)))
    if not calls:
        return succeed({name: [] for name in names})

    def merge(results):
        merged = {name: {} for name in names}
        for (name, _), (ok, answer) in zip(calls, results):
            if not ok:
                _log.warn("a worker did not report upstream {upstream}: {error}",
                          upstream=name, error=answer.getErrorMessage())
                continue
            rows = merged[name]
            for row in answer["servers"]:
                total = rows.get(row["address"])
                if total is None:
                    total = rows[row["address"]] = dict(row, ejected_by=0, active=0, requests=0,
                                                        failures=0, ejections=0, ejected=False)
                for key in ("active", "requests", "failures", "ejections"):
                    total[key] += row[key]
                if row["ejected"]:
                    total["ejected"] = True
                    total["ejected_by"] += 1
                total["healthy"] = row["healthy"]
        return {name: list(rows.values()) for name, rows in merged.items()}

    return DeferredList([d for _, d in calls], consumeErrors=True).addCallback(merge)
