"""
The twistd plugin's options and service: C{twistd gatelayer -c etc/gate.ini}.

This is where the global reactor is imported; everything below takes it as
an argument.
"""

import sys

from twisted.python import usage

from gatelayer.config import ConfigError


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
        from gatelayer.process.checking import check_config_file
        try:
            checked = check_config_file(self["config"], self["workers"])
        except ConfigError as e:
            sys.stderr.write(f"gatelayer: configuration {self['config']} is not valid:\n")
            for problem in e.problems:
                sys.stderr.write(f"  - {problem}\n")
            raise SystemExit(1)
        if self["check"]:
            sys.stdout.write(f"gatelayer: configuration {self['config']} is valid\n")
            raise SystemExit(0)
        self.checked = checked
        self.gate_config = checked.config
        self.config_text = checked.text
        self.admin_token = checked.admin_token


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
    master.reloader.workers = options["workers"]
    master.reloader.parts_for = lambda new, present: master_parts(new, reactor, master.controls, present)
    try:
        master.prepare()
    except BindError as e:
        sys.stderr.write(f"gatelayer: {e}\n")
        raise SystemExit(1)
    return master
