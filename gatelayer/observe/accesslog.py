"""
The access log: one line per request, a JSON object (the default) or the
combined format, written in batches so logging costs the request path one
line built and one list append.

The destination is a file (reopened on request: the rotation tool renames
it, the master is sent SIGUSR1 and tells every worker to reopen) or the
worker's standard output (C{-} or C{stdout}), which the master hands every
worker as its own: one stream, no copy through the master.
"""

import os
import re
import time
from json.encoder import encode_basestring_ascii as _quote_json
from urllib.parse import unquote_to_bytes

__all__ = ["AccessLog", "FORMATS", "JSON_FIELDS", "STDOUT", "combined_line", "json_line",
           "redact_query"]

FORMATS = ("json", "combined")
"""The values of C{[gateway] access_log_format}."""

STDOUT = ("-", "stdout")
"""The C{access_log} values that mean the worker's standard output."""

JSON_FIELDS = (
    "time", "request_id", "client", "peer", "consumer", "method", "path", "protocol", "host",
    "route", "upstream", "upstream_server", "status", "bytes_sent", "bytes_received",
    "duration_ms", "upstream_connect_ms", "upstream_first_byte_ms", "retries", "ratelimit",
    "tls_version", "sni", "user_agent", "referer",
)
"""The keys of every JSON line, in order (a terminal's C{log_fields} follow)."""

_FIELD_NAMES = frozenset(JSON_FIELDS)

# A write of at most PIPE_BUF bytes to a pipe is atomic: the workers share
# one standard output, so each write there holds whole lines within it.
_PIPE_BUF = 4096

# What the combined format writes as \xHH (as nginx does): control bytes,
# the quote, the backslash and everything beyond ASCII.
_UNSAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')


def _hex(match):
    return b"\\x%02X" % (match.group()[0],)


class _Clock:
    """
    The RFC 3339 UTC time of a log line with milliseconds; the text of the
    second is made once per second, not once per line.
    """

    __slots__ = ("_second", "_text", "_milli", "_stamp")

    def __init__(self):
        self._second = None
        self._text = ""
        self._milli = None
        self._stamp = ""

    def format(self, now):
        milli = int(now * 1000)
        if milli == self._milli:
            # Several lines a millisecond under load: made once.
            return self._stamp
        second = milli // 1000
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self._milli = milli
        self._stamp = "%s.%03dZ" % (self._text, milli - second * 1000)
        return self._stamp


class AccessLog:
    """
    Collects one line per request and writes them once a second (a timer
    on the injected reactor; never a write per request).

    @ivar redact: query parameter names (bytes) whose values are written as
        C{REDACTED} (credentials: API keys, tokens), set by the gateway
        from its filters.
    """

    redact = frozenset()

    def __init__(self, path, reactor, flush_interval=1.0, format="json"):
        """
        @param path: the file to append to, or C{-}/C{stdout}.
        @param format: C{"json"} or C{"combined"}.
        """
        self.path = path
        self._stdout = path in STDOUT
        self._file = None if self._stdout else open(path, "ab", buffering=0)
        self._lines = []
        self._reactor = reactor
        self._interval = flush_interval
        self._call = None
        self._clock = _Clock()
        self._combined_second = None
        self._combined_text = ""
        self._line = json_line if format == "json" else combined_line

    def record(self, request):
        """
        Note one finished (or abandoned) request.
        """
        self._lines.append(self._line(self, request, self._reactor.seconds()))
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

    def time(self, now):
        """
        C{now} (seconds since the epoch) as RFC 3339 UTC with milliseconds.
        """
        return self._clock.format(now)

    def combined_time(self, now):
        """
        C{now} as the combined format writes it, made once per second.
        """
        second = int(now)
        if second != self._combined_second:
            self._combined_second = second
            self._combined_text = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
        return self._combined_text

    def flush(self):
        """
        Write what has been collected: one write to a file, writes of whole
        lines of at most C{PIPE_BUF} bytes to standard output.
        """
        self._call = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            if not self._stdout:
                self._file.write(b"".join(lines))
                return
            for chunk in _chunks(lines):
                _write_all(1, chunk)
        except OSError:
            # A full disk or a closed stream must not take the worker down;
            # these lines are lost, the next batch is tried again.
            pass

    def reopen(self):
        """
        Write what has been collected to the current file, then open
        C{path} again (a rotation tool renamed the file): no line is lost
        or split between the two files.
        """
        self.flush()
        if self._stdout:
            return
        old, self._file = self._file, open(self.path, "ab", buffering=0)
        old.close()

    def close(self):
        """
        Flush and close the file.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.flush()
        if self._file is not None:
            self._file.close()


def _chunks(lines):
    """
    C{lines} (bytes ending in a newline) joined into pieces of at most
    C{_PIPE_BUF} bytes, each a run of whole lines (a longer line alone).
    """
    piece, size = [], 0
    for line in lines:
        if piece and size + len(line) > _PIPE_BUF:
            yield b"".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        yield b"".join(piece)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _text(value):
    """
    A request value for JSON: text (invalid UTF-8 shown as C{\\xHH}), or
    L{None}.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def _tls(request):
    """
    The TLS version and server name of a TLS listener's connection, else
    C{(None, None)}.
    """
    # twisted.web's request lets go of its channel once finished.
    channel = getattr(request, "channel", None)
    if channel is None or channel.factory.scheme != "https":
        return None, None
    transport = request.transport
    if transport is None:
        return None, None
    try:
        handle = transport.getHandle()
    except Exception:
        return None, None
    version = getattr(handle, "get_protocol_version_name", None)
    if version is None:
        return None, None
    return version(), _text(handle.get_servername())


