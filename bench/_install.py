"""
Installing what the benchmark lacks from the distribution's packages
(nginx, haproxy, wrk, and optionally redis-server and pypy3), saying what it
installs. The packages' own services are never started: while apt installs,
a temporary policy-rc.d refuses every service start, as in container images.
"""

import os
import shutil
import subprocess

TOOLS = {
    "nginx": "nginx",
    "haproxy": "haproxy",
    "wrk": "wrk",
    "h2load": "nghttp2-client",
    "redis-server": "redis-server",
    "pypy3": "pypy3",
}
"""Command -> the Debian package that provides it."""

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_POLICY = "/usr/sbin/policy-rc.d"


class InstallError(Exception):
    """
    A needed tool is missing and could not be installed.
    """


def find_tool(command):
    """
    The path of C{command} on C{PATH} or in the sbin directories (where
    Debian puts nginx and haproxy), or L{None}.
    """
    found = shutil.which(command)
    if found:
        return found
    for directory in _SBIN:
        path = os.path.join(directory, command)
        if os.access(path, os.X_OK):
            return path
    return None


class Installer:
    """
    Installs missing Debian packages, running C{apt-get update} at most once.
    """

    def __init__(self, say=print, allowed=True, run=subprocess.run, find=find_tool,
                 policy_path=_POLICY, is_root=None):
        self.say = say
        self.allowed = allowed
        self._run = run
        self._find = find
        self._policy = policy_path
        self._is_root = (lambda: os.geteuid() == 0) if is_root is None else is_root
        self._updated = False

    def ensure(self, commands, extra_packages=()):
        """
        Make sure every command in C{commands} exists, installing the
        packages of the missing ones (plus C{extra_packages}); return
        C{{command: path}}.

        @raise InstallError: if something is still missing afterwards.
        """
        missing = [c for c in commands if self._find(c) is None]
        if missing:
            packages = [TOOLS.get(c, c) for c in missing] + list(extra_packages)
            if not self.allowed:
                raise InstallError("missing " + ", ".join(missing) + " (and installing was turned off)")
            self.install(packages)
        paths = {c: self._find(c) for c in commands}
        still = [c for c, p in paths.items() if p is None]
        if still:
            raise InstallError("still missing after installing: " + ", ".join(still))
        return paths

    def install(self, packages):
        """
        C{apt-get install} C{packages} (after one C{apt-get update}) without
        starting their services.
        """
        if self._find("apt-get") is None:
            raise InstallError("cannot install " + ", ".join(packages) + ": no apt-get on this machine")
        if not self._is_root():
            raise InstallError("cannot install " + ", ".join(packages) + ": run as root, or install them first")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        placed_policy = False
        if not os.path.exists(self._policy):
            with open(self._policy, "w") as f:
                f.write("#!/bin/sh\n# placed by the gatelayer benchmark while it installs packages\nexit 101\n")
            os.chmod(self._policy, 0o755)
            placed_policy = True
        try:
            if not self._updated:
                self.say("installing: apt-get update")
                self._apt(["apt-get", "update"], env)
                self._updated = True
            self.say("installing: apt-get install " + " ".join(packages))
            self._apt(["apt-get", "install", "-y", "--no-install-recommends", *packages], env)
        finally:
            if placed_policy:
                os.unlink(self._policy)

    def _apt(self, argv, env):
        result = self._run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=900, check=False)
        if result.returncode != 0:
            tail = result.stdout.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise InstallError(f"{' '.join(argv[:2])} failed: " + " | ".join(tail))


def tool_version(path, flag="-v"):
    """
    The first line a tool prints for its version flag (nginx, haproxy and
    wrk all print to different streams), or C{"?"}.
    """
    try:
        result = subprocess.run([path, flag], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = result.stdout.decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else "?"
