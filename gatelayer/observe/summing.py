"""
The master's sums of its workers' metrics: the last cumulative snapshot of
each worker slot, plus what the slot's earlier workers had counted when they
were replaced (the retired totals), so a counter summed over the gateway
never goes backwards when a worker dies or is respawned.

Pure: snapshots come in as the JSON-ready dicts
L{gatelayer.observe.metrics.WorkerMetrics.snapshot} makes.
"""

from gatelayer.observe.metrics import FAMILIES

__all__ = ["SlotTotals", "merge_into"]


def _kind(name):
    entry = FAMILIES.get(name)
    return entry[0] if entry is not None else None


def merge_into(target, families, gauges=True):
    """
    Add the series of C{families} (C{{name: [[labels, value], ...]}}, a
    snapshot) into C{target} (C{{name: {labels tuple: value}}}). Histogram
    values (lists) are added element by element. Gauges are skipped unless
    C{gauges}; unknown families and malformed series are ignored (a
    snapshot comes from another process).
    """
    for name, series in families.items():
        kind = _kind(name)
        if kind is None or (kind == "gauge" and not gauges) or not isinstance(series, list):
            continue
        width = len(FAMILIES[name][2])
        into = target.setdefault(name, {})
        for entry in series:
            try:
                labels, value = entry
                labels = tuple(str(label) for label in labels)
            except (TypeError, ValueError):
                continue
            if len(labels) != width:
                continue
            if kind == "histogram":
                if not isinstance(value, list):
                    continue
                current = into.get(labels)
                if current is None:
                    into[labels] = list(value)
                elif len(current) == len(value):
                    into[labels] = [a + b for a, b in zip(current, value)]
            elif isinstance(value, (int, float)):
                into[labels] = into.get(labels, 0) + value
    return target


class SlotTotals:
    """
    Per worker slot: the live worker's last snapshot (and who sent it) and
    the retired totals of the slot's earlier workers.

    @ivar live: slot -> C{(owner, requests, families)}; C{owner} is the
        worker's control channel (a snapshot from an earlier owner of the
        slot is never taken for the current one's).
    @ivar retired: slot -> C{(requests, families)} summed over the slot's
        earlier workers (counters and histograms; gauges die with a worker).
    """

    def __init__(self):
        self.live = {}
        self.retired = {}

    def update(self, slot, owner, requests, families):
        """
        Take the cumulative snapshot of the worker C{owner} in C{slot}. A
        different owner means the slot's worker was replaced: the previous
        one's last snapshot is retired first.
        """
        current = self.live.get(slot)
        if current is not None and current[0] is not owner:
            self.retire(slot, current[0])
        self.live[slot] = (owner, requests, families)

    def retire(self, slot, owner):
        """
        The worker C{owner} of C{slot} is gone: fold its last snapshot into
        the slot's retired totals (once; a stale owner is ignored).
        """
        current = self.live.get(slot)
        if current is None or current[0] is not owner:
            return
        del self.live[slot]
        requests, families = self.retired.get(slot, (0, {}))
        self.retired[slot] = (requests + current[1], merge_into(families, current[2], gauges=False))

    def slot_requests(self):
        """
        C{{slot: requests}} counted by every worker the slot has had.
        """
        out = {slot: requests for slot, (requests, _) in self.retired.items()}
        for slot, (_, requests, _) in self.live.items():
            out[slot] = out.get(slot, 0) + requests
        return out

    def totals(self):
        """
        C{{name: {labels: value}}}: every family summed over the live
        workers and the retired totals.
        """
        out = {}
        for _, families in self.retired.values():
            merge_into(out, {name: [[list(k), v] for k, v in series.items()]
                             for name, series in families.items()})
        for _, _, families in self.live.values():
            merge_into(out, families)
        return out
