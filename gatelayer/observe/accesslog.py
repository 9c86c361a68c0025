"""
The access log: one line per request in the combined format, written in
batches so logging costs the request path one list append.
"""

import time
from urllib.parse import unquote_to_bytes


class AccessLog:
    """
    Appends combined-format lines to a file, flushed once a second by a
    timer on the injected reactor (never a write per request).
    """

    #: Query parameter names whose values are written as C{REDACTED}
    #: (credentials: API keys, tokens), set by the gateway from its filters.
    redact = frozenset()

    def __init__(self, path, reactor, flush_interval=1.0):
        self._file = open(path, "ab", buffering=0)
        self._lines = []
        self._reactor = reactor
        self._interval = flush_interval
        self._call = None

    def record(self, request):
        """
        Note one finished (or abandoned) request.
        """
        client = request.client.host if request.client is not None else "-"
        code = getattr(request, "code", 0) or 0
        line = '%s - - [%s] "%s %s %s" %d %d "%s" "%s"\n' % (
            client,
            time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            _text(request.method), _text(self.target(request)), _text(request.clientproto),
            code, getattr(request, "sentLength", 0),
            _text((request.requestHeaders.getRawHeaders(b"referer") or [b"-"])[0]),
            _text((request.requestHeaders.getRawHeaders(b"user-agent") or [b"-"])[0]),
        )
        routing = getattr(request, "routing", None)
        if routing is not None and routing.log_fields:
            # After the combined fields, so tools reading those still do.
            line = line[:-1] + "".join(" %s=%s" % pair for pair in routing.log_fields) + "\n"
        self._lines.append(line.encode("utf-8", "replace"))
        if self._call is None:
            self._call = self._reactor.callLater(self._interval, self.flush)

    def target(self, request):
        """
        The request target as logged: the canonical path and the query with
        the values of credential parameters redacted.
        """
        query = request.query
        if not query:
            return request.path
        if self.redact:
            query = redact_query(query, self.redact)
        return request.path + b"?" + query

    def flush(self):
        """
        Write what has been collected.
        """
        self._call = None
        if self._lines:
            data = b"".join(self._lines)
            self._lines = []
            self._file.write(data)

    def close(self):
        """
        Flush and close the file.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self.flush()
        self._file.close()


def _text(value):
    if value is None:
        return "-"
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.replace('"', '\\"')


def redact_query(query, names):
    """
    C{query} with the value of every parameter named in C{names} replaced
    by C{REDACTED}; names are compared percent-decoded, so an encoded
    spelling of a credential's name is redacted too.
    """
    parts = query.split(b"&")
    changed = False
    for index, part in enumerate(parts):
        name, sep, _ = part.partition(b"=")
        if b"%" in name or b"+" in name:
            name = unquote_to_bytes(name.replace(b"+", b" "))
        if name in names:
            parts[index] = part.partition(b"=")[0] + b"=REDACTED"
            changed = True
    return b"&".join(parts) if changed else query
