"""
The control commands that hand a running worker a new configuration, and
both ends of them.

The master sends the checked configuration text in chunks
(L{ConfigChunk}: an AMP value holds at most 64 KiB), asks the worker to
build the new gateway beside the running one (L{PrepareConfig}: the worker
answers with the problems it met, none when all went well), sends it the
shared state a new worker gets (health verdicts, certificates, IP lists),
then tells it to switch (L{CommitConfig}). Requests that started before
the switch finish on the gateway they started on.
"""

import hashlib

from twisted.internet.defer import DeferredList, inlineCallbacks, maybeDeferred
from twisted.logger import Logger
from twisted.protocols import amp


__all__ = ["CHUNK", "CommitConfig", "ConfigChunk", "ConfigReceiver", "PrepareConfig", "push_config",
           "push_to_workers"]

#: Bytes of configuration text per L{ConfigChunk}.
CHUNK = 60000


class ConfigChunk(amp.Command):
    """
    Master -> worker: the next piece of configuration C{generation}'s text
    (UTF-8).
    """

    arguments = [(b"generation", amp.Integer()), (b"data", amp.String())]
    response = []


class PrepareConfig(amp.Command):
    """
    Master -> worker: build the gateway of configuration C{generation} from
    the chunks received (whose SHA-256 is C{digest}) without switching to
    it yet; the answer lists what went wrong (nothing when it is ready).
    """

    arguments = [(b"generation", amp.Integer()), (b"digest", amp.Unicode())]
    response = [(b"problems", amp.ListOf(amp.Unicode()))]


class CommitConfig(amp.Command):
    """
    Master -> worker: new requests go to the prepared gateway of
    C{generation} from now on.
    """

    arguments = [(b"generation", amp.Integer())]
    response = []


@inlineCallbacks
def push_config(control, generation, text, sync=()):
    """
    Hand one worker configuration C{generation} (C{text}).

    @param control: the worker's L{gatelayer.process.control.ControlProtocol}.
    @param sync: functions of C{control} sending the worker the shared
        state a new worker gets (the master parts' C{sync}); called between
        the prepare and the switch.
    @return: a Deferred firing with the worker's problems (empty: it
        switched).
    """
    data = text.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    for offset in range(0, max(len(data), 1), CHUNK):
        yield control.callRemote(ConfigChunk, generation=generation, data=data[offset:offset + CHUNK])
    answer = yield control.callRemote(PrepareConfig, generation=generation, digest=digest)
    if answer["problems"]:
        return list(answer["problems"])
    results = yield DeferredList([maybeDeferred(s, control) for s in sync], consumeErrors=True)
    for ok, result in results:
        if not ok:
            return [f"the shared state could not be sent: {result.getErrorMessage()}"]
    yield control.callRemote(CommitConfig, generation=generation)
    return []


class ConfigReceiver:
    """
    A worker's end: collects the chunks, prepares the new gateway with
    C{prepare(text)} and switches with C{commit()}.
    """

    log = Logger()

    def __init__(self, prepare, commit):
        """
        @param prepare: builds the gateway of a configuration text without
            switching to it; returns the problems met (a list of strings).
        @param commit: switches new requests to the prepared gateway.
        """
        self._prepare = prepare
        self._commit = commit
        self._generation = None
        self._chunks = []
        self.prepared = None

    def register(self, control):
        """
        Answer the master's configuration commands on C{control}.
        """
        control.register(ConfigChunk, self.chunk)
        control.register(PrepareConfig, self.prepare)
        control.register(CommitConfig, self.commit)
        return self

    def chunk(self, generation, data):
        """
        The L{ConfigChunk} responder.
        """
        if generation != self._generation:
            self._generation, self._chunks = generation, []
        self._chunks.append(data)
        return {}

    def prepare(self, generation, digest):
        """
        The L{PrepareConfig} responder.
        """
        data = b"".join(self._chunks) if generation == self._generation else b""
        self._chunks = []
        if hashlib.sha256(data).hexdigest() != digest:
            return {"problems": [f"configuration {generation} arrived incomplete"]}
        try:
            text = data.decode("utf-8")
            problems = list(self._prepare(text))
        except Exception as e:
            self.log.failure("configuration {generation} could not be prepared", generation=generation)
            problems = [f"configuration {generation} could not be prepared: {e}"]
        self.prepared = generation if not problems else None
        return {"problems": problems}

    def commit(self, generation):
        """
        The L{CommitConfig} responder.
        """
        if self.prepared != generation:
            raise RuntimeError(f"configuration {generation} is not prepared")
        self.prepared = None
        self._commit()
        return {}


def push_to_workers(workers, generation, text, syncs, drain_timeout):
    """
    Hand every connected worker among C{workers} (the master's
    L{gatelayer.process.supervision.WorkerRecord}s) configuration
    C{generation} (L{push_config}), with C{syncs}: the state each master
    part sends a new worker. A worker that cannot take it is drained within
    C{drain_timeout} and replaced by a new one, which starts on it.

    @return: a Deferred firing with a list of problems (one per worker
        replaced).
    """
    from gatelayer.process.supervision import drain_worker  # master-only: not loaded by workers
    records, pushes = [], []
    for record in workers:
        if record.control is None or not record.control.connected:
            continue
        records.append(record)
        pushes.append(push_config(record.control, generation, text, syncs))

    def replaced(results):
        problems = []
        for record, (ok, result) in zip(records, results):
            if ok and not result:
                continue
            why = "; ".join(result) if ok else result.getErrorMessage()
            problems.append(f"worker {record.slot} (pid {record.pid}) could not take configuration "
                            f"{generation} ({why}); it is replaced by a new worker")
            drain_worker(record, drain_timeout)
        return problems
    return DeferredList(pushes, consumeErrors=True).addCallback(replaced)
