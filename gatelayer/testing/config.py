"""
Parsing one configuration section the way the loader does, for tests of a
filter type's settings, and the problems of a whole configuration.
"""

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.reader import SectionReader

__all__ = ["config_problems", "parse_section", "section_settings"]


def parse_section(parse, section, items, base_dir="."):
    """
    Run C{parse} (a filter type's C{parse_filter}) on a C{[section]} of
    C{items} (key -> text) as the loader would, unknown keys included;
    returns C{(settings, problems)}, problems named C{gate.ini [section] key}.
    """
    problems = []
    reader = SectionReader("gate.ini", section, items, problems, base_dir)
    settings = parse(reader)
    reader.finish()
    return settings, problems


def section_settings(parse, section, items):
    """
    The settings L{parse_section} builds from C{items}, for tests that need
    a working filter: a problem raises C{AssertionError} listing them all.
    """
    settings, problems = parse_section(parse, section, items)
    if problems:
        raise AssertionError(problems)
    return settings


def config_problems(test, text, path="gate.ini"):
    """
    Assert that C{text} (a whole gate.ini, read as if from C{path}, for one
    CPU) is refused, and return its problems as one string, one per line,
    for C{assertIn}.
    """
    error = test.assertRaises(ConfigError, parse_config_text, text, path, cpu_count=1)
    return "\n".join(error.problems)
