"""
Typed access to one INI section, collecting problems instead of stopping at
the first one.
"""

_REQUIRED = object()


class SectionReader:
    """
    Read the keys of one C{[kind:name]} section with parsers, recording every
    problem with the file, section and key, and noticing keys nobody asked
    for (a typo in a key must not be silently ignored).

    @ivar problems: the shared list problems are appended to.
    """

    def __init__(self, filename, section, items, problems, base_dir="."):
        self.filename = filename
        self.base_dir = base_dir
        self.section = section
        self._items = dict(items)
        self._used = set()
        self.problems = problems

    @property
    def name(self):
        """
        The instance part of the section name (C{users} for C{[upstream:users]}).
        """
        return self.section.partition(":")[2]

    def has(self, key):
        """
        Whether the section sets C{key}.
        """
        return key in self._items

    def raw(self, key):
        """
        The unparsed text of C{key}, or L{None}; marks the key as known.
        """
        self._used.add(key)
        return self._items.get(key)

    def error(self, key, message, value=None):
        """
        Record a problem with C{key} (or with the whole section when C{key} is
        L{None}).
        """
        where = f"{self.filename} [{self.section}]"
        if key is not None:
            where += f" {key}"
        if value is not None:
            message = f"{value!r} {message}"
        self.problems.append(f"{where}: {message}")

    def get(self, key, parse=None, default=_REQUIRED):
        """
        Parse C{key} with C{parse} (a function of the text raising
        L{ValueError}), or return C{default} when the key is absent.

        A missing required key or a value the parser rejects is recorded and
        L{None} is returned, so reading carries on and every problem of the
        file is reported together.
        """
        self._used.add(key)
        text = self._items.get(key)
        if text is None or text.strip() == "":
            if default is _REQUIRED:
                self.error(key, "is required")
                return None
            return default
        text = text.strip()
        if parse is None:
            return text
        try:
            return parse(text)
        except ValueError as e:
            self.error(key, str(e), text)
            return None

    def choice(self, key, choices, default=_REQUIRED):
        """
        Read C{key} and check it is one of C{choices}.
        """
        def parse(text):
            value = text.lower()
            if value not in choices:
                raise ValueError("is not one of " + ", ".join(choices))
            return value
        return self.get(key, parse, default)

    def path(self, key, default=_REQUIRED):
        """
        Read a file or directory path; a relative path is taken relative to
        the directory of the configuration file, so a config works from any
        working directory. Existence is not checked here.
        """
        import os.path

        def parse(text):
            return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(text)))
        return self.get(key, parse, default)

    def finish(self):
        """
        Report every key of the section that nothing read: unknown keys are
        errors, naming the key.
        """
        for key in sorted(set(self._items) - self._used):
            self.error(key, "is not a known key")
