"""
Metrics over the control channel: each worker sends its cumulative snapshot
to the master every heartbeat and when the master asks for a fresh one
(a scrape of C{/metrics}); L{MetricsPart} is the master's C{metrics}
service, which sums them (L{gatelayer.observe.summing.SlotTotals}), adds the
master's own families and renders the Prometheus text.

A snapshot travels as zlib-compressed JSON cut into chunks, since one AMP
value holds at most 64 KiB.
"""

import datetime
import json
import zlib

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.protocols import amp

from gatelayer.observe.exposition import exposition
from gatelayer.observe.summing import SlotTotals
from gatelayer.service import MasterPart

__all__ = ["CHUNK", "COLLECT_TIMEOUT", "CollectMetrics", "MetricsChunk", "MetricsPart", "WorkerReporter"]

#: The largest chunk of a snapshot in one AMP value.
CHUNK = 60000
#: Seconds a scrape waits for the workers' fresh snapshots before it uses
#: the last ones they sent.
COLLECT_TIMEOUT = 0.5
# A worker sending more chunks than this for one snapshot is ignored.
_MAX_CHUNKS = 64


class MetricsChunk(amp.Command):
    """
    Worker -> master: one chunk of the worker's cumulative snapshot
    C{generation}; the snapshot is whole when chunk C{total - 1} arrives.
    """

    commandName = b"MetricsChunk"
    arguments = [
        (b"generation", amp.Integer()),
        (b"index", amp.Integer()),
        (b"total", amp.Integer()),
        (b"data", amp.String()),
    ]
    response = []
    requiresAnswer = False


class CollectMetrics(amp.Command):
    """
    Master -> worker: send a snapshot now; the answer comes after its
    chunks, so the master has it when the answer arrives.
    """

    commandName = b"CollectMetrics"
    arguments = []
    response = [(b"generation", amp.Integer())]


def encode_snapshot(requests, families):
    """
    The chunks (bytes) of a snapshot.
    """
    data = zlib.compress(json.dumps({"requests": requests, "families": families},
                                    separators=(",", ":")).encode("utf-8"), 1)
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]


def decode_snapshot(data):
    """
    C{(requests, families)} of a snapshot's joined chunks.

    @raise ValueError: it is not one.
    """
    try:
        document = json.loads(zlib.decompress(data).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError) as e:
        raise ValueError(str(e)) from None
    if not isinstance(document, dict):
        raise ValueError("not an object")
    requests, families = document.get("requests"), document.get("families")
    if not isinstance(requests, int) or not isinstance(families, dict):
        raise ValueError("no requests or families")
    return requests, families


class WorkerReporter:
    """
    A worker's side: sends L{gatelayer.observe.metrics.WorkerMetrics}
    snapshots to the master on C{control}.
    """

    def __init__(self, metrics, control):
        self.metrics = metrics
        self.control = control
        self.generation = 0

    def register(self):
        """
        Answer the master's L{CollectMetrics}.
        """
        self.control.register(CollectMetrics, self._collect)
        return self

    def send(self):
        """
        Send the current snapshot (a heartbeat's, or one asked for).
        """
        if not self.control.connected:
            return self.generation
        self.generation += 1
        chunks = encode_snapshot(self.metrics.requests, self.metrics.snapshot())
        for index, chunk in enumerate(chunks):
            self.control.callRemote(MetricsChunk, generation=self.generation, index=index,
                                    total=len(chunks), data=chunk)
        return self.generation

    def _collect(self):
        return {"generation": self.send()}