_JSON_LINE = "{" + ",".join('"%s":%%s' % (name,) for name in JSON_FIELDS) + "%s}\n"


def _js(value):
    """
    A JSON string (ASCII only) for C{value} (text, bytes or L{None}).
    """
    if value is None:
        return "null"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    return _quote_json(value)


#: JSON strings of the values that repeat from request to request (method,
#: protocol, host, route, upstream and server names, client addresses,
#: user agents, TLS fields), made once; emptied when it grows past
#: L{_SEEN_LIMIT} so it follows the traffic of the moment.
_SEEN = {}
_SEEN_LIMIT = 4096


def _jc(value):
    """
    L{_js} of a value likely to repeat, remembered.
    """
    found = _SEEN.get(value)
    if found is None:
        found = _js(value)
        if len(_SEEN) >= _SEEN_LIMIT:
            _SEEN.clear()
        _SEEN[value] = found
    return found


def _num(value):
    return "null" if value is None else repr(round(value * 1000, 3))


def json_line(log, request, now):
    """
    The JSON access log line (bytes, ASCII only: every control byte, quote
    and non-ASCII character escaped) of C{request}, finished at C{now}.
    Built with one format string rather than C{json.dumps} of a dict:
    several times cheaper per line.
    """
    routing = request.routing
    client = request.client
    peer = _jc(client.host) if client is not None else "null"
    headers = request.requestHeaders
    agent = headers.getRawHeaders(b"user-agent")
    referer = headers.getRawHeaders(b"referer")
    tls_version, sni = _tls(request)
    request_id = host = route = upstream = server = duration = connect = first = "null"
    consumer = ratelimit = "null"
    resolved = peer
    retries = 0
    extra = ""
    if routing is not None:
        request_id = _js(routing.request_id)
        host = _jc(routing.host or None)
        duration = _num(now - routing.started)
        matched = routing.match.route
        if matched is not None:
            route = _jc(matched.spec.name)
        exchange = routing.exchange
        if exchange is not None:
            resolved = _jc(exchange.client_ip)
            context = exchange.context
            if context:
                consumer = _jc(context.get("consumer"))
                ratelimit = _jc(context.get("ratelimit"))
        if routing.upstream_server is not None:
            upstream = _jc(routing.upstream)
            server = _jc(routing.upstream_server)
            retries = max(routing.tries - 1, 0)
            connect = _num(routing.upstream_connect)
            if routing.upstream_first_byte is not None and routing.upstream_started is not None:
                first = _num(routing.upstream_first_byte - routing.upstream_started)
        if routing.log_fields:
            extra = "".join(",%s:%s" % (_js(name), _js(value)) for name, value in routing.log_fields
                            if name not in _FIELD_NAMES)
    line = _JSON_LINE % (
        _quote_json(log.time(now)), request_id, resolved, peer, consumer, _jc(request.method),
        _js(log.target(request)), _jc(request.clientproto), host, route, upstream, server,
        getattr(request, "code", 0) or 0, getattr(request, "sentLength", 0), request.body_length(),
        duration, connect, first, retries, ratelimit, _jc(tls_version), _jc(sni),
        _jc(agent[0] if agent else None), _js(referer[0] if referer else None), extra)
    return line.encode("ascii")


def _first(request, name):
    values = request.requestHeaders.getRawHeaders(name)
    return values[0] if values else None


def _quoted(value):
    """
    A request value for the combined format: C{-} for none, else the bytes
    with control bytes, quotes, backslashes and non-ASCII as C{\\xHH}.
    """
    if value is None:
        return "-"
    if isinstance(value, str):
        value = value.encode("utf-8")
    if _UNSAFE.search(value) is not None:
        value = _UNSAFE.sub(_hex, value)
    return value.decode("ascii")


def combined_line(log, request, now):
    """
    The combined-format line of C{request}, followed by
    C{request_id=ID} and a terminal's C{name=value} fields.
    """
    client = request.client.host if request.client is not None else "-"
    code = getattr(request, "code", 0) or 0
    line = '%s - - [%s] "%s %s %s" %d %d "%s" "%s"' % (
        client,
        log.combined_time(now),
        _quoted(request.method), _quoted(log.target(request)), _quoted(request.clientproto),
        code, getattr(request, "sentLength", 0),
        _quoted(_first(request, b"referer")),
        _quoted(_first(request, b"user-agent")),
    )
    routing = request.routing
    if routing is not None:
        # After the combined fields, so tools reading those still do.
        line += " request_id=" + _quoted(routing.request_id)
        if routing.log_fields:
            line += "".join(" %s=%s" % pair for pair in routing.log_fields)
    return (line + "\n").encode("ascii", "backslashreplace")


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
