"""
The entry point of a worker process: C{python -m gatelayer.process.main}.

Started by the master with: the config text on standard input (a snapshot of
what the master validated, so a respawned worker runs the master's config
even if the file changed since), its control pipes on fds 3 (master ->
worker) and 4 (worker -> master), and its listening sockets on fds 5 and up.
Log events go to standard error as JSON lines, which the master reads and
logs once each, tagged with the worker's slot and pid. Standard output is
the access log's with C{access_log = -} (the master's own, handed over).
This is the only module besides L{gatelayer.tap} that touches the global
reactor.
"""

import argparse
import signal
import sys

from twisted.logger import Logger, globalLogBeginner

from gatelayer.observe.gatewaylog import worker_observer

CONTROL_IN = 3
CONTROL_OUT = 4

log = Logger()


def parse_args(argv):
    """
    Parse the worker's command line.
    """
    parser = argparse.ArgumentParser(prog="gatelayer-worker")
    parser.add_argument("--config", required=True, help="path of the config (for relative paths)")
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--socket", action="append", default=[],
                        help="LISTENER:FD:FAMILY of a socket to adopt")
    return parser.parse_args(argv)


def main(argv=None):
    """
    Run a worker until it drains or its master goes away.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from gatelayer.process.limits import AcceptErrorFilter
    accept_errors = AcceptErrorFilter(worker_observer(sys.stderr))
    globalLogBeginner.beginLoggingTo([accept_errors], redirectStandardIO=False)
    text = sys.stdin.buffer.read().decode("utf-8")

    # Before the reactor: a configuration without TLS leaves OpenSSL out.
    from gatelayer.process.footprint import leave_out_tls, needs_tls
    if not needs_tls(text):
        leave_out_tls()

    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

    from gatelayer.config import ConfigError, parse_config_text
    from gatelayer.process.control import Begin, ControlProtocol
    from gatelayer.process.rlimits import raise_open_files_limit
    from gatelayer.process.wiring import register_worker, worker_tls
    from gatelayer.process.worker import Worker, family_of

    open_files = raise_open_files_limit()
    if open_files.error:
        log.warn("worker {slot}: open-file limit stays at {soft} ({error})", slot=args.slot,
                 soft=open_files.soft, error=open_files.error)

    try:
        config = parse_config_text(text, args.config)
    except ConfigError as e:
        log.error("worker cannot use the config: {problems}", problems=str(e))
        return 2
    listeners = {spec.name: spec for spec in config.listeners}
    sockets = []
    for item in args.socket:
        name, fd, family = item.rsplit(":", 2)
        sockets.append((listeners[name], int(fd), family_of(family)))

    state = {"worker": None}

    def stop():
        if reactor.running:
            reactor.stop()

    def master_gone(reason):
        worker = state["worker"]
        if worker is not None:
            worker.drain().addBoth(lambda _: stop())
        else:
            stop()

    control = ControlProtocol(connection_lost=master_gone)
    tls_wrapper, tls_creator_for = worker_tls(config, control, reactor)
    worker = Worker(reactor, config, args.slot, sockets, master=control, exit=stop,
                    tls_wrapper=tls_wrapper, tls_creator_for=tls_creator_for,
                    open_files=open_files)
    try:
        # Building the filters loads their key material: a key file that went
        # bad since the master checked it is a config problem, not a crash.
        worker.prepare()
    except ConfigError as e:
        log.error("worker cannot use the config: {problems}", problems=str(e))
        return 2
    accept_errors.limits = worker.limits
    state["worker"] = worker
    register_worker(config, control, worker)

    def begin():
        worker.start()
        return {}
    control.register(Begin, begin)
    StandardIO(control, stdin=CONTROL_IN, stdout=CONTROL_OUT, reactor=reactor)

    def on_signal(signum, frame):
        reactor.callFromThread(worker.drain)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
