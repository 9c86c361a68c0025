"""
Tests for the transform filter: its settings and templates
(L{gatelayer.config.filter_transform}) and what it does to requests and
responses (L{gatelayer.filters.transform}).
"""

import json

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.chain import Exchange, IFilter, Reply
from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.filter_transform import Variable, parse_filter, parse_template
from gatelayer.config.model import FilterSpec
from gatelayer.filters import FilterServices, build_filter
from gatelayer.filters.transform import TransformFilter
from gatelayer.testing.server import InMemoryGateway, parse_response, with_server
from gatelayer.testing.config import parse_section, section_settings
from gatelayer.testing.exchange import raw_headers


def _exchange(path=b"/", query=b"", headers=(), context=None):
    raw = raw_headers(headers)
    return Exchange(method=b"GET", path=path, query=query, headers=raw, client_ip="192.0.2.7",
                    host="api.example.com", context=context or {})


def _parse(**items):
    return parse_section(parse_filter, "filter:tf", items)


def _filter(**items):
    return TransformFilter("tf", section_settings(parse_filter, "filter:tf", items))


class TemplateTests(SynchronousTestCase):
    """
    Templates are parsed once into literal and variable parts; unknown
    variables and control characters are refused.
    """

    def test_parts(self):
        """
        Literals, C{$name}, C{${name}} and C{$$} parse into parts.
        """
        table = [
            ("fixed", (b"fixed",)),
            ("", ()),
            ("$host", (Variable("host"),)),
            ("a-${consumer}-b", (b"a-", Variable("consumer"), b"-b")),
            ("$$5 and $$$remote_addr", (b"$5 and $", Variable("remote_addr"))),
            ("$jwt.sub/$query.page", (Variable("jwt", "sub"), b"/", Variable("query", "page"))),
            ("$header.X-User-Id", (Variable("header", "x-user-id"),)),
            ("${request_id}$path", (Variable("request_id"), Variable("path"))),
            ("caf\u00e9", ("caf\u00e9".encode("utf-8"),)),
        ]
        for text, parts in table:
            self.assertEqual(parse_template(text), parts, text)

    def test_refused(self):
        """
        Unknown variables, a lone C{$}, a bad header name and control
        characters are refused with a reason.
        """
        table = [
            ("$nope", "unknown variable $nope"),
            ("${hostname}", "unknown variable $hostname"),
            ("$jwt", "unknown variable $jwt"),
            ("$jwt.", "unknown variable $jwt"),
            ("${query.}", "unknown variable $query."),
            ("$env.HOME", "unknown variable $env.HOME"),
            ("cost: 5$", "lone $"),
            ("$ x", "lone $"),
            ("${header.a b}", "lone $"),
            ("${header.a:b}", "is not a header name"),
            ("a\r\nX-Evil: 1", "control character"),
            ("a\nb", "control character"),
            ("a\x00b", "control character"),
        ]
        for text, reason in table:
            with self.assertRaises(ValueError, msg=text) as raised:
                parse_template(text)
            self.assertIn(reason, str(raised.exception), text)


