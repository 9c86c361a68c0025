"""
Reading an OpenAPI document (C{openapi = api.yaml} or C{api.json}) into
plain JSON values, before L{gatelayer.config.openapi} checks it: YAML with
the safe loader and without aliases, or strict JSON, bounded in size and
nesting.
"""

from gatelayer.config.json_file import bounded, parse_json, read_text
from gatelayer.config.openapi_schema import pointer_join

__all__ = ["MAX_NESTING", "YAML_HINT", "read_document"]

YAML_HINT = "pip install 'gatelayer[validate]'"
"""What to run when a YAML document is configured without PyYAML."""

MAX_NESTING = 200
"""The deepest nesting of objects and arrays a document may have."""


class _NotAllowed(Exception):
    pass


def _yaml_loader(yaml):
    class NoAliasLoader(yaml.SafeLoader):
        """
        The safe loader without aliases: an alias can make a small file
        expand into a huge (or cyclic) document.
        """

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise _NotAllowed(f"YAML aliases (*name) are not allowed (line {mark.line + 1}, "
                                  f"column {mark.column + 1})")
            return super().compose_node(parent, index)
    return NoAliasLoader


def _parse_yaml(text, path):
    try:
        import yaml
    except ImportError:
        raise ValueError(f"{path}: a YAML document needs the PyYAML package: {YAML_HINT}") from None
    try:
        return yaml.load(text, Loader=_yaml_loader(yaml))
    except _NotAllowed as e:
        raise ValueError(f"{path}: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{path} is not valid YAML: {bounded(str(e.problem or e.context))}{at}") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise ValueError(f"{path} is not valid YAML: {bounded(str(e) or 'nested too deeply')}") from None


def _plain(node, pointer, depth, path):
    """
    C{node} as JSON values: YAML's integer keys (C{200:}) become strings,
    its dates ISO strings; anything else that is not JSON is refused.
    """
    if depth > MAX_NESTING:
        raise ValueError(f"{path}: at #{pointer}: nested more than {MAX_NESTING} levels")
    if isinstance(node, dict):
        plain = {}
        for key, value in node.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise ValueError(f"{path}: at #{pointer}: the key {bounded(repr(key))} is not a string")
            key = str(key)
            plain[key] = _plain(value, pointer_join(pointer, key), depth + 1, path)
        return plain
    if isinstance(node, list):
        return [_plain(value, pointer_join(pointer, i), depth + 1, path) for i, value in enumerate(node)]
    if node is None or isinstance(node, (str, bool, int)):
        return node
    if isinstance(node, float):
        if node != node or node in (float("inf"), float("-inf")):
            raise ValueError(f"{path}: at #{pointer}: {node!r} is not a JSON number")
        return node
    if hasattr(node, "isoformat"):
        return node.isoformat()
    raise ValueError(f"{path}: at #{pointer}: a {type(node).__name__} is not a JSON value")




def read_document(path, max_size):
    """
    Read the document at C{path} (JSON when the name ends in C{.json},
    else YAML) as plain JSON values: YAML's integer keys become strings,
    its dates ISO strings.

    @param max_size: the largest file read, in bytes.
    @raise ValueError: naming the file and, inside it, the line and column
        or the JSON pointer of the problem.
    """
    text = read_text(path, max_size)
    if path.lower().endswith(".json"):
        loaded = parse_json(text, path)
    else:
        loaded = _parse_yaml(text, path)
    return _plain(loaded, "", 0, path)
