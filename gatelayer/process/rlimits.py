"""
The open-file limit of the master and of each worker.

Every client connection, upstream connection, log file and listening socket
is a file descriptor. Distributions start services with a soft
C{RLIMIT_NOFILE} of 1024 while the hard limit is usually far higher, so a
gateway that keeps the soft limit runs out of descriptors (accept fails with
EMFILE) long before it runs out of anything else. Raising the soft limit to
the hard one needs no privilege; it is what nginx's
C{worker_rlimit_nofile} and Envoy's start-up scripts do by hand.
"""

from attrs import frozen

# What to try when the hard limit is "unlimited": the kernel refuses a soft
# limit above its own ceiling (Linux fs.nr_open, macOS kern.maxfilesperproc).
_FALLBACKS = (1048576, 524288, 65536, 10240)


@frozen
class OpenFilesLimit:
    """
    The open-file limit after trying to raise it.

    @ivar soft: the soft limit now in force (L{None} when unlimited).
    @ivar hard: the hard limit (L{None} when unlimited).
    @ivar previous: the soft limit before (L{None} when unlimited).
    @ivar error: why it could not be raised to C{hard}, or L{None}.
    """

    soft: int
    hard: int
    previous: int
    error: str = None

    def as_dict(self):
        """
        The limit for C{/status}.
        """
        return {"soft": self.soft, "hard": self.hard}


def raise_open_files_limit(resource_module=None):
    """
    Raise this process's soft C{RLIMIT_NOFILE} to its hard limit.

    @param resource_module: the L{resource} module, or anything with its
        C{getrlimit}, C{setrlimit}, C{RLIMIT_NOFILE} and C{RLIM_INFINITY}
        (tests pass a fake).
    @return: an L{OpenFilesLimit}; never raises (a process that cannot raise
        its limit still runs, with the limit it has, and says so).
    """
    if resource_module is None:
        try:
            import resource as resource_module
        except ImportError:
            return OpenFilesLimit(None, None, None, "the resource module is not available")
    kind = resource_module.RLIMIT_NOFILE
    infinity = resource_module.RLIM_INFINITY

    def known(value):
        return None if value == infinity else value

    try:
        soft, hard = resource_module.getrlimit(kind)
    except (OSError, ValueError) as e:
        return OpenFilesLimit(None, None, None, f"getrlimit failed: {e}")
    if soft == hard:
        return OpenFilesLimit(known(soft), known(hard), known(soft))
    targets = [hard] if hard != infinity else []
    targets += [n for n in _FALLBACKS if hard == infinity and (soft == infinity or n > soft)]
    error = None
    for target in targets:
        try:
            resource_module.setrlimit(kind, (target, hard))
        except (OSError, ValueError) as e:
            error = error or f"setrlimit({target}) failed: {e}"
            continue
        return OpenFilesLimit(target, known(hard), known(soft), None if target == hard else error)
    return OpenFilesLimit(known(soft), known(hard), known(soft), error or "no higher limit to try")


__all__ = ["OpenFilesLimit", "raise_open_files_limit"]