class SettingsTests(SynchronousTestCase):
    """
    Settings are checked at load time and every problem names the file,
    section, key and value.
    """

    def test_defaults(self):
        """
        A transform with no keys changes nothing.
        """
        settings, problems = _parse()
        self.assertEqual(problems, [])
        self.assertEqual(settings.request_add, ())
        self.assertIsNone(settings.rewrite)

    def test_entries(self):
        """
        Lists split at commas that start a new C{Name:} or C{name=} entry
        and at line ends; a comma inside a value stays.
        """
        settings, problems = _parse(
            request_headers_set="X-A: $host, Cache-Control: no-store, private\nX-B: fixed",
            request_headers_rename="X-Old: X-New", request_headers_remove="X-Debug, X-Internal",
            query_add="source=gw, user=$consumer", query_remove="debug")
        self.assertEqual(problems, [])
        self.assertEqual([(t.name, t.parts) for t in settings.request_set], [
            (b"x-a", (Variable("host"),)), (b"cache-control", (b"no-store, private",)),
            (b"x-b", (b"fixed",))])
        self.assertEqual(settings.request_rename, ((b"x-old", b"x-new"),))
        self.assertEqual(settings.request_remove, (b"x-debug", b"x-internal"))
        self.assertEqual(settings.query_add, ((b"source", (b"gw",)), (b"user", (Variable("consumer"),))))
        self.assertEqual(settings.query_remove, (b"debug",))

    def test_problems(self):
        """
        Each bad setting is reported once, naming section, key and value.
        """
        table = [
            (dict(request_headers_set="X-A: $nope"), "[filter:tf] request_headers_set:",
             "unknown variable $nope"),
            (dict(response_headers_add="X-A: $jwt"), "[filter:tf] response_headers_add:", "unknown variable"),
            (dict(request_headers_add="X A: 1"), "request_headers_add:", "is not a header name"),
            (dict(request_headers_add="X-A 1"), "request_headers_add:", "is not Name: value"),
            (dict(request_headers_remove="X-A, B@D"), "request_headers_remove:", "'B@D', which is not a header"),
            (dict(request_headers_rename="X-A"), "request_headers_rename:", "not Old-Name: New-Name"),
            (dict(request_headers_set="Content-Length: 0"), "request_headers_set:", "gateway owns that header"),
            (dict(request_headers_set="Host: evil.test"), "request_headers_set:", "gateway owns that header"),
            (dict(response_headers_remove="Transfer-Encoding"), "response_headers_remove:", "gateway owns"),
            (dict(response_headers_rename="Connection: X-C"), "response_headers_rename:", "gateway owns"),
            (dict(rewrite="^/a("), "[filter:tf] rewrite:", "is not REGEX REPLACEMENT"),
            (dict(rewrite="^/a( /b"), "[filter:tf] rewrite:", "is not a valid rewrite"),
            (dict(rewrite="^/a/(.*) /b/\\2"), "rewrite:", "invalid group reference 2"),
            (dict(rewrite="^/a/(?P<x>.*) /b/\\g<y>"), "rewrite:", "is not a valid rewrite"),
            (dict(rewrite="^/a /b /c"), "rewrite:", "is not REGEX REPLACEMENT"),
            (dict(query_add="x"), "[filter:tf] query_add:", "is not name=value"),
            (dict(query_add="a&b=1"), "query_add:", "is not name=value"),
            (dict(query_add="user=$who"), "query_add:", "unknown variable $who"),
            (dict(query_remove="a&b"), "[filter:tf] query_remove:", "is not a query parameter name"),
            (dict(request_headers="X-A: 1"), "[filter:tf] request_headers:", "is not a known key"),
        ]
        for items, where, reason in table:
            _, problems = _parse(**items)
            self.assertEqual(len(problems), 1, (items, problems))
            self.assertIn("gate.ini [filter:tf] " + where.replace("[filter:tf] ", ""), problems[0], items)
            self.assertIn(reason, problems[0], items)

    def test_identity_spoof_refused(self):
        """
        No request_headers_* key may set, remove or rename X-Consumer, in
        any spelling, on either side of a rename.
        """
        table = [
            dict(request_headers_set="X-Consumer: admin"),
            dict(request_headers_add="x-consumer: admin"),
            dict(request_headers_remove="X-CONSUMER"),
            dict(request_headers_rename="X-Consumer: X-Was"),
            dict(request_headers_rename="X-Claimed: X-Consumer"),
        ]
        for items in table:
            _, problems = _parse(**items)
            self.assertEqual(len(problems), 1, (items, problems))
            key = next(iter(items))
            self.assertIn(f"gate.ini [filter:tf] {key}: may not change X-Consumer", problems[0])
        _, problems = _parse(response_headers_set="X-Consumer: shown")
        self.assertEqual(problems, [])

    def test_forward_claims_spoof_refused(self):
        """
        A transform may not touch a header a JWT filter's forward_claims
        vouches for: the whole config is refused, naming both sections.
        """
        text = ("[listener:web]\nbind = 127.0.0.1:0\n"
                "[filter:auth]\ntype = jwt\nalgorithms = HS256\nsecret_file = /nonexistent\n"
                "forward_claims = role:X-User-Role\n"
                "[filter:tf]\ntype = transform\nrequest_headers_set = X-User-Role: admin\n"
                "[route:r]\npath = /\nfilters = tf\nrespond = 200 ok\n")
        with self.assertRaises(ConfigError) as raised:
            parse_config_text(text)
        self.assertIn("[filter:tf] request_headers_set: may not change x-user-role: "
                      "[filter:auth] forward_claims vouches for it", str(raised.exception))

    def test_whole_config(self):
        """
        A transform filter is known to the loader and builds an L{IFilter}.
        """
        text = ("[listener:web]\nbind = 127.0.0.1:0\n[filter:tf]\ntype = transform\n"
                "request_headers_set = X-A: $host\n[route:r]\npath = /\nfilters = tf\nrespond = 200 ok\n")
        config = parse_config_text(text)
        built = build_filter(config.filters["tf"], FilterServices(reactor=None, master=None, config=config))
        self.assertTrue(verifyObject(IFilter, built))
        built = build_filter(FilterSpec("web", "transform", config.filters["tf"].settings),
                             FilterServices(reactor=None, master=None, config=None))
        self.assertEqual(built.name, "web")


