"""
The admin endpoint served by the master: C{GET /status} (JSON),
C{GET /healthz}, C{GET /metrics}, the dashboard page at C{GET /}
(L{gatelayer.process.dashboard}) and C{POST /reload} (with a token only).
Bound to the address in C{[gateway] admin}, which is never
public by default.

Every request is checked before it reaches a page:

 1. The Host header must name the endpoint itself: C{localhost},
    C{127.0.0.1}, C{[::1]}, the configured admin address or the local
    address the connection arrived on (any port). A web page on another
    site that points its own name at 127.0.0.1 (DNS rebinding) sends its own
    name as Host and gets C{421 Misdirected Request}.
 2. With C{[gateway] admin_token_file}, the request must carry
    C{Authorization: Bearer <token>}; otherwise C{401} with
    C{WWW-Authenticate: Bearer}. The token is compared in constant time.
    The dashboard page (C{/}) holds no data and is the one exception: its
    script sends the token with every request it makes.

Errors are JSON: C{{"status": 421, "error": "..."}}.
"""

import hmac
import json

from twisted.web import resource, server

from gatelayer.cache.control import PurgeResource
from gatelayer.process.dashboard import DASHBOARD_PATH, DashboardPage
from gatelayer.http.errors import reason_phrase
from gatelayer.observe.exposition import CONTENT_TYPE as METRICS_CONTENT_TYPE

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
_REALM = b'Bearer realm="gatelayer admin"'


class AdminTokenError(ValueError):
    """
    The admin token file cannot be used; the text names the file and why.
    """


