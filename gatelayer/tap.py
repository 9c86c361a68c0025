"""
The twistd plugin's options and service: C{twistd gatelayer -c etc/gate.ini}.

This is where the global reactor is imported; everything below takes it as
an argument.
"""

import sys

from twisted.python import usage

from gatelayer.config import ConfigError, load_config


class Options(usage.Options):
    """
    Command line of C{twistd gatelayer}.
    """

    synopsis = "[options]"
    longdesc = "Run the gatelayer master: it binds the listeners and runs the workers."
    optParameters = [
        ["config", "c", "etc/gate.ini", "The configuration file."],
        ["workers", "w", None, "Number of worker processes (overrides [gateway] workers).", int],
        ["ready-file", None, None, "Write a JSON file with the bound addresses once all workers serve."],
    ]
    optFlags = [
        ["check", None, "Validate the configuration and exit: 0 if it is valid, 1 with every problem listed."],
    ]

    def postOptions(self):
        """
        Load and validate the configuration now, so a bad one stops twistd
        before it binds anything or daemonizes.
        """
        try:
            config = load_config(self["config"])
            from gatelayer.filters import validate_filters
            validate_filters(config)
            if self["workers"] is not None:
                if self["workers"] < 1:
                    raise ConfigError([f"--workers: {self['workers']} must be at least 1"])
                import attrs
                config = attrs.evolve(config, gateway=attrs.evolve(config.gateway, workers=self["workers"]))
            from gatelayer.process.wiring import validate_runtime
            validate_runtime(config)
            self.admin_token = _admin_token(config)
        except ConfigError as e:
            sys.stderr.write(f"gatelayer: configuration {self['config']} is not valid:\n")
            for problem in e.problems:
                sys.stderr.write(f"  - {problem}\n")
            raise SystemExit(1)
        if self["check"]:
            sys.stdout.write(f"gatelayer: configuration {self['config']} is valid\n")
            raise SystemExit(0)
        self.gate_config = config
        with open(self["config"], encoding="utf-8") as f:
            self.config_text = f.read()


def _admin_token(config):
    """
    The admin bearer token, read once at start; a token file that cannot be
    used is a configuration error naming it.
    """
    path = config.gateway.admin_token_file
    if path is None:
        return None
    from gatelayer.process.admin import AdminTokenError, load_admin_token
    try:
        return load_admin_token(path)
    except AdminTokenError as e:
        raise ConfigError([f"{config.path} [gateway] admin_token_file: {e}"]) from None


def makeService(options):
    """
    The master service for the validated configuration, with its open-file
    limit raised and every listener bound: an address in use ends the start
    here, on the terminal and before twistd daemonizes, with one line naming
    the listener and the address.
    """
    from twisted.internet import reactor

    from twisted.logger import globalLogPublisher

    from gatelayer.observe.errors import RecentErrorsPart
    from gatelayer.process.admin import admin_site
    from gatelayer.process.master import MasterService
    from gatelayer.process.rlimits import raise_open_files_limit
    from gatelayer.process.sockets import BindError
    from gatelayer.process.spawner import ReactorSpawner
    from gatelayer.process.wiring import master_parts

    config = options.gate_config
    token = options.admin_token
    master = MasterService(
        config, options.config_text, reactor, ReactorSpawner(reactor),
        ready_file=options["ready-file"], install_signals=True,
        admin_factory=lambda master: admin_site(master, token=token),
        raise_open_files=raise_open_files_limit,
    )
    master.add_parts(master_parts(config, reactor, master.controls))
    master.add_parts([RecentErrorsPart(globalLogPublisher)])
    try:
        master.prepare()
    except BindError as e:
        sys.stderr.write(f"gatelayer: {e}\n")
        raise SystemExit(1)
    return master