class RequestTests(SynchronousTestCase):
    """
    The request side: headers, then the path, then the query.
    """

    def test_variables(self):
        """
        Each variable renders from the exchange; one with no value is empty.
        """
        flt = _filter(request_headers_set=(
            "X-Addr: $remote_addr, X-Host: $host, X-Path: $path, X-Id: $request_id, "
            "X-Who: <$consumer>, X-Sub: $jwt.sub, X-Admin: $jwt.admin, X-Groups: $jwt.groups, "
            "X-Page: $query.page, X-Agent: $header.user-agent, X-None: [$jwt.none$query.none$header.none]"))
        exchange = _exchange(b"/a/b", b"page=2%203&x=1&page=9", [
            (b"user-agent", b"t/1"), (b"x-request-id", b"req-7")],
            {"consumer": "alice", "jwt.claims": {"sub": "u1", "admin": True, "groups": ["a", "b"]}})
        self.assertIsNone(flt.on_request(exchange))
        got = {name: values for name, values in exchange.headers.getAllRawHeaders()}
        self.assertEqual(got[b"X-Addr"], [b"192.0.2.7"])
        self.assertEqual(got[b"X-Host"], [b"api.example.com"])
        self.assertEqual(got[b"X-Path"], [b"/a/b"])
        self.assertEqual(got[b"X-Id"], [b"req-7"])
        self.assertEqual(got[b"X-Who"], [b"<alice>"])
        self.assertEqual(got[b"X-Sub"], [b"u1"])
        self.assertEqual(got[b"X-Admin"], [b"true"])
        self.assertEqual(got[b"X-Groups"], [b'["a","b"]'])
        self.assertEqual(got[b"X-Page"], [b"2 3"])
        self.assertEqual(got[b"X-Agent"], [b"t/1"])
        self.assertEqual(got[b"X-None"], [b"[]"])
        empty = _exchange()
        flt.on_request(empty)
        self.assertEqual(empty.headers.getRawHeaders(b"x-who"), [b"<>"])
        self.assertEqual(empty.headers.getRawHeaders(b"x-id"), [b""])

    def test_request_id_from_context(self):
        """
        A request id the gateway set wins over the client's X-Request-Id.
        """
        flt = _filter(request_headers_set="X-Id: $request_id")
        exchange = _exchange(headers=[(b"x-request-id", b"client")], context={"request_id": "gw-1"})
        flt.on_request(exchange)
        self.assertEqual(exchange.headers.getRawHeaders(b"x-id"), [b"gw-1"])

    def test_gateway_request_id(self):
        """
        The exchange's request id (the gateway's) is C{$request_id},
        whatever the context or the client's header say.
        """
        flt = _filter(request_headers_set="X-Id: $request_id")
        exchange = _exchange(headers=[(b"x-request-id", b"client")], context={"request_id": "gw-1"})
        exchange.request_id = b"abc-7"
        flt.on_request(exchange)
        self.assertEqual(exchange.headers.getRawHeaders(b"x-id"), [b"abc-7"])

    def test_hostile_values_dropped(self):
        """
        A rendered value with CR, LF or NUL (from a decoded query parameter
        or a claim) is never sent: a set header is left out, its old value
        removed, and a log line names it.
        """
        from gatelayer.filters import transform
        flt = _filter(request_headers_set="X-Echo: v=$query.q", request_headers_add="X-Name: $jwt.name")
        table = [
            (b"q=%0d%0aX-Evil:%201", "a\r\nX-Evil: 1"),
            (b"q=%00", "a\x00b"),
            (b"q=a%0ab", "a\nb"),
            (b"q=a%0db", "a\rb"),
        ]
        for query, claim in table:
            logged = []
            original = transform._log.observer
            transform._log.observer = logged.append
            try:
                exchange = _exchange(query=query, headers=[(b"x-echo", b"old")],
                                     context={"jwt.claims": {"name": claim}})
                flt.on_request(exchange)
            finally:
                transform._log.observer = original
            self.assertIsNone(exchange.headers.getRawHeaders(b"x-echo"), query)
            self.assertIsNone(exchange.headers.getRawHeaders(b"x-name"), claim)
            self.assertEqual(sorted(e["header"] for e in logged), ["x-echo", "x-name"])

    def test_header_operations(self):
        """
        Remove, rename, set (replacing) and add (appending) in that order.
        """
        flt = _filter(request_headers_remove="X-Debug", request_headers_rename="X-Old: X-New",
                      request_headers_set="X-Set: new", request_headers_add="X-Add: 2, X-New: added")
        exchange = _exchange(headers=[(b"x-debug", b"1"), (b"X-Old", b"o1"), (b"x-old", b"o2"),
                                      (b"x-set", b"a"), (b"x-set", b"b"), (b"x-add", b"1")])
        flt.on_request(exchange)
        headers = exchange.headers
        self.assertIsNone(headers.getRawHeaders(b"x-debug"))
        self.assertIsNone(headers.getRawHeaders(b"x-old"))
        self.assertEqual(headers.getRawHeaders(b"x-new"), [b"o1", b"o2", b"added"])
        self.assertEqual(headers.getRawHeaders(b"x-set"), [b"new"])
        self.assertEqual(headers.getRawHeaders(b"x-add"), [b"1", b"2"])

    def test_rewrite(self):
        """
        The rewrite replaces the first match in the canonical path and the
        result is normalized again; a path it does not match is unchanged.
        """
        table = [
            ("^/api/v1/(.*) /v1/\\1", b"/api/v1/users/7", b"/v1/users/7"),
            ("^/api/v1/(.*) /v1/\\1", b"/other", b"/other"),
            ("^/old/ /new/", b"/old/a", b"/new/a"),
            ("^/(?P<x>[a-z]+)/(?P<y>[a-z]+)$ /\\g<y>/\\g<x>", b"/a/b", b"/b/a"),
            ("^/x/(.*) /y//\\1/./", b"/x/z", b"/y/z/"),
            ("^/x/(.*) /y/\\1/../z", b"/x/a", b"/y/z"),
        ]
        for rewrite, path, expected in table:
            exchange = _exchange(path)
            self.assertIsNone(_filter(rewrite=rewrite).on_request(exchange), rewrite)
            self.assertEqual(exchange.path, expected, (rewrite, path))

    def test_rewrite_follows_gateway_settings(self):
        """
        A rewritten path is normalized with the gateway's own settings:
        slashes stay unmerged with C{merge_slashes = no}, and an encoded
        slash is decoded with C{escaped_slashes = decode}, kept otherwise.
        """
        settings, problems = _parse(rewrite="^/x/(.*) /y//\\1%2fz")
        self.assertEqual(problems, [])
        for merge, slashes, expected in [(True, "reject", b"/y/a%2Fz"), (False, "keep", b"/y//a%2Fz"),
                                         (True, "decode", b"/y/a/z")]:
            exchange = _exchange(b"/x/a")
            self.assertIsNone(TransformFilter("tf", settings, merge, slashes).on_request(exchange))
            self.assertEqual(exchange.path, expected, (merge, slashes))

    def test_rewrite_refused(self):
        """
        A rewrite result that climbs above the root, does not start with
        C{/}, or has a query or space in it is refused with a 400 problem
        and a log line; the path is left as it was.
        """
        table = [
            ("^/x/(.*) /../\\1", b"/x/etc"),
            ("^/x/(.*) /a/../../\\1", b"/x/etc"),
            ("^/x/(.*) /\\1", b"/x/../"),
            ("^/x/(.*) \\1", b"/x/etc"),
            ("^/x/(.*) x\\1", b"/x/a"),
            ("^/x/(.*) /a?b=\\1", b"/x/1"),
            ("^/x/(.*) /a#\\1", b"/x/1"),
            ("^/x/(.*) /a/%2e%2e/%2E%2E/\\1", b"/x/etc"),
        ]
        from gatelayer.filters import transform
        for rewrite, path in table:
            logged = []
            original = transform._log.observer
            transform._log.observer = logged.append
            try:
                exchange = _exchange(path)
                reply = _filter(rewrite=rewrite).on_request(exchange)
            finally:
                transform._log.observer = original
            self.assertIsInstance(reply, Reply, rewrite)
            self.assertEqual(reply.status, 400)
            self.assertEqual(dict(reply.headers)[b"content-type"], b"application/problem+json")
            self.assertEqual(json.loads(reply.body)["status"], 400)
            self.assertEqual(exchange.path, path)
            self.assertEqual(len(logged), 1, rewrite)

    def test_query(self):
        """
        query_remove drops parameters by their decoded name; query_add
        replaces any parameter of its name the client sent and
        percent-encodes the value.
        """
        flt = _filter(query_remove="debug", query_add="source=gw, user=$consumer, q=$header.x-q")
        table = [
            (b"", b"source=gw&user=alice&q=a%20b%26c%3Dd"),
            (b"debug=1&page=2", b"page=2&source=gw&user=alice&q=a%20b%26c%3Dd"),
            (b"us%65r=bob&user=eve&source=x&de%62ug&keep=1", b"keep=1&source=gw&user=alice&q=a%20b%26c%3Dd"),
            (b"&&page=2", b"page=2&source=gw&user=alice&q=a%20b%26c%3Dd"),
        ]
        for query, expected in table:
            exchange = _exchange(query=query, headers=[(b"x-q", b"a b&c=d")], context={"consumer": "alice"})
            flt.on_request(exchange)
            self.assertEqual(exchange.query, expected, query)

    def test_untouched_query(self):
        """
        A transform without query keys leaves the query exactly as it was.
        """
        exchange = _exchange(query=b"a=%7e&&b")
        _filter(request_headers_set="X-A: 1").on_request(exchange)
        self.assertEqual(exchange.query, b"a=%7e&&b")


