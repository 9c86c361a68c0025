"""
How the subsystems plug into the worker and master processes: TLS, health
state, the embedded rate-limit store, IP lists, JWKS documents. Kept apart from the process mechanics
so those stay small and testable.

Each master part is a named service of the master's tree providing
L{gatelayer.service.IMasterPart}: C{register(control, record)} (answer a
worker's commands), C{sync(control)} (send a new worker the current state
before it starts; may return a Deferred), C{status()} (a dict or a Deferred
of one, merged into /status), C{reload()} (SIGHUP) and
C{reconfigure(new_config)}; it starts and stops as a service.
"""

import datetime

from twisted.internet.defer import succeed
from twisted.logger import Logger

from gatelayer.config import ConfigError
from gatelayer.process.control import ReopenLogs
from gatelayer.process.reconfigure import ConfigReceiver
from gatelayer.service import MasterPart

from gatelayer.upstream.control import (
    collect_status, push_all_states, push_health_change, register_worker_responders,
)
from gatelayer.upstream.health import HealthMonitor

log = Logger()


def worker_tls(config, control, reactor):
    """
    For a worker: the TLS listener wrapper and the upstream TLS creator
    factory (the certificate transfer responders are registered on
    C{control}; the master fills them before the worker begins). A worker
    started without TLS (L{gatelayer.process.footprint}) has neither.
    """
    from gatelayer.process.footprint import tls_left_out
    if tls_left_out():
        return None, None
    from gatelayer.tls.parts import worker_tls as tls_worker
    return tls_worker(config, control, reactor)


def register_worker(config, control, worker):
    """
    Make a worker's control channel answer the master's pushes.
    """
    # While a new configuration is being prepared, the master's state
    # (health verdicts, IP lists) goes to its gateway (see
    # gatelayer.process.worker_reload).
    reloads = worker.reloads
    control.register(ReopenLogs, worker.reopen_logs)
    register_worker_responders(control, reloads.incoming_states)
    shared = SharedStateResponders(control, worker)
    shared.register_for(config)

    def prepare(text):
        problems = reloads.prepare(text)
        if not problems and reloads.pending is not None:
            # before the master sends the new configuration's shared state
            shared.register_for(reloads.pending[0])
        return problems
    ConfigReceiver(prepare, reloads.commit).register(control)


class SharedStateResponders:
    """
    The responders of a worker for the state its master shares among
    workers of filters (cache purges, IP lists, JWKS keys), registered for
    the filter types a configuration has: at start, and when a reload that
    adds one is prepared (before the master sends that state). A worker
    without such filters never loads their modules (the JWKS one loads the
    JWT library and C{cryptography}, the cache one C{twisted.web.server}).
    """

    def __init__(self, control, worker):
        self._control = control
        self._worker = worker
        self.registered = set()

    def register_for(self, config):
        """
        Register what C{config}'s filter types need and is not registered
        yet.
        """
        types = {spec.type for spec in config.filters.values()}
        control, worker, reloads = self._control, self._worker, self._worker.reloads
        if "cache" in types and "cache" not in self.registered:
            from gatelayer.cache.control import register_worker_responders as cache_responders
            from gatelayer.cache.control import worker_cache_filters
            cache_responders(control, lambda: worker_cache_filters(worker.gateway))
            self.registered.add("cache")
        if "ip_filter" in types and "ip_filter" not in self.registered:
            from gatelayer.filters.iplists import register_worker_responders as take_ip_lists
            take_ip_lists(control, lambda: reloads.incoming().filters)
            self.registered.add("ip_filter")
        if "jwt" in types and "jwt" not in self.registered:
            from gatelayer.filters.jwks_shared import register_worker_responders as take_jwks
            take_jwks(control, lambda: reloads.incoming().filters)
            self.registered.add("jwt")


