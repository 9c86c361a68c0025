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

from twisted.web.http_headers import Headers

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

# Request ids made by the gateway (a prefix, a dash, a counter) need no
# JSON escaping; an id kept from a proxy may.
_PLAIN_ID = re.compile(rb"[A-Za-z0-9._-]+\Z").match

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

    __slots__ = ("_second", "_text", "_milli", "_stamp", "_quoted")

    def __init__(self):
        self._second = None
        self._text = ""
        self._milli = None
        self._stamp = ""
        self._quoted = '""'

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
        self._quoted = '"%s"' % (self._stamp,)
        return self._stamp

    def quoted(self, now):
        """
        L{format} of C{now} in JSON quotes.
        """
        if int(now * 1000) != self._milli:
            self.format(now)
        return self._quoted


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

    def quoted_time(self, now):
        """
        L{time} as a JSON string, made once a millisecond.
        """
        return self._clock.quoted(now)

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


def _raw_key(name):
    headers = Headers()
    headers.setRawHeaders(name, [b""])
    return next(iter(headers._rawHeaders))


_AGENT_KEY = _raw_key(b"user-agent")
_REFERER_KEY = _raw_key(b"referer")


def _raw(headers):
    try:
        return headers._rawHeaders
    except AttributeError:  # pragma: no cover - other Twisted versions
        return {_raw_key(name): values for name, values in headers.getAllRawHeaders()}


def _ms(start, end):
    """
    The milliseconds from C{start} to C{end} as JSON, or C{null} when
    either is unknown.
    """
    if start is None or end is None:
        return "null"
    return "%.3f" % ((end - start) * 1000,)


def json_line(log, request, now):
    """
    The JSON access log line (bytes, ASCII only: every control byte, quote
    and non-ASCII character escaped) of C{request}, finished at C{now}.

    This runs once per request, so it is written for cost: one f-string
    rather than C{json.dumps} of a dict, values that repeat looked up in
    L{_SEEN} inline (C{seen(value) or _jc(value)}: a call only on a miss),
    the timestamp made once a millisecond.
    """
    seen = _SEEN.get
    routing = request.routing
    client = request.client
    peer = (seen(client.host) or _jc(client.host)) if client is not None else "null"
    raw = _raw(request.requestHeaders)
    agent = raw.get(_AGENT_KEY)
    agent = (seen(agent[0]) or _jc(agent[0])) if agent else "null"
    referer = raw.get(_REFERER_KEY)
    referer = _js(referer[0]) if referer else "null"
    channel = getattr(request, "channel", None)
    if channel is not None and channel.factory.scheme == "https":
        tls_version, sni = _tls(request)
        tls_version, sni = _jc(tls_version), _jc(sni)
    else:
        tls_version = sni = "null"
    request_id = host = route = upstream = server = duration = connect = first = "null"
    consumer = ratelimit = "null"
    resolved = peer
    retries = 0
    extra = ""
    if routing is not None:
        request_id = routing.request_id
        request_id = (_quote_json(request_id.decode("ascii")) if request_id.isalnum()
                      or _PLAIN_ID(request_id) is not None else _js(request_id))
        host = routing.host or None
        host = seen(host) or _jc(host)
        duration = "%.3f" % ((now - routing.started) * 1000,)
        matched = routing.match.route
        if matched is not None:
            route = matched.spec.name
            route = seen(route) or _jc(route)
        exchange = routing.exchange
        if exchange is not None:
            resolved = exchange.client_ip
            resolved = seen(resolved) or _jc(resolved)
            context = exchange.context
            if context:
                consumer = _jc(context.get("consumer"))
                ratelimit = _jc(context.get("ratelimit"))
        if routing.upstream_server is not None:
            upstream = routing.upstream
            upstream = seen(upstream) or _jc(upstream)
            server = routing.upstream_server
            server = seen(server) or _jc(server)
            retries = routing.tries - 1 if routing.tries > 1 else 0
            connect = routing.upstream_connect
            connect = "null" if connect is None else "%.3f" % (connect * 1000,)
            first = _ms(routing.upstream_started, routing.upstream_first_byte)
        if routing.log_fields:
            extra = "".join(",%s:%s" % (_js(name), _js(value)) for name, value in routing.log_fields
                            if name not in _FIELD_NAMES)
    method = request.method
    method = seen(method) or _jc(method)
    proto = request.clientproto
    proto = seen(proto) or _jc(proto)
    query = request.query
    if query:
        path = _js(log.target(request))
    else:
        path = request.path
        path = _quote_json(path.decode("utf-8", "backslashreplace"))
    clock = log._clock
    stamp = clock._quoted if int(now * 1000) == clock._milli else clock.quoted(now)
    status = getattr(request, "code", 0) or 0
    sent = getattr(request, "sentLength", 0)
    received = request.body_length()
    # An f-string of the fields in JSON_FIELDS order (a test holds the two
    # together): string building without a format string to parse.
    line = (f'{{"time":{stamp},"request_id":{request_id},"client":{resolved},'
            f'"peer":{peer},"consumer":{consumer},"method":{method},"path":{path},'
            f'"protocol":{proto},"host":{host},"route":{route},"upstream":{upstream},'
            f'"upstream_server":{server},"status":{status},"bytes_sent":{sent},'
            f'"bytes_received":{received},"duration_ms":{duration},"upstream_connect_ms":{connect},'
            f'"upstream_first_byte_ms":{first},"retries":{retries},"ratelimit":{ratelimit},'
            f'"tls_version":{tls_version},"sni":{sni},"user_agent":{agent},"referer":{referer}{extra}}}\n')
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
