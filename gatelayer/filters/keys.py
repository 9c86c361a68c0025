"""
Key material of the authentication filters: the C{jwt} filter's key and
secret files, the C{api_key} filter's key file.

The config package only checks that these files exist and can be read; what
they hold is loaded here, where the filters are built (in every worker), and
once in the master before it starts or answers C{--check}
(L{gatelayer.filters.validate_filters}), so a private key, a malformed JWKS,
a weak secret or a plain API key is still a configuration error that names
file, section and key, and never reaches a worker.
"""

from gatelayer.auth.apikeys import ApiKeysError, load_apikeys
from gatelayer.auth.jwks import KeyLoadError, KeySet, load_key_file, load_secret_file
from gatelayer.config import ConfigError

__all__ = ["KeyMaterialError", "apikey_store", "jwt_keys", "key_material", "key_material_problems"]


class KeyMaterialError(Exception):
    """
    A filter's key material cannot be used.

    @ivar problems: C{(key, message)} pairs: the section key that names the
        file (C{keys}, C{secret_file}) and a message naming the file.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(message for _, message in self.problems))


def jwt_keys(settings):
    """
    The L{KeySet} of a JWT filter's C{keys} and C{secret_file} files, each
    key pinned to one of C{settings.algorithms}.

    @param settings: a L{gatelayer.config.filter_jwt.JwtSettings}.
    @raise KeyMaterialError: listing every file that cannot be used.
    """
    keys, problems = KeySet(), []
    for setting, files, loader in (("keys", settings.key_files, load_key_file),
                                   ("secret_file", settings.secret_files, load_secret_file)):
        for key_file in files:
            try:
                keys = keys.merged(loader(key_file.path, settings.algorithms, key_file.algorithm))
            except KeyLoadError as e:
                problems.append((setting, str(e)))
    if problems:
        raise KeyMaterialError(problems)
    return keys


def apikey_store(settings):
    """
    The L{gatelayer.auth.apikeys.ApiKeyStore} of an API key filter's C{keys}
    file.

    @param settings: a L{gatelayer.config.filter_apikey.ApiKeySettings}.
    @raise KeyMaterialError: listing every problem of the file.
    """
    try:
        return load_apikeys(settings.keys_file)
    except ApiKeysError as e:
        raise KeyMaterialError([("keys", problem) for problem in e.problems]) from None


LOADERS = {"jwt": jwt_keys, "api_key": apikey_store}
"""The key material loader of each filter type that has key material."""


def _problems(spec, config_path):
    loader = LOADERS.get(spec.type)
    if loader is None:
        return None, []
    try:
        return loader(spec.settings), []
    except KeyMaterialError as e:
        return None, [f"{config_path} [filter:{spec.name}] {key}: {message}" for key, message in e.problems]


def key_material(spec, config=None):
    """
    Load the key material of the filter C{spec} (a
    L{gatelayer.config.model.FilterSpec}), or L{None} for a type that has
    none.

    @param config: the L{gatelayer.config.model.GateConfig} C{spec} belongs
        to, whose path the error messages name; L{None} (a filter built
        without a config file, in tests) names C{gate.ini}.
    @raise ConfigError: naming file, section and key of each problem, in the
        words the config check uses.
    """
    material, problems = _problems(spec, "gate.ini" if config is None else config.path)
    if problems:
        raise ConfigError(problems)
    return material


def key_material_problems(config):
    """
    Every key material problem of the filters of C{config} (a
    L{gatelayer.config.model.GateConfig}), each a full sentence naming file,
    section and key; empty when all of it loads.
    """
    problems = []
    for spec in config.filters.values():
        problems.extend(_problems(spec, config.path)[1])
    return problems