class HealthPart(MasterPart):
    """
    The master's C{health} service: active health checks, each change
    pushed to every worker.
    """

    def __init__(self, master_controls, config, reactor, tls_creators=None):
        self.name = "health"
        self._controls = master_controls
        self.config = config
        self.monitor = HealthMonitor(
            reactor, config.upstreams, on_change=self._changed, tls_creators=tls_creators)

    def _changed(self, upstream, address, healthy):
        push_health_change(self._controls(), upstream, address, healthy)

    def sync(self, control):
        """
        Send a new worker every current verdict.
        """
        return push_all_states(control, self.monitor)

    def startService(self):
        """
        Start checking.
        """
        super().startService()
        self.monitor.start()

    def stopService(self):
        """
        Stop checking; fires once no probe is in flight.
        """
        super().stopService()
        return self.monitor.stop()

    def reconfigure(self, new_config):
        """
        Check the upstreams of C{new_config}: kept servers keep their
        verdicts (L{HealthMonitor.reconfigure}); TLS upstreams are probed
        with their C{ca} and C{client_certificate} as read now.
        """
        from gatelayer.tls.parts import upstream_tls_creators
        self.config = new_config
        self.monitor.set_tls_creators(upstream_tls_creators(new_config))
        return self.monitor.reconfigure(new_config.upstreams)

    def status(self):
        """
        Per-upstream server rows summed over workers, with health details.
        """
        health = self.monitor.status()

        def merge(rows):
            out = {}
            for name, servers in rows.items():
                for row in servers:
                    detail = health.get(name, {}).get(row["address"])
                    if detail is not None:
                        row["health_check"] = detail
                out[name] = servers
            return {"upstreams": out}
        return collect_status(self._controls(), list(self.config.upstreams)).addCallback(merge)


class CertificateService(MasterPart):
    """
    The master's C{tls} service: the certificate store
    (L{gatelayer.tls.parts.CertificatePart}), sent to each new worker and
    reloaded on SIGHUP.
    """

    def __init__(self, part):
        """
        @param part: the loaded L{CertificatePart}.
        """
        self.name = "tls"
        self.part = part
        self._prepared = None
        self._held = False

    def prepare(self, new_config):
        """
        A reload whose C{[tls:NAME]} sections differ from the running ones
        (it is applied by a new generation of workers): load their
        certificates now, all or nothing, for L{reconfigure} to serve.

        @return: the problems, each naming the file, section and reason.
        """
        specs = dict(new_config.tls)
        self._prepared = None
        if specs == self.part.reloader.specs:
            return []
        sets, problems = self.part.reloader.prepare(specs)
        if problems:
            return [f"{new_config.path} [tls:{name}]: {error}" for name, error in problems]
        self._prepared = (specs, sets)
        return []

    def reconfigure(self, new_config):
        """
        Serve the certificates L{prepare} loaded for C{new_config}'s
        sections; the workers of the new generation get them as they start
        (L{sync}), and the next L{reload} does not push them to the workers
        of the old one, which do not know the new sections.
        """
        specs = dict(new_config.tls)
        if specs == self.part.reloader.specs:
            return
        prepared, self._prepared = self._prepared, None
        if prepared is None or prepared[0] != specs:
            ok, result = self.part.reloader.reload(specs)
            if not ok:
                raise result
        else:
            self.part.reloader.install(*prepared)
        self._held = True

    def sync(self, control):
        """
        Send a new worker the current certificates.
        """
        return self.part.sync(control)

    def reload(self):
        """
        Re-read every certificate; push them only if all are good. Right
        after L{reconfigure} changed the sections, the certificates were
        just read and only the new workers need them: nothing is pushed.
        """
        if self._held:
            self._held = False
            return succeed((True, []))
        return self.part.reload()

    def status(self):
        """
        The certificates and the last reload, for C{/status}.
        """
        return self.part.status()


