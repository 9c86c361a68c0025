"""
Reloading the whole configuration (SIGHUP or C{POST /reload}): what a new
configuration may change while the gateway runs (L{restart_problems},
L{describe_changes}, both pure), the outcome of one attempt
(L{ReloadOutcome}) and the master's side of applying it
(L{ConfigReloader}).

A reload is all or nothing: the new file is checked exactly as C{--check}
does (L{gatelayer.process.checking.check_config_file}); any problem keeps
the running configuration. A good one is taken by the master's parts
(health checks, certificates, IP lists), then by every worker, which
builds the new gateway beside the running one and switches new requests
to it (L{gatelayer.process.worker_reload}).
"""

from attrs import asdict, frozen
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.logger import Logger

from gatelayer.config import ConfigError
from gatelayer.process.checking import check_config_file
from gatelayer.process.generations import GenerationRoll
from gatelayer.process.sockets import BindError
from gatelayer.process.supervision import STARTUP_GRACE

__all__ = [
    "GENERATION_KEYS", "RESTART_KEYS", "ConfigReloader", "ReloadOutcome", "describe_changes",
    "generation_changes", "listener_changes", "restart_problems",
]

#: C{[gateway]} keys the master reads once at start (its worker slots, its
#: admin endpoint, its heartbeat watchdog): a reload that changes one is
#: refused (restart the gateway to change them).
RESTART_KEYS = ("workers", "admin", "admin_token_file", "heartbeat_timeout")

#: C{[gateway]} keys a worker reads once at start (its connection limits,
#: its HTTP server, its access log): a reload that changes one is applied
#: by a new generation of workers (L{generation_changes}).
GENERATION_KEYS = ("max_connections", "max_connections_per_ip", "idle_timeout", "http_server", "access_log")


def restart_problems(old, new):
    """
    What C{new} changes that a reload cannot apply to a gateway running
    C{old} (both L{gatelayer.config.model.GateConfig}): a C{[gateway]} key
    of L{RESTART_KEYS}, or the algorithm of a rate limit kept in Redis
    under the same filter name. Each problem names the section and key.
    (C{[tls:NAME]} sections and L{GENERATION_KEYS} roll a new generation
    of workers instead: L{generation_changes}.)
    """
    path = new.path
    problems = []
    for key in RESTART_KEYS:
        before, after = getattr(old.gateway, key), getattr(new.gateway, key)
        if before != after:
            problems.append(f"{path} [gateway] {key}: changed from {_shown(before)} to {_shown(after)}; "
                            "it is read at start only (restart the gateway to change it)")
    for name, spec in sorted(new.filters.items()):
        before = old.filters.get(name)
        if (spec.type == "rate_limit" and before is not None and before.type == "rate_limit"
                and spec.settings.store is not None
                and before.settings.algorithm != spec.settings.algorithm):
            problems.append(
                f"{path} [filter:{name}] algorithm: changed from {before.settings.algorithm} to "
                f"{spec.settings.algorithm} on a Redis store, whose counters for this filter have the "
                "other algorithm's form; give the filter a new name (its counters start afresh)")
    return problems


def listener_changes(old, new):
    """
    The listeners C{new} adds, removes or changes (compared by their whole
    spec, whatever their kind), as C{"[listener:NAME] added"} lines; a
    reload applies them with a new generation of workers
    (L{gatelayer.process.generations}).
    """
    old_listeners = {spec.name: spec for spec in old.listeners}
    new_listeners = {spec.name: spec for spec in new.listeners}
    lines = []
    for name in sorted(set(old_listeners) | set(new_listeners)):
        before, after = old_listeners.get(name), new_listeners.get(name)
        if before != after:
            what = "added" if before is None else "removed" if after is None else "changed"
            lines.append(f"listener:{name} {what}")
    return lines


def generation_changes(old, new):
    """
    What C{new} changes that the running workers read once, at start, so
    that a reload applies it with a new generation of workers
    (L{gatelayer.process.generations}): the listeners (L{listener_changes}),
    the C{[tls:NAME]} sections (a TLS listener's policy and certificate
    names are fixed when its context is built), the C{[gateway]} keys of
    L{GENERATION_KEYS} and the C{[tracing]} section (its exporter). One line each, e.g. C{"tls:main changed"} or
    C{"[gateway] idle_timeout changed"}; empty when the running workers can
    take C{new} themselves.
    """
    lines = listener_changes(old, new)
    for name in sorted(set(old.tls) | set(new.tls)):
        before, after = old.tls.get(name), new.tls.get(name)
        if before != after:
            what = "added" if before is None else "removed" if after is None else "changed"
            lines.append(f"tls:{name} {what}")
    for key in GENERATION_KEYS:
        if getattr(old.gateway, key) != getattr(new.gateway, key):
            lines.append(f"[gateway] {key} changed")
    if old.tracing != new.tracing:
        lines.append("[tracing] changed")
    return lines


