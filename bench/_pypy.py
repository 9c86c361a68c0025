"""
An optional PyPy interpreter for the gatelayer row that runs on PyPy:
Debian's pypy3, a virtualenv of it (cached outside the checkout) holding
gatelayer's dependencies from setup.cfg, and the checkout on C{PYTHONPATH}.
"""

import configparser
import os
import subprocess

from bench._install import InstallError

_IMPORT_CHECK = "import twisted, OpenSSL, jwt, attrs, txredisapi, service_identity"


class PyPyUnavailable(Exception):
    """
    PyPy cannot run gatelayer on this machine; the message says why.
    """


def requirements(setup_cfg):
    """
    The C{install_requires} lines of C{setup_cfg}.
    """
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    text = parser.get("options", "install_requires", fallback="")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _run(argv, env=None, timeout=900):
    try:
        result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 1, f"{argv[0]} took longer than {timeout}s"
    except OSError as e:
        return 1, str(e)
    return result.returncode, result.stdout.decode("utf-8", "replace")


def _last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def prepare_pypy(installer, repo, cache_dir, say=print):
    """
    Return C{(python, env)} to run gatelayer on PyPy, installing pypy3 and
    the dependencies on first use.

    @raise PyPyUnavailable: with the reason, when any step fails.
    """
    try:
        pypy = installer.ensure(["pypy3"])["pypy3"]
    except InstallError as e:
        raise PyPyUnavailable(f"pypy3: {e}") from None
    venv = os.path.join(cache_dir, "pypy3-venv")
    python = os.path.join(venv, "bin", "python")
    if not os.access(python, os.X_OK):
        say(f"preparing a PyPy virtualenv in {venv}")
        code, out = _run([pypy, "-m", "venv", venv])
        if code != 0:
            try:
                installer.install(["pypy3-venv"])
            except InstallError as e:
                raise PyPyUnavailable(f"pypy3 venv: {e}") from None
            code, out = _run([pypy, "-m", "venv", "--clear", venv])
            if code != 0:
                raise PyPyUnavailable("pypy3 -m venv failed: " + _last_line(out))
    env = dict(os.environ, PYTHONPATH=repo)
    if _run([python, "-c", _IMPORT_CHECK], env=env, timeout=120)[0] != 0:
        needs = requirements(os.path.join(repo, "setup.cfg"))
        say("installing gatelayer's dependencies for PyPy: " + ", ".join(needs))
        # cryptography's newest releases have no PyPy 3.9 wheels, and building
        # them needs Rust crates from the network: take the newest wheel.
        code, out = _run([python, "-m", "pip", "install", "-q", "--only-binary=cryptography", *needs], env=env)
        if code != 0:
            raise PyPyUnavailable("pip install for pypy3 failed: " + _last_line(out))
    code, out = _run([python, "-c", "import gatelayer.tap"], env=env, timeout=120)
    if code != 0:
        raise PyPyUnavailable("gatelayer does not import on PyPy: " + _last_line(out))
    return python, env
