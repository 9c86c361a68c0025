"""
The lines of the access log: what the log phase reads of a finished request
(L{capture}: one tuple, cheap, at the end of every request) and the JSON and
combined lines made of such tuples (L{json_text}, L{combined_text}), which
the access log formats in batches, off the request's own path: formatting
many lines in one loop keeps its code and data in the CPU's caches, where a
line made at the end of each request finds them cold.
"""

import re
import time
from json.encoder import encode_basestring_ascii as _quote_json
from urllib.parse import unquote_to_bytes

from twisted.web.http_headers import Headers

__all__ = ["JSON_FIELDS", "capture", "combined_line", "combined_text", "json_line", "json_text",
           "redact_query"]

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


def capture(request, now):
    """
    What a log line needs of C{request}, finished at C{now}: a tuple of
    plain values read while the request and its connection are still there
    (the line is made later, see L{json_text} and L{combined_text}).
    """
    routing = request.routing
    client = request.client
    raw = _raw(request.requestHeaders)
    agent = raw.get(_AGENT_KEY)
    referer = raw.get(_REFERER_KEY)
    channel = getattr(request, "channel", None)
    if channel is not None and channel.factory.scheme == "https":
        tls_version, sni = _tls(request)
    else:
        tls_version = sni = None
    peer = client.host if client is not None else None
    if routing is None:
        return (now, peer, request.method, request.path, request.query, request.clientproto,
                getattr(request, "code", 0) or 0, getattr(request, "sentLength", 0),
                request.body_length(), agent[0] if agent else None,
                referer[0] if referer else None, tls_version, sni, None)
    exchange = routing.exchange
    if exchange is not None:
        resolved = exchange.client_ip
        context = exchange.context
        consumer = context.get("consumer") if context else None
        ratelimit = context.get("ratelimit") if context else None
    else:
        resolved = peer
        consumer = ratelimit = None
    matched = routing.match.route
    return (now, peer, request.method, request.path, request.query, request.clientproto,
            getattr(request, "code", 0) or 0, getattr(request, "sentLength", 0),
            request.body_length(), agent[0] if agent else None,
            referer[0] if referer else None, tls_version, sni,
            (routing.request_id, resolved, consumer, ratelimit, routing.host or None,
             matched.spec.name if matched is not None else None, routing.started,
             routing.upstream, routing.upstream_server, routing.tries, routing.upstream_connect,
             routing.upstream_started, routing.upstream_first_byte, routing.log_fields))


def _ms(start, end):
    """
    The milliseconds from C{start} to C{end} as JSON, or C{null} when
    either is unknown.
    """
    if start is None or end is None:
        return "null"
    return "%.3f" % ((end - start) * 1000,)


def json_text(log, record):
    """
    The JSON access log line (bytes, ASCII only: every control byte, quote
    and non-ASCII character escaped) of a L{capture}d request.

    One f-string rather than C{json.dumps} of a dict; values that repeat
    are looked up in L{_SEEN} inline (C{seen(value) or _jc(value)}: a call
    only on a miss); the timestamp is made once a millisecond.
    """
    (now, peer, method, path, query, proto, status, sent, received, agent, referer,
     tls_version, sni, routed) = record
    seen = _SEEN.get
    peer = (seen(peer) or _jc(peer)) if peer is not None else "null"
    agent = (seen(agent) or _jc(agent)) if agent is not None else "null"
    referer = _js(referer) if referer is not None else "null"
    if tls_version is not None or sni is not None:
        tls_version, sni = _jc(tls_version), _jc(sni)
    else:
        tls_version = sni = "null"
    request_id = host = route = upstream = server = duration = connect = first = "null"
    consumer = ratelimit = "null"
    resolved = peer
    retries = 0
    extra = ""
    if routed is not None:
        (request_id, resolved, consumer, ratelimit, host, route, started, upstream, server,
         tries, connect, upstream_started, first_byte, log_fields) = routed
        request_id = (_quote_json(request_id.decode("ascii")) if _PLAIN_ID(request_id) is not None
                      else _js(request_id))
        resolved = seen(resolved) or _jc(resolved)
        consumer = "null" if consumer is None else _jc(consumer)
        ratelimit = "null" if ratelimit is None else _jc(ratelimit)
        host = seen(host) or _jc(host)
        route = "null" if route is None else (seen(route) or _jc(route))
        duration = "%.3f" % ((now - started) * 1000,)
        if server is not None:
            upstream = seen(upstream) or _jc(upstream)
            server = seen(server) or _jc(server)
            retries = tries - 1 if tries > 1 else 0
            connect = "null" if connect is None else "%.3f" % (connect * 1000,)
            first = _ms(upstream_started, first_byte)
        else:
            upstream = server = connect = "null"
        if log_fields:
            extra = "".join(",%s:%s" % (_js(name), _js(value)) for name, value in log_fields
                            if name not in _FIELD_NAMES)
    method = seen(method) or _jc(method)
    proto = seen(proto) or _jc(proto)
    if query:
        path = _js(log.target_of(path, query))
    else:
        path = _quote_json(path.decode("utf-8", "backslashreplace"))
    clock = log._clock
    stamp = clock._quoted if int(now * 1000) == clock._milli else clock.quoted(now)
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


def json_line(log, request, now):
    """
    L{json_text} of C{request} finished at C{now}, at once.
    """
    return json_text(log, capture(request, now))


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


def combined_text(log, record):
    """
    The combined-format line of a L{capture}d request, followed by
    C{request_id=ID} and a terminal's C{name=value} fields.
    """
    (now, peer, method, path, query, proto, status, sent, received, agent, referer,
     _, _, routed) = record
    line = '%s - - [%s] "%s %s %s" %d %d "%s" "%s"' % (
        peer if peer is not None else "-",
        log.combined_time(now),
        _quoted(method), _quoted(log.target_of(path, query)), _quoted(proto),
        status, sent, _quoted(referer), _quoted(agent),
    )
    if routed is not None:
        # After the combined fields, so tools reading those still do.
        line += " request_id=" + _quoted(routed[0])
        if routed[-1]:
            line += "".join(" %s=%s" % pair for pair in routed[-1])
    return (line + "\n").encode("ascii", "backslashreplace")


def combined_line(log, request, now):
    """
    L{combined_text} of C{request} finished at C{now}, at once.
    """
    return combined_text(log, capture(request, now))


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
