"""
Settings of a C{[filter:NAME] type = waf} section.

Syntax, ranges and files here; that libmodsecurity and the Core Rule Set
are installed is checked here too (a C{type = waf} without them cannot
work, and the error says what to install). The rules are compiled where the
filter is built (L{gatelayer.filters.waf}), which the master also does once
before it starts or answers C{--check}, so a rule that does not compile is
a configuration error naming its file and the library's message.
"""

import ctypes.util
import os.path
import re

from attrs import frozen

from gatelayer.config import values as v

INSTALL_HINT = "apt-get install libmodsecurity3 modsecurity-crs"
"""What an operator runs when libmodsecurity or the Core Rule Set is missing."""

LIBRARY_FILES = ("/usr/lib/x86_64-linux-gnu/libmodsecurity.so.3", "/usr/lib/aarch64-linux-gnu/libmodsecurity.so.3",
                 "/usr/lib/libmodsecurity.so.3", "/usr/local/lib/libmodsecurity.so.3",
                 "/usr/local/modsecurity/lib/libmodsecurity.so.3")
"""Where libmodsecurity 3 is looked for before asking the dynamic loader's cache."""

CRS_SETUP = "/etc/modsecurity/crs/crs-setup.conf"
"""The Core Rule Set's setup file as Debian's C{modsecurity-crs} installs it."""

CRS_RULES = "/usr/share/modsecurity-crs/rules"
"""The directory of the Core Rule Set's rule files (Debian's package)."""

CRS_FILES = (CRS_SETUP, CRS_RULES + "/REQUEST-949-BLOCKING-EVALUATION.conf")
"""Files of the Core Rule Set whose absence means it is not installed."""

DEFAULT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods the Core Rule Set lets through by default here (its own
default, for web sites, lacks PUT, PATCH and DELETE)."""

_METHOD = re.compile(r"[A-Z][A-Z-]{0,31}\Z")
_RULE_RANGE = re.compile(r"(\d{1,9})(?:-(\d{1,9}))?\Z")


@frozen
class WafSettings:
    """
    A WAF filter's settings.

    @ivar mode: C{"block"} (refuse what the rules refuse) or C{"detect"}
        (log it and let the request pass).
    @ivar paranoia: the Core Rule Set's paranoia level, 1 to 4.
    @ivar anomaly_threshold: the inbound anomaly score at which a request
        is refused.
    @ivar exclude_rules: rule ids and id ranges (C{"942100"},
        C{"942100-942199"}) removed from the rule set.
    @ivar max_body: the most request body bytes inspected; a larger body is
        refused with 413 in block mode, passed uninspected in detect mode.
    @ivar allowed_methods: the methods the Core Rule Set's method rule
        (911100) allows; another scores as an attack.
    @ivar rules_file: the absolute path of an own rules file (ModSecurity
        syntax), loaded after the Core Rule Set, or L{None}.
    """

    mode: str = "block"
    paranoia: int = 1
    anomaly_threshold: int = 5
    exclude_rules: tuple = ()
    max_body: int = 128 * 1024
    allowed_methods: tuple = DEFAULT_METHODS
    rules_file: str = None


def library_installed():
    """
    Whether libmodsecurity 3 can be found.
    """
    return any(os.path.exists(path) for path in LIBRARY_FILES) or bool(ctypes.util.find_library("modsecurity"))


def _rule_ids(text):
    ids = []
    for item in v.parse_list(text):
        match = _RULE_RANGE.match(item)
        if match is None:
            raise ValueError(f"has {item!r}, which is not a rule id or an id range such as 942100-942199")
        low, high = match.groups()
        if high is not None and int(high) < int(low):
            raise ValueError(f"has {item!r}, whose range ends before it starts")
        ids.append(f"{int(low)}-{int(high)}" if high is not None else str(int(low)))
    if not ids:
        raise ValueError("lists no rule id")
    return tuple(ids)


def _methods(text):
    methods = tuple(dict.fromkeys(item.upper() for item in v.parse_list(text)))
    for method in methods:
        if not _METHOD.match(method):
            raise ValueError(f"has {method!r}, which is not a method name")
    if not methods:
        raise ValueError("lists no method")
    return methods


def parse_filter(reader):
    """
    Read a C{type = waf} section from C{reader} into L{WafSettings},
    recording every problem on the reader.
    """
    mode = reader.choice("mode", ("block", "detect"), "block")
    paranoia = reader.get("paranoia", lambda t: v.parse_int(t, 1, 4), 1)
    threshold = reader.get("anomaly_threshold", lambda t: v.parse_int(t, 1, 10000), 5)
    exclude = reader.get("exclude_rules", _rule_ids, ())
    max_body = reader.get("max_body", v.parse_size, 128 * 1024)
    if max_body is not None and not 1 <= max_body <= 64 * 1024 * 1024:
        reader.error("max_body", "must be between 1 byte and 64MB", reader.raw("max_body").strip())
        max_body = None
    methods = reader.get("allowed_methods", _methods, DEFAULT_METHODS)
    rules_file = reader.path("rules", None)
    if rules_file is not None:
        if any(c.isspace() or c in "\"'*?[" for c in rules_file):
            reader.error("rules", "must not contain spaces, quotes or wildcards (ModSecurity's Include "
                                  "takes the path as it is)", rules_file)
        else:
            unreadable = v.file_unreadable(rules_file)
            if unreadable is not None:
                reader.error("rules", unreadable)
    if not library_installed():
        reader.error(None, f"type = waf needs libmodsecurity 3, which is not installed: {INSTALL_HINT}")
    missing = [path for path in CRS_FILES if not os.path.isfile(path)]
    if missing:
        reader.error(None, f"type = waf needs the OWASP Core Rule Set ({missing[0]} is missing): {INSTALL_HINT}")
    return WafSettings(
        mode=mode or "block",
        paranoia=paranoia or 1,
        anomaly_threshold=threshold or 5,
        exclude_rules=exclude or (),
        max_body=max_body or 128 * 1024,
        allowed_methods=methods or DEFAULT_METHODS,
        rules_file=rules_file,
    )