def master_parts(config, reactor, controls, skip=frozenset()):
    """
    The master-side subsystems for C{config}.

    @param controls: a callable returning the connected workers' control
        protocols.
    @param skip: names of parts not to build (a reload: those running).
    """
    from gatelayer.tls.parts import CertificatePart, upstream_tls_creators
    parts = []
    filter_types = {spec.type for spec in config.filters.values()}
    certificates = health = None
    if config.tls and "tls" not in skip:
        certificates = CertificatePart(config, reactor, controls)
        parts.append(CertificateService(certificates))
    if any(spec.ocsp_staple for spec in config.tls.values()) and "ocsp" not in skip:
        # Stapling follows the certificates the tls part serves: the one
        # just made, or (a reload turning stapling on) the running one.
        from gatelayer.tls.ocsp_control import StaplingPart
        parts.append(StaplingPart(certificates.reloader if certificates else None, reactor, controls))
    if config.tls and "tickets" not in skip:
        from gatelayer.tls.ticket_control import TicketKeyPart
        parts.append(TicketKeyPart(config, reactor, controls))
    if config.upstreams and "health" not in skip:
        health = HealthPart(controls, config, reactor, tls_creators=upstream_tls_creators(config))
        parts.append(health)
    if "rate_limit" in filter_types and "ratelimit" not in skip:
        from gatelayer.ratelimit.control import EmbeddedStorePart
        parts.append(EmbeddedStorePart(reactor))
    if "cache" in filter_types and "cache" not in skip:
        from gatelayer.cache.control import CachePart
        parts.append(CachePart(controls))
    if (any(spec.type == "ip_filter" and spec.settings.files for spec in config.filters.values())
            and "ip_lists" not in skip):
        from gatelayer.filters.iplists import IpListsPart
        parts.append(IpListsPart(config, controls))
    if (any(spec.type == "jwt" and spec.settings.jwks_url for spec in config.filters.values())
            and "jwks" not in skip):
        from gatelayer.filters.jwks_shared import JwksPart
        parts.append(JwksPart(config, reactor, controls))
    if config.gateway.metrics and "metrics" not in skip:
        parts.append(metrics_part(config, reactor, controls, health, certificates))
    return parts


def metrics_part(config, reactor, controls, health=None, certificates=None):
    """
    The master's C{metrics} part: sums the workers' snapshots and adds the
    health verdicts of C{health} (a L{HealthPart}) and the expiry of the
    certificates of C{certificates} (a L{CertificatePart}). Last of the
    parts, so a SIGHUP has reloaded the certificates when it counts the
    reload.
    """
    from gatelayer.observe.control import MetricsPart
    from gatelayer.process.supervision import CRASH_LOOP
    return MetricsPart(
        reactor, controls,
        health=(health.monitor, config.upstreams) if health is not None else None,
        certificates=certificates.reloader if certificates is not None else None,
        crash_loop=CRASH_LOOP)


def validate_runtime(config):
    """
    Checks that need more than the config parser: loading certificates,
    keys and stores the config names. Raises L{ConfigError} listing every
    problem.
    """
    from gatelayer.tls.policy import PolicyError, check_policy
    from gatelayer.tls.store import CertificateError, load_certificate_set
    from gatelayer.tls.upstream import upstream_tls_creator
    from gatelayer.tls.ocsp import OCSPError
    problems = []
    for name, spec in config.tls.items():
        try:
            check_policy(spec)
            certificate_set = load_certificate_set(spec)
            if spec.ocsp_staple and spec.ocsp_staple != "auto":
                from gatelayer.tls.ocsp_fetch import read_staple_file
                read_staple_file(spec, certificate_set, datetime.datetime.now(datetime.timezone.utc))
        except (CertificateError, PolicyError) as e:
            problems.append(f"{config.path} [tls:{name}]: {e}")
        except OCSPError as e:
            problems.append(f"{config.path} {e}")
    for name, spec in config.upstreams.items():
        if spec.tls:
            try:
                upstream_tls_creator(spec)
            except CertificateError as e:
                problems.append(f"{config.path} [upstream:{name}]: {e}")
    if problems:
        raise ConfigError(problems)
