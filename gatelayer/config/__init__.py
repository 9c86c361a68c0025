"""
Configuration as data: C{gate.ini} parsed once into frozen attrs objects.

Nothing here imports the running system (processes, HTTP, TLS): the config
package only describes what the operator asked for and checks it.
"""

from gatelayer.config._errors import ConfigError
from gatelayer.config._loader import load_config, parse_config_text

__all__ = ["ConfigError", "load_config", "parse_config_text"]