def load_admin_token(path):
    """
    Read the admin bearer token: the file's content without surrounding
    whitespace.

    @return: the token as bytes.
    @raise AdminTokenError: the file cannot be read, is empty, or holds
        characters a client cannot send in a header (anything but visible
        ASCII).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise AdminTokenError(f"{path} cannot be read: {(e.strerror or str(e)).lower()}") from None
    token = data.strip()
    if not token:
        raise AdminTokenError(f"{path} is empty (it must hold the admin bearer token)")
    if any(byte < 0x21 or byte > 0x7E for byte in token):
        raise AdminTokenError(
            f"{path} holds characters other than visible ASCII (one token on one line is expected)")
    return token


def host_name(value):
    """
    The lower-cased host name of a Host header value (IPv6 literals keep
    their brackets), or L{None} if it is not C{name} or C{name:port}.
    """
    try:
        text = value.decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[:end + 1], text[end + 1:]
    else:
        name, colon, port = text.partition(":")
        rest = colon + port
    if rest and not (rest[0] == ":" and rest[1:].isdigit() and 0 < len(rest) <= 6
                     and rest[1:].isascii()):
        return None
    if not name or any(c in name for c in " \t/\\@?#"):
        return None
    return name


def _bracketed(host):
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class AdminGuard:
    """
    The checks every admin request passes: Host (against DNS rebinding)
    and, when configured, the bearer token.
    """

    def __init__(self, bind_host=None, token=None):
        """
        @param bind_host: the host of C{[gateway] admin} (accepted as Host
            unless it is a wildcard address).
        @param token: the bearer token (bytes), or L{None} for none.
        """
        names = set(LOOPBACK_NAMES)
        if bind_host is not None and bind_host not in _WILDCARDS:
            names.add(_bracketed(bind_host.lower()))
        self.names = frozenset(names)
        self.token = token

    def check(self, request, need_token=True):
        """
        L{None} if C{request} may proceed, else C{(status, message,
        headers)} of the refusal.

        @param need_token: whether the bearer token (when configured) is
            checked; the dashboard page, which holds no data, is checked
            for its Host only.
        """
        hosts = request.requestHeaders.getRawHeaders(b"host") or []
        if len(hosts) != 1:
            return 421, "the admin endpoint needs exactly one Host header", ()
        name = host_name(hosts[0])
        if name is None or not self._accepts(name, request):
            shown = hosts[0].decode("ascii", "replace")[:100]
            return (421, f"Host {shown!r} is not this admin endpoint (use localhost, 127.0.0.1, "
                         "[::1] or the admin address)", ())
        if self.token is None or not need_token:
            return None
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        if not values:
            return 401, "the admin endpoint needs Authorization: Bearer <token>", ((b"www-authenticate", _REALM),)
        scheme, _, credentials = values[0].strip().partition(b" ")
        given = credentials.strip()
        if len(values) != 1 or scheme.lower() != b"bearer" or not given:
            return (401, "the admin endpoint needs Authorization: Bearer <token>",
                    ((b"www-authenticate", _REALM + b', error="invalid_request"'),))
        if not hmac.compare_digest(given, self.token):
            return (401, "the bearer token is not valid for the admin endpoint",
                    ((b"www-authenticate", _REALM + b', error="invalid_token"'),))
        return None

    def _accepts(self, name, request):
        if name in self.names:
            return True
        local = getattr(request.getHost(), "host", None)
        return local is not None and local not in _WILDCARDS and name == _bracketed(local.lower())


class _Refusal(resource.Resource):
    isLeaf = True

    def __init__(self, status, message, headers):
        super().__init__()
        self.status = status
        self.message = message
        self.headers = headers

    def render(self, request):
        """
        Answer with the refusal's status, headers and JSON body.
        """
        request.setResponseCode(self.status, reason_phrase(self.status))
        for name, value in self.headers:
            request.setHeader(name, value)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"status": self.status, "error": self.message}).encode("utf-8") + b"\n"


class _Status(resource.Resource):
    isLeaf = True

    def __init__(self, master):
        super().__init__()
        self.master = master

    def render_GET(self, request):
        """
        The /status document, once the parts have answered.
        """
        request.setHeader(b"content-type", b"application/json")

        def write(data):
            if not request._disconnected:
                request.write(json.dumps(data, indent=2, default=str).encode("utf-8") + b"\n")
                request.finish()

        def failed(failure):
            if not request._disconnected:
                request.setResponseCode(500, reason_phrase(500))
                request.write(b'{"status": 500, "error": "status unavailable"}\n')
                request.finish()
        self.master.status().addCallbacks(write, failed)
        return server.NOT_DONE_YET


class _Reload(resource.Resource):
    """
    C{POST /reload}: what SIGHUP does, answered with the outcome. Only
    with C{[gateway] admin_token_file}: a reload changes what the gateway
    serves, so it is never open to anyone who can reach the endpoint.
    """

    isLeaf = True

    def __init__(self, master):
        super().__init__()
        self.master = master

    def render_POST(self, request):
        """
        Reload; answer 200 with the outcome, 409 if another reload is
        being applied, 422 with the problems if the file was refused.
        """
        request.setHeader(b"content-type", b"application/json")
        if request.site.guard.token is None:
            request.setResponseCode(403, reason_phrase(403))
            return json.dumps({"status": 403, "error": "POST /reload needs [gateway] admin_token_file "
                                                       "(or send SIGHUP to the master)"}).encode("utf-8") + b"\n"

        def answer(outcome):
            status = 200 if outcome.ok else 409 if outcome.busy else 422
            if not request._disconnected:
                request.setResponseCode(status, reason_phrase(status))
                request.write(json.dumps(outcome.as_dict(), indent=2).encode("utf-8") + b"\n")
                request.finish()
        self.master.reload("POST /reload").addCallback(answer)
        return server.NOT_DONE_YET


def health(master):
    """
    The C{/healthz} verdict: C{(http status, document)}.

    C{200 {"status": "ok"}} only while every worker slot runs a worker that
    has reported since it started. Each slot owns its own listening socket
    (SO_REUSEPORT), so the kernel keeps handing an empty slot its share of
    new connections, which wait unanswered until a worker is back: the
    gateway is then C{503 {"status": "degraded", "empty_slots": [...]}}
    (or C{"unavailable"} with no worker serving, C{"stopping"} while
    draining), so a load balancer's health check takes it out of rotation.
    """
    records = sorted(master.workers.values(), key=lambda r: r.slot)
    serving = [r.slot for r in records if r.serving]
    empty = [r for r in records if not r.serving]
    document = {"workers": len(records), "serving": len(serving),
                "empty_slots": [r.slot for r in empty]}
    if empty:
        document["slots"] = {
            str(r.slot): r.state() + (f" ({r.spawn_error})" if r.spawn_error and r.process is None else "")
            for r in empty}
    if master.stopping:
        document["status"] = "stopping"
    elif not records or not serving:
        document["status"] = "unavailable"
    elif empty:
        document["status"] = "degraded"
    else:
        document["status"] = "ok"
    return (200 if document["status"] == "ok" else 503), document


class _Health(resource.Resource):
    isLeaf = True

    def __init__(self, master):
        super().__init__()
        self.master = master

    def render_GET(self, request):
        """
        The /healthz verdict (see L{health}).
        """
        status, document = health(self.master)
        request.setResponseCode(status, reason_phrase(status))
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(document).encode("utf-8") + b"\n"


class _Metrics(resource.Resource):
    isLeaf = True

    def __init__(self, master):
        super().__init__()
        self.master = master

    def render_GET(self, request):
        """
        The Prometheus text exposition of the master's C{metrics} part, once
        the workers sent fresh snapshots (or the short wait is over); 404
        with C{[gateway] metrics = no}.
        """
        try:
            part = self.master.getServiceNamed("metrics")
        except KeyError:
            return _Refusal(404, "metrics are off ([gateway] metrics = no)", ()).render(request)

        def write(body):
            if not request._disconnected:
                request.setHeader(b"content-type", METRICS_CONTENT_TYPE)
                request.write(body)
                request.finish()

        def failed(failure):
            if not request._disconnected:
                request.setResponseCode(500, reason_phrase(500))
                request.setHeader(b"content-type", b"application/json")
                request.write(b'{"status": 500, "error": "metrics unavailable"}\n')
                request.finish()
        part.scrape().addCallbacks(write, failed)
        return server.NOT_DONE_YET


class AdminSite(server.Site):
    """
    The admin L{server.Site}: refuses what L{AdminGuard} refuses, before
    any page; answers are never cached and carry no server version.
    """

    displayTracebacks = False
    noisy = False

    def __init__(self, master, guard, reactor=None):
        root = resource.Resource()
        root.putChild(b"status", _Status(master))
        root.putChild(b"healthz", _Health(master))
        root.putChild(b"cache", PurgeResource(master))
        root.putChild(b"metrics", _Metrics(master))
        root.putChild(b"reload", _Reload(master))
        root.putChild(b"", DashboardPage())
        super().__init__(root, reactor=reactor)
        self.guard = guard

    def getResourceFor(self, request):
        """
        A refusal for a request the guard refuses, else the page.
        """
        request.responseHeaders.removeHeader(b"server")
        request.setHeader(b"cache-control", b"no-store")
        refusal = self.guard.check(request, need_token=request.path != DASHBOARD_PATH)
        if refusal is not None:
            request.site = self
            return _Refusal(*refusal)
        return super().getResourceFor(request)

    def log(self, request):
        """
        No access log for the admin endpoint.
        """


def admin_site(master, token=None):
    """
    The admin site for C{master}.

    @param token: the bearer token every request must carry (bytes, from
        L{load_admin_token}), or L{None}.
    """
    admin = master.config.gateway.admin
    return AdminSite(master, AdminGuard(admin[0] if admin else None, token), reactor=master.reactor)


__all__ = ["AdminGuard", "AdminSite", "AdminTokenError", "LOOPBACK_NAMES", "admin_site", "health",
           "host_name", "load_admin_token"]