class ResponseTests(SynchronousTestCase):
    """
    The response side asks the responder for removals and renames and adds
    its set and added headers.
    """

    def test_on_response(self):
        """
        on_response records the edits and appends rendered headers; a
        hostile value is dropped.
        """
        flt = _filter(response_headers_remove="Server", response_headers_rename="X-Up: X-Down",
                      response_headers_set="X-Who: $consumer", response_headers_add="X-Echo: $query.q")
        exchange = _exchange(query=b"q=a%0d%0ab", context={"consumer": "alice"})
        flt.on_response(exchange)
        self.assertEqual(exchange.response_header_edits,
                         ((b"server", None), (b"x-up", b"x-down"), (b"x-who", None)))
        self.assertEqual(exchange.response_headers, [(b"x-who", b"alice")])


ROUTING = """
[listener:web]
bind = 127.0.0.1:8080
[filter:tf]
type = transform
response_headers_remove = Content-Type
response_headers_rename = X-Missing: X-Never
response_headers_set = X-Path: $path
[filter:names]
type = transform
response_headers_rename = Content-Type: X-Was-Type
response_headers_add = Content-Type: text/x-renamed
[route:removed]
path = /removed/
filters = tf
respond = 200 removed
[route:renamed]
path = /renamed/
filters = names
respond = 200 renamed
"""


