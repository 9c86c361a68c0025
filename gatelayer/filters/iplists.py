"""
The list files of the C{ip_filter} filters, owned by the master: read once
before it starts (and by C{--check}), sent to each worker before it accepts,
re-read on SIGHUP and sent to every worker when all of a filter's files are
good. A file that has gone bad (a line that is not an address, a file that
cannot be read) is logged naming file and line, and that filter keeps the
networks it had.

Lists go to the workers over the control channel in chunks of newline
separated networks (an AMP value holds at most 64KB), the last chunk
marked: a worker swaps a filter's lists only once it has all of them.
"""

from twisted.internet.defer import gatherResults
from twisted.logger import Logger
from twisted.protocols import amp

from gatelayer.net.cidr import CidrError, load_cidr_file, parse_cidr_lines
from gatelayer.service import MasterPart

__all__ = [
    "CHUNK_SIZE", "IpListChunk", "IpListsPart", "WorkerIpLists", "file_lists", "list_problems", "push_lists",
    "register_worker_responders",
]

CHUNK_SIZE = 60000
"""The most bytes of networks one L{IpListChunk} value carries."""


class IpListChunk(amp.Command):
    """
    Master -> worker: part of the networks of an C{ip_filter}'s list files;
    with C{final}, the last part, and the worker switches to them.
    """

    commandName = b"IpListChunk"
    arguments = [
        (b"filter", amp.Unicode()),
        (b"allow", amp.String()),
        (b"deny", amp.String()),
        (b"final", amp.Boolean()),
    ]
    response = []


def file_lists(spec, config_path):
    """
    Read the list files of the C{ip_filter} C{spec} (a
    L{gatelayer.config.model.FilterSpec}).

    @return: C{(allow, deny, problems)}: the networks of each file (empty
        without one) and the problems, each a sentence naming config file,
        section, key, list file and line.
    """
    found = {"allow_file": (), "deny_file": ()}
    problems = []
    for key, path in spec.settings.files:
        try:
            found[key] = load_cidr_file(path)
        except CidrError as e:
            problems.append(f"{config_path} [filter:{spec.name}] {key}: {e}")
    return found["allow_file"], found["deny_file"], problems


def list_problems(config):
    """
    Every problem of the list files of C{config}'s C{ip_filter} filters.
    """
    problems = []
    for spec in config.filters.values():
        if spec.type == "ip_filter":
            problems.extend(file_lists(spec, config.path)[2])
    return problems


def _chunks(networks):
    chunks, current, size = [], [], 0
    for network in networks:
        text = str(network).encode("ascii")
        if current and size + len(text) + 1 > CHUNK_SIZE:
            chunks.append(b"\n".join(current))
            current, size = [], 0
        current.append(text)
        size += len(text) + 1
    if current:
        chunks.append(b"\n".join(current))
    return chunks


def push_lists(control, name, allow, deny):
    """
    Send the file networks C{allow} and C{deny} of filter C{name} to one
    worker's C{control}.

    @return: a Deferred firing when the worker has all of them.
    """
    allow_chunks, deny_chunks = _chunks(allow), _chunks(deny)
    count = max(len(allow_chunks), len(deny_chunks), 1)
    calls = []
    for index in range(count):
        calls.append(control.callRemote(
            IpListChunk, filter=name,
            allow=allow_chunks[index] if index < len(allow_chunks) else b"",
            deny=deny_chunks[index] if index < len(deny_chunks) else b"",
            final=index == count - 1))
    return gatherResults(calls, consumeErrors=True)


class WorkerIpLists:
    """
    A worker's end: collects the chunks of each filter and hands the
    networks to the filter once the last one arrived.
    """

    log = Logger()

    def __init__(self, filters):
        """
        @param filters: a callable returning the worker's filters by name.
        """
        self._filters = filters
        self._pending = {}

    def chunk(self, filter, allow, deny, final):
        """
        The L{IpListChunk} responder.
        """
        allow_parts, deny_parts = self._pending.setdefault(filter, ([], []))
        allow_parts.append(allow)
        deny_parts.append(deny)
        if final:
            del self._pending[filter]
            target = self._filters().get(filter)
            if target is None:
                self.log.warn("ip lists for unknown filter {filter} ignored", filter=filter)
                return {}
            target.replace_file_lists(_networks(allow_parts, filter), _networks(deny_parts, filter))
        return {}


def _networks(parts, name):
    text = b"\n".join(part for part in parts if part).decode("ascii")
    return parse_cidr_lines(text.splitlines(), f"the master's list for [filter:{name}]")


def register_worker_responders(control, filters):
    """
    Make a worker's C{control} take the lists of its C{ip_filter} filters
    (C{filters}: a callable returning its filters by name).
    """
    control.register(IpListChunk, WorkerIpLists(filters).chunk)


class IpListsPart(MasterPart):
    """
    The master's C{ip_lists} service: the networks of every C{ip_filter}
    list file, sent to each new worker and re-read on SIGHUP.

    @ivar lists: filter name -> C{(allow, deny)} file networks in use.
    """

    log = Logger()

    def __init__(self, config, controls):
        """
        @param controls: a callable returning the connected workers' control
            protocols.
        @raise gatelayer.config.ConfigError: a list file cannot be used.
        """
        from gatelayer.config import ConfigError
        self.name = "ip_lists"
        self._controls = controls
        problems = self._take(config)
        if problems:
            raise ConfigError(problems)

    def _take(self, config):
        self.config = config
        self.specs = [spec for spec in config.filters.values() if spec.type == "ip_filter" and spec.settings.files]
        self.lists = {}
        problems = []
        for spec in self.specs:
            allow, deny, found = file_lists(spec, config.path)
            problems.extend(found)
            self.lists[spec.name] = (allow, deny)
        return problems

    def reconfigure(self, new_config):
        """
        A configuration reload: the lists of C{new_config}'s filters (the
        reload checked them), sent to the workers with the new gateway.
        """
        for problem in self._take(new_config):
            self.log.error("reload: {problem}", problem=problem)

    def sync(self, control):
        """
        Send a new worker the networks of every list file.
        """
        return gatherResults([push_lists(control, name, allow, deny)
                              for name, (allow, deny) in self.lists.items()], consumeErrors=True)

    def reload(self):
        """
        SIGHUP: re-read each filter's files; a filter whose files are all
        good gets the new networks in every worker, any other keeps its old
        ones (logged, naming file and line).
        """
        pushes = []
        for spec in self.specs:
            allow, deny, problems = file_lists(spec, self.config.path)
            if problems:
                for problem in problems:
                    self.log.error("SIGHUP: ip_filter [{filter}] keeps its lists: {problem}",
                                   filter=spec.name, problem=problem)
                continue
            self.lists[spec.name] = (allow, deny)
            self.log.info("SIGHUP: ip_filter [{filter}] reloaded: {allow} allow, {deny} deny network(s)",
                          filter=spec.name, allow=len(allow), deny=len(deny))
            for control in self._controls():
                pushes.append(push_lists(control, spec.name, allow, deny).addErrback(self._push_failed))
        return gatherResults(pushes)

    def _push_failed(self, failure):
        self.log.failure("ip lists could not be sent to a worker", failure)

    def status(self):
        """
        How many file networks each filter has, for C{/status}.
        """
        return {"ip_lists": {name: {"allow_file": len(allow), "deny_file": len(deny)}
                             for name, (allow, deny) in self.lists.items()}}