class MetricsPart(MasterPart):
    """
    The master's C{metrics} service: takes each worker's snapshots, sums
    them per slot (keeping what replaced workers had counted), and renders
    C{GET /metrics} with the master's own families (health verdicts,
    worker restarts, reloads, certificate expiry).
    """

    log = Logger()

    def __init__(self, reactor, controls, health=None, certificates=None,
                 collect_timeout=COLLECT_TIMEOUT, crash_loop=5):
        """
        @param controls: returns the connected workers' control channels.
        @param health: the master's L{gatelayer.upstream.health.HealthMonitor}
            and the upstream specs, as C{(monitor, upstreams)}, or L{None}.
        @param certificates: the L{gatelayer.tls.control.CertificateReloader},
            or L{None}.
        @param crash_loop: how many quick exits in a row make a crash loop
            (the supervision's C{CRASH_LOOP}).
        """
        self.name = "metrics"
        self.crash_loop = crash_loop
        self.reactor = reactor
        self._controls = controls
        self.health = health
        self.certificates = certificates
        self.collect_timeout = collect_timeout
        self.totals = SlotTotals()
        self.records = {}
        self.reloads = {"ok": 0, "failed": 0}
        self.last_reload_ok = True
        self._chunks = {}

    # -- workers -----------------------------------------------------------

    def register(self, control, record):
        """
        Take this worker's snapshot chunks; its slot's previous worker is
        retired.
        """
        self.records[record.slot] = record
        previous = self.totals.live.get(record.slot)
        if previous is not None:
            self.totals.retire(record.slot, previous[0])

        def chunk(generation, index, total, data):
            self._chunk(record.slot, control, generation, index, total, data)
            return {}
        control.register(MetricsChunk, chunk)

    def _chunk(self, slot, control, generation, index, total, data):
        if not 0 < total <= _MAX_CHUNKS or not 0 <= index < total:
            return
        parts = self._chunks.get(control)
        if index == 0 or parts is None or parts[0] != generation:
            parts = self._chunks[control] = (generation, [])
        if len(parts[1]) != index:
            return
        parts[1].append(data)
        if index < total - 1:
            return
        del self._chunks[control]
        try:
            requests, families = decode_snapshot(b"".join(parts[1]))
        except ValueError as e:
            self.log.warn("worker {slot}: bad metrics snapshot ignored: {error}", slot=slot, error=str(e))
            return
        if self.records.get(slot) is not None and self.records[slot].control not in (None, control):
            return
        self.totals.update(slot, control, requests, families)

    def refresh(self):
        """
        Ask every connected worker for a fresh snapshot; fires when all
        answered or after C{collect_timeout}, whichever is first (the last
        snapshots stand in for the late ones).
        """
        self._retire_gone()
        asks = []
        for control in self._controls():
            d = control.callRemote(CollectMetrics)
            d.addErrback(lambda f: None)
            asks.append(d)
        if not asks:
            return succeed(None)
        result = Deferred()

        def fire(_=None):
            if not result.called:
                result.callback(None)
            if timer.active():
                timer.cancel()
        timer = self.reactor.callLater(self.collect_timeout, fire)
        DeferredList(asks, consumeErrors=True).addBoth(fire)
        return result

    def _retire_gone(self):
        for slot, (owner, _, _) in list(self.totals.live.items()):
            if not getattr(owner, "connected", False):
                self.totals.retire(slot, owner)
                self._chunks.pop(owner, None)

    def scrape(self):
        """
        The C{/metrics} body: a Deferred firing with the text exposition
        once the workers answered (or the wait is over).
        """
        return self.refresh().addCallback(lambda _: exposition(self.values))

    def reconfigure(self, new_config):
        """
        Name the servers of C{new_config}'s upstreams from now on.
        """
        if self.health is not None:
            self.health = (self.health[0], new_config.upstreams)

    # -- the master's own ---------------------------------------------------

    def reloaded(self, outcome):
        """
        Count one configuration reload (SIGHUP or C{POST /reload}): applied
        (C{outcome.ok}) or refused.
        """
        self.reloads["ok" if outcome.ok else "failed"] += 1
        self.last_reload_ok = outcome.ok

    def values(self):
        """
        Every family's summed values: C{{name: {labels: value}}}.
        """
        self._retire_gone()
        out = self.totals.totals()
        slots = self.totals.slot_requests()
        records = self.records
        out["gatelayer_worker_requests_total"] = {
            (str(slot),): slots.get(slot, 0) for slot in sorted(set(slots) | set(records))}
        out["gatelayer_worker_restarts_total"] = {(str(s),): r.restarts for s, r in records.items()}
        out["gatelayer_worker_crash_loop"] = {
            (str(s),): int(r.quick_deaths >= self.crash_loop) for s, r in records.items()}
        out["gatelayer_workers"] = {(): sum(1 for r in records.values() if r.serving)}
        out["gatelayer_reloads_total"] = {(k,): v for k, v in self.reloads.items()}
        out["gatelayer_reload_last_success"] = {(): int(self.last_reload_ok)}
        if self.health is not None:
            out["gatelayer_upstream_server_up"] = server_up(*self.health)
        if self.certificates is not None:
            out["gatelayer_tls_certificate_expiry_timestamp_seconds"] = certificate_expiry(
                self.certificates.current)
        return out


def server_up(monitor, upstreams):
    """
    C{{(upstream, server): 1 or 0}}: the monitor's verdict for each checked
    server; a server without active checks is 1 (0 when marked C{down}).
    """
    verdicts = monitor.status()
    out = {}
    for name, spec in upstreams.items():
        for server in spec.servers:
            detail = verdicts.get(name, {}).get(server.address)
            if server.down:
                up = 0
            elif detail is not None:
                up = int(bool(detail["healthy"]))
            else:
                up = 1
            out[(name, server.address)] = up
    return out


def certificate_expiry(current):
    """
    C{{(tls, host): not-after as Unix time}} of every certificate of the
    current sets (C{{tls name: certificate set}}), per name it serves.
    """
    out = {}
    for tls_name, certificate_set in current.items():
        for entry in certificate_set.entries:
            stamp = entry.not_after.replace(tzinfo=datetime.timezone.utc).timestamp()
            for host in entry.names or ("-",):
                key = (tls_name, host)
                out[key] = min(out.get(key, stamp), stamp)
    return out