def _shown(value):
    return "(none)" if value is None else repr(value)


def describe_changes(old, new):
    """
    One short line per section C{new} adds, removes or changes compared with
    C{old}, e.g. C{"upstream:users changed"}, in a stable order; empty when
    nothing changed.
    """
    lines = []
    if old.gateway != new.gateway:
        lines.append("gateway changed")
    lines.extend(listener_changes(old, new))
    kinds = (("tls", old.tls, new.tls), ("upstream", old.upstreams, new.upstreams),
             ("route", _by_name(old.routes), _by_name(new.routes)),
             ("filter", old.filters, new.filters))
    for kind, before, after in kinds:
        for name in sorted(set(before) | set(after)):
            if name not in before:
                lines.append(f"{kind}:{name} added")
            elif name not in after:
                lines.append(f"{kind}:{name} removed")
            elif before[name] != after[name]:
                lines.append(f"{kind}:{name} changed")
    if [r.name for r in old.routes] != [r.name for r in new.routes] and not any(
            line.startswith("route:") for line in lines):
        lines.append("routes reordered")
    return lines


def _by_name(routes):
    return {route.name: route for route in routes}


@frozen
class ReloadOutcome:
    """
    The outcome of one reload attempt, as C{/status} (C{reload}) and
    C{POST /reload} show it.

    @ivar at: when it was decided (the reactor's seconds).
    @ivar trigger: C{"SIGHUP"} or C{"POST /reload"}.
    @ivar ok: whether the new configuration is running.
    @ivar problems: why not (each naming file, section and key), or what
        went wrong in a worker after the master took it.
    @ivar generation: the configuration generation running afterwards
        (1 at start, one more per applied reload).
    @ivar digest: the running configuration's text digest afterwards.
    @ivar changes: the sections the reload changed (L{describe_changes}).
    @ivar busy: whether the attempt was refused because another one was
        still being applied.
    """

    at: float
    trigger: str
    ok: bool
    problems: tuple
    generation: int
    digest: str
    changes: tuple = ()
    busy: bool = False

    def as_dict(self):
        """
        The outcome as a JSON-ready dict.
        """
        data = asdict(self)
        data["problems"] = list(self.problems)
        data["changes"] = list(self.changes)
        return data


