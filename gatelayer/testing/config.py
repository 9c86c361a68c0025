"""
Parsing one configuration section the way the loader does, for tests of a
filter type's settings.
"""

from gatelayer.config.reader import SectionReader

__all__ = ["parse_section"]


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
