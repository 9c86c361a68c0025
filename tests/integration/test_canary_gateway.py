"""
Integration tests of versioned and canary routes and of request mirroring:
a real gatelayer master with two workers in front of two upstream
processes that say who they are (the C{X-Upstream} header), and shadow
upstreams that record, refuse or hang.
"""

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web import resource
from twisted.web.client import HTTPConnectionPool

from gatelayer.routing.split import WeightedRendezvous
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.upstreams import serve_quietly, start_upstreams
from gatelayer.testing.waiting import free_port, wait_until


class Recorder(resource.Resource):
    """
    A shadow upstream that keeps what it received: C{(method, uri, Host,
    body)} per request, and answers 500 (which must not matter).
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.received = []

    def render(self, request):
        """
        Record the request.
        """
        host = request.requestHeaders.getRawHeaders(b"host", [b""])[0]
        self.received.append((request.method, request.uri, host, request.content.read()))
        request.setResponseCode(500)
        return b"shadow says no"


class CanaryGatewayTests(TestCase):
    """
    Weighted versions and mirrors through real processes and sockets.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.v1, self.v2, self.hung = yield start_upstreams(self, reactor, "v1", "v2", "hung")
        # Frozen (SIGSTOP): the kernel accepts connections, nothing answers.
        self.hung.pause()
        self.recorder = Recorder()
        port = serve_quietly(reactor, self.recorder)
        self.addCleanup(port.stopListening)
        shadow = f"127.0.0.1:{port.getHost().port}"
        config = f"""
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 2s
trusted_proxies = 127.0.0.1

[listener:web]
bind = 127.0.0.1:0

[upstream:v1]
servers = {self.v1.address}
[upstream:v2]
servers = {self.v2.address}
[upstream:shadow]
servers = {shadow}
[upstream:hung]
servers = {self.hung.address}
max_connections = 2
max_pending = 0
read_timeout = 60s
[upstream:down]
servers = 127.0.0.1:{free_port()}
max_connections = 2
max_pending = 0

[route:by-user]
path = /user/
upstream = v1:90, v2:10
split_key = header:X-User
[route:by-cookie]
path = /cookie/
upstream = v1:50, v2:50
split_key = cookie:sid
[route:by-ip]
path = /ip/
upstream = v1:50, v2:50
[route:mirrored]
path = /mirrored/
strip_prefix = /mirrored
upstream = v1
mirror = shadow
[route:mirror-hung]
path = /hung/
upstream = v1
mirror = hung
[route:mirror-down]
path = /down/
upstream = v1
mirror = down
"""
        self.gate = yield start_gateway(self, reactor, config)
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 16
        self.addCleanup(self.pool.closeCachedConnections)

    @inlineCallbacks
    def versions(self, path, header_sets, batch=16, method=b"GET", body=None):
        """
        Send one request per header dict of C{header_sets} to C{path}
        (C{batch} at a time); returns the C{X-Upstream} of each answer, in
        order. Every answer must be 200.
        """
        names = [None] * len(header_sets)

        @inlineCallbacks
        def one(index):
            response = yield fetch(reactor, self.gate.url("web", path), method=method,
                                   headers=header_sets[index], body=body, pool=self.pool)
            self.assertEqual(response.status, 200, response.body)
            names[index] = response.header(b"x-upstream").decode("ascii")
        for start in range(0, len(header_sets), batch):
            yield gatherResults([one(i) for i in range(start, min(start + batch, len(header_sets)))])
        return names

    @inlineCallbacks
    def test_header_split_90_10_sticky(self):
        """
        2000 distinct users on a 90/10 split by X-User: v2 answers 10% of
        them within 2 points, each as the rendezvous hash says (whichever
        worker served it), and a repeated subset of users always lands
        where it landed first.
        """
        users = [f"user-{n}" for n in range(2000)]
        names = yield self.versions("/user/a", [{b"X-User": [u.encode()]} for u in users])
        share = names.count("v2") / len(users)
        self.assertTrue(0.08 <= share <= 0.12, f"v2 answered {share:.1%}")
        split = WeightedRendezvous((("v1", 90), ("v2", 10)))
        self.assertEqual(names, [split.name_for(u.encode()) for u in users])
        subset = users[::20]
        for _ in range(3):
            again = yield self.versions("/user/b", [{b"X-User": [u.encode()]} for u in subset])
            self.assertEqual(again, names[::20])

    @inlineCallbacks
    def test_cookie_split_sticky(self):
        """
        By cookie: both versions get sessions; a session stays on its
        version; without the cookie the client address decides.
        """
        sessions = [f"s{n}" for n in range(200)]
        headers = [{b"Cookie": [f"theme=dark; sid={s}".encode()]} for s in sessions]
        first = yield self.versions("/cookie/", headers)
        self.assertEqual(set(first), {"v1", "v2"})
        again = yield self.versions("/cookie/", headers)
        self.assertEqual(again, first)
        split = WeightedRendezvous((("v1", 50), ("v2", 50)))
        self.assertEqual(first, [split.name_for(s.encode()) for s in sessions])
        plain = yield self.versions("/cookie/", [{b"X-Forwarded-For": [b"198.51.100.7"]}] * 4)
        self.assertEqual(plain, [split.name_for(b"198.51.100.7")] * 4)

    @inlineCallbacks
    def test_ip_split_sticky(self):
        """
        By client address (through the trusted proxy's X-Forwarded-For):
        each client always reaches the same version.
        """
        clients = [f"198.51.100.{n}" for n in range(1, 101)]
        headers = [{b"X-Forwarded-For": [ip.encode()]} for ip in clients]
        first = yield self.versions("/ip/", headers)
        split = WeightedRendezvous((("v1", 50), ("v2", 50)))
        self.assertEqual(first, [split.name_for(ip.encode()) for ip in clients])
        self.assertEqual(set(first), {"v1", "v2"})
        again = yield self.versions("/ip/", headers)
        self.assertEqual(again, first)

    @inlineCallbacks
    def test_mirror_copies_reach_shadow(self):
        """
        Every request is answered by v1 while the shadow receives a copy
        (stripped path, query, body, Host with -shadow), its 500s ignored.
        """
        names = yield self.versions("/mirrored/orders?page=2", [{b"Host": [b"api.example"]}] * 20,
                                    method=b"POST", body=b"payload")
        self.assertEqual(set(names), {"v1"})
        yield wait_until(reactor, lambda: len(self.recorder.received) >= 20, timeout=10,
                         what="20 copies at the shadow")
        self.assertEqual(set(self.recorder.received),
                         {(b"POST", b"/orders?page=2", b"api.example-shadow", b"payload")})

    @inlineCallbacks
    def test_hung_or_down_shadow_never_delays(self):
        """
        With the shadow frozen (connections accepted, never answered) or
        not listening, every client is still answered by v1 at once, and
        v1's servers count no failure.
        """
        for path in ("/hung/x", "/down/x"):
            started = reactor.seconds()
            names = yield self.versions(path, [{}] * 40, batch=8)
            self.assertEqual(set(names), {"v1"}, path)
            self.assertLess(reactor.seconds() - started, 10, path)
        response = yield fetch(reactor, self.gate.admin_url("/status"))
        upstreams = response.json()["upstreams"]
        self.assertEqual([row["failures"] for row in upstreams["v1"]], [0])
        self.assertEqual(sum(row["requests"] for row in upstreams["v1"]), 80)
        # Every request was copied to the frozen shadow, but at most its
        # two connections per worker hold a copy: the rest were dropped,
        # not queued.
        hung = upstreams["hung"][0]
        self.assertEqual(hung["requests"], 40)
        self.assertTrue(1 <= hung["active"] <= 4, hung)
        self.assertEqual(upstreams["down"][0]["requests"], 40)