class ConfigReloader:
    """
    The master's side of a reload: check the file, refuse what needs a
    restart, hand a good configuration to the master's tree and to every
    worker, and remember the last outcome.

    @ivar generation: the running configuration's generation.
    @ivar digest: the running configuration's text digest.
    @ivar last: the last L{ReloadOutcome}, or L{None} before the first.
    """

    log = Logger()
    #: Triggers that, arriving while a reload is applied, are run once it is
    #: done instead of being refused (C{POST /reload} is refused: 409).
    queued_triggers = ("SIGHUP",)

    def __init__(self, master, reactor, check=check_config_file, workers=None, parts_for=None,
                 digest=None):
        """
        @param master: the L{gatelayer.process.master.MasterService}.
        @param check: checks a configuration file (L{check_config_file}'s
            signature); raises L{ConfigError}.
        @param workers: the C{--workers} override the master started with.
        @param parts_for: returns the master parts a configuration needs
            that are not among the names given (L{gatelayer.process.wiring.master_parts}
            bound to the reactor and the worker controls); they are added,
            registered on the running workers' channels and started.
        @param digest: the digest of the configuration the master started with.
        """
        self.master = master
        self.reactor = reactor
        self._check = check
        self.workers = workers
        self.parts_for = parts_for
        self.generation = 1
        self.digest = digest
        self.last = None
        self.roll = None
        self._running = False
        self._queued = []

    def status(self):
        """
        C{/status}'s C{reload} section: the running generation and digest
        and the last attempt.
        """
        draining = len(self.master.supervisor.retired)
        return {"generation": self.generation, "digest": self.digest,
                "draining_workers": draining,
                "last": self.last.as_dict() if self.last is not None else None}

    def reload(self, trigger):
        """
        Check the file the master runs and apply it all or nothing.

        @return: a Deferred firing with the L{ReloadOutcome} (never failing).
        """
        if self._running:
            if trigger in self.queued_triggers:
                # A signal means "the files changed": one more reload once
                # this one is done reads them all, however many arrived.
                queued = Deferred()
                self._queued.append(queued)
                return queued
            return maybeDeferred(
                self._outcome, trigger, ["a reload is already being applied; try again when it is done"],
                busy=True)
        self._running = True
        d = self._reload(trigger)

        def done(outcome):
            self._running = False
            if self._queued:
                waiters, self._queued = self._queued, []
                again = self.reload("SIGHUP")

                def tell(later):
                    for waiter in waiters:
                        waiter.callback(later)
                    return later
                again.addCallback(tell)
            return outcome
        return d.addBoth(done)

    @inlineCallbacks
    def _reload(self, trigger):
        master = self.master
        old = master.config
        try:
            checked = self._check(old.path, self.workers)
            problems = restart_problems(old, checked.config)
            rolling = generation_changes(old, checked.config)
            if rolling and not problems and master.supervisor.retired:
                problems = [f"{old.path}: {', '.join(rolling)} (applied by a new generation of workers), "
                            "but the previous generation of workers "
                            f"is still draining ({len(master.supervisor.retired)} left, at most "
                            f"{old.gateway.drain_timeout:g}s); reload again once it has exited"]
            if rolling and not problems:
                problems = self._prepare_parts(checked.config)
            if rolling and not problems:
                unused = master.listeners.rebind(checked.config.listeners, checked.config.gateway.workers)
        except BindError as e:
            problems = [f"{old.path}: {e}"]
        except ConfigError as e:
            problems = list(e.problems)
        except Exception as e:
            self.log.failure("reload: checking {path} failed", path=old.path)
            problems = [f"{old.path}: cannot be checked: {e}"]
        if problems:
            return self._outcome(trigger, problems)
        changes = describe_changes(old, checked.config)
        try:
            worker_problems = yield self._apply(checked, unused if rolling else None)
        except Exception as e:
            self.log.failure("reload: applying {path} failed", path=old.path)
            worker_problems = [f"applying the configuration failed: {e}"]
        return self._outcome(trigger, worker_problems, changes=changes, applied=True)

    def _prepare_parts(self, new_config):
        """
        Before a new generation: the parts that load files for the workers
        to come (certificates of new or changed C{[tls:NAME]} sections) load
        them now, all or nothing.

        @return: the problems, each naming file, section and key.
        """
        problems = []
        for part in self.master.parts():
            prepare = getattr(part, "prepare", None)
            if prepare is not None:
                problems.extend(prepare(new_config))
        return problems

    @inlineCallbacks
    def _apply(self, checked, unused_sockets=None):
        master = self.master
        self.generation += 1
        self.digest = checked.digest
        master.take_config(checked)
        missing = []
        if self.parts_for is not None:
            present = frozenset(master.child_names())
            missing = [part for part in self.parts_for(checked.config, present) if part.name not in present]
            master.add_parts(missing)
            for part in missing:
                # The running workers' commands to it (rate-limit takes)
                # are answered from now on, as a new worker's are.
                for record in list(master.supervisor.workers.values()):
                    if record.control is not None and record.control.connected:
                        part.register(record.control, record)
                if master.running:
                    part.startService()
        yield master.reconfigure(checked.config)
        # Parts re-read what they load from files (certificates, IP lists)
        # and push it to the workers. With a new generation, a part built
        # just now has read its files, and only the new workers need them.
        fresh = missing if unused_sockets is not None else []
        yield DeferredList([maybeDeferred(part.reload) for part in master.parts() if part not in fresh],
                           consumeErrors=True)
        if unused_sockets is not None:
            roll = GenerationRoll(master.supervisor, self.reactor, unused_sockets,
                                  max(STARTUP_GRACE, checked.config.gateway.heartbeat_timeout))
            self.roll = roll
            results = yield roll.start()
        else:
            results = yield master.supervisor.push_config(self.generation, checked.text)
        return [problem for problem in results if problem]

    def _outcome(self, trigger, problems, changes=(), applied=False, busy=False):
        """
        Decide and record the outcome of one attempt, and log it: every
        problem on its own line, naming section and key. This is the one
        place an outcome is made.
        """
        # Applied means the new configuration runs in the master and in
        # every worker (one that could not take it is replaced by a new one
        # running it): the problems left are reported, the outcome is ok.
        ok = applied
        outcome = ReloadOutcome(
            at=self.reactor.seconds(), trigger=trigger, ok=ok, problems=tuple(problems),
            generation=self.generation, digest=self.digest, changes=tuple(changes), busy=busy)
        if not busy:
            self.last = outcome
        if ok:
            self.log.info("{trigger}: configuration reloaded, generation {generation} ({digest}): "
                          "{changes}", trigger=trigger, generation=self.generation, digest=self.digest,
                          changes=", ".join(changes) or "no change")
            for problem in problems:
                self.log.error("{trigger}: {problem}", trigger=trigger, problem=problem)
        else:
            self.log.error("{trigger}: configuration not reloaded, generation {generation} keeps "
                           "running ({count} problem(s))", trigger=trigger, generation=self.generation,
                           count=len(problems))
            for problem in problems:
                self.log.error("{trigger}: reload problem: {problem}", trigger=trigger, problem=problem)
        return outcome
