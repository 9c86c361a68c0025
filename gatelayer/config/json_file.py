"""
Reading the JSON (and JSON-like) files a configuration names, such as the
validate filter's schema and an OpenAPI document: bounded in size, UTF-8,
strict JSON, and errors that name the file and the line and column.
"""

import json

__all__ = ["bounded", "parse_json", "read_text"]

_MESSAGE_LIMIT = 200


def bounded(text):
    """
    C{text} cut to 200 characters (with C{...}): a value quoted from a file
    into an error message stays readable however long it is.
    """
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."


def read_text(path, limit):
    """
    The text of the file at C{path}, decoded from UTF-8 (a byte order mark
    is dropped), reading at most C{limit} bytes.

    @raise ValueError: naming the file when it cannot be read, is larger
        than C{limit} bytes or is not UTF-8.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ValueError(f"{path} cannot be read: {e.strerror or e}") from None
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 (byte {e.start})") from None


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_json(text, path):
    """
    Parse C{text}, read from the file at C{path}, as strict JSON
    (C{NaN} and C{Infinity} are refused).

    @raise ValueError: naming the file and, for a syntax error, the line
        and column.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON: {bounded(str(e) or 'nested too deeply')}") from None