class RoutingTests(SynchronousTestCase):
    """
    Through a whole gateway, the responder removes and renames the
    terminal's response headers and keeps what filters add.
    """

    http_server = "gatelayer"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(ROUTING, self.http_server))

    def request(self, path):
        """
        Send a GET for C{path}; return C{(status, headers, body)}.
        """
        return parse_response(self.gate.exchange(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % (path,)))

    def test_removed(self):
        """
        A removed header is gone; the set one is there; renaming a missing
        header adds nothing.
        """
        status, headers, body = self.request(b"/removed/a")
        self.assertEqual((status, body), (200, b"removed"))
        self.assertNotIn(b"content-type", headers)
        self.assertNotIn(b"x-never", headers)
        self.assertEqual(headers[b"x-path"], [b"/removed/a"])

    def test_renamed(self):
        """
        A renamed header keeps its value under the new name, and a filter
        may add a header of the old name again.
        """
        status, headers, body = self.request(b"/renamed/a")
        self.assertEqual((status, body), (200, b"renamed"))
        self.assertEqual(len(headers[b"x-was-type"]), 1)
        self.assertTrue(headers[b"x-was-type"][0].startswith(b"text/plain"))
        self.assertEqual(headers[b"content-type"], [b"text/x-renamed"])


class TwistedChannelRoutingTests(RoutingTests):
    """
    The same through the twisted.web channel.
    """

    http_server = "twisted"
