"""
The one validation a configuration file passes before anything runs it:
C{twistd gatelayer -c F --check}, the start and every reload (SIGHUP,
C{POST /reload}) call L{check_config_file}, so a problem reads the same
wherever it is reported.
"""

import hashlib

import attrs
from attrs import frozen

from gatelayer.config import ConfigError, parse_config_text

__all__ = ["CheckedConfig", "check_config_file"]


@frozen
class CheckedConfig:
    """
    A configuration that passed every check.

    @ivar config: the L{gatelayer.config.model.GateConfig}.
    @ivar text: the file's text as it was read and checked (what the
        workers are sent, so they run exactly what was validated).
    @ivar digest: the first 12 hex digits of the text's SHA-256, to tell
        configurations apart in C{/status} and the log.
    @ivar admin_token: the admin bearer token (bytes) read from
        C{[gateway] admin_token_file}, or L{None}.
    """

    config: object
    text: str
    digest: str
    admin_token: bytes = None


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the configuration: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: is not UTF-8 text"]) from None


def check_config_file(path, workers=None):
    """
    Read the configuration file at C{path} once and check all of it: the
    syntax and every key, the filters' key material, IP lists and rules,
    the certificates and upstream TLS files, the admin token file.

    @param workers: the C{--workers} override, or L{None}.
    @return: a L{CheckedConfig}.
    @raise ConfigError: listing every problem, each naming file, section
        and key.
    """
    from gatelayer.filters import validate_filters
    from gatelayer.http.resource_load import validate_resources
    from gatelayer.process.wiring import validate_runtime

    text = _read(path)
    config = parse_config_text(text, path)
    validate_filters(config)
    validate_resources(config)
    if workers is not None:
        if workers < 1:
            raise ConfigError([f"--workers: {workers} must be at least 1"])
        config = attrs.evolve(config, gateway=attrs.evolve(config.gateway, workers=workers))
    validate_runtime(config)
    token = admin_token(config)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return CheckedConfig(config, text, digest, token)


def admin_token(config):
    """
    The admin bearer token of C{config}, or L{None}; a token file that
    cannot be used is a configuration error naming it.
    """
    path = config.gateway.admin_token_file
    if path is None:
        return None
    from gatelayer.process.admin import AdminTokenError, load_admin_token
    try:
        return load_admin_token(path)
    except AdminTokenError as e:
        raise ConfigError([f"{config.path} [gateway] admin_token_file: {e}"]) from None
