"""
Tests for the cors filter: its settings (L{gatelayer.config.filter_cors}),
origin matching, and its answers to preflights and actual requests
(L{gatelayer.filters.cors}).
"""

import json

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.chain import Exchange, IFilter, Reply
from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.filter_cors import DEFAULT_MAX_AGE, canonical_origin, parse_filter
from gatelayer.config.model import FilterSpec
from gatelayer.filters import FilterServices, build_filter
from gatelayer.filters.cors import CorsFilter
from gatelayer.testing.server import InMemoryGateway, parse_response, with_server
from gatelayer.testing.config import parse_section, section_settings
from gatelayer.testing.exchange import raw_headers

ORIGINS = "https://app.example.com, https://*.example.org, regex:^https://(a|b)\\.example\\.net$, http://localhost:3000"

#: (Origin header as sent, allowed by ORIGINS)
ORIGIN_TABLE = [
    (b"https://app.example.com", True),
    (b"https://APP.Example.COM", True),
    (b"HTTPS://app.example.com", True),
    (b"https://app.example.com:443", True),
    (b"https://app.example.com:8443", False),
    (b"http://app.example.com", False),
    (b"https://app.example.com.evil.test", False),
    (b"https://evil-app.example.com", False),
    (b"https://app.example.com.", False),
    (b"https://app.example.com/", False),
    (b"https://app.example.com/path", False),
    (b"https://user@app.example.com", False),
    (b"https://app.example.com@evil.test", False),
    (b"https://app.example.com?x", False),
    (b"https://app.example.com#x", False),
    (b"https://app.example.com:99999", False),
    (b"https://app..example.com", False),
    (b" https://app.example.com", False),
    (b"https://app.example.com\x00", False),
    (b"https://app.ex\xc3\xa4mple.com", False),
    (b"null", False),
    (b"NULL", False),
    (b"", False),
    (b"*", False),
    (b"https://x.example.org", True),
    (b"https://a.b.example.org", True),
    (b"https://example.org", False),
    (b"https://x.example.org:444", False),
    (b"http://x.example.org", False),
    (b"https://x.example.org.evil.test", False),
    (b"https://xexample.org", False),
    (b"https://evil.test/.example.org", False),
    (b"https://a.example.net", True),
    (b"https://B.example.net", True),
    (b"https://c.example.net", False),
    (b"https://a.example.net.evil.test", False),
    (b"https://a.example.net:444", False),
    (b"http://localhost:3000", True),
    (b"http://localhost:30000", False),
    (b"http://localhost", False),
]


def _exchange(method=b"GET", headers=()):
    raw = raw_headers(headers)
    return Exchange(method=method, path=b"/", query=b"", headers=raw, client_ip="192.0.2.7")


def _parse(**items):
    return parse_section(parse_filter, "filter:cors", items)


def _filter(**items):
    return CorsFilter("cors", section_settings(parse_filter, "filter:cors", items))


def _preflight(origin, method=b"PUT", request_headers=None):
    headers = [(b"origin", origin), (b"access-control-request-method", method)]
    if request_headers is not None:
        headers.append((b"access-control-request-headers", request_headers))
    return _exchange(b"OPTIONS", headers)


class SettingsTests(SynchronousTestCase):
    """
    Settings are checked at load time and every problem names the file,
    section and key.
    """

    def test_defaults(self):
        """
        Only C{origins} is required; methods default to GET, HEAD, POST,
        max_age to 10 minutes, credentials to off.
        """
        settings, problems = _parse(origins="https://app.example.com")
        self.assertEqual(problems, [])
        self.assertEqual(settings.methods, ("GET", "HEAD", "POST"))
        self.assertEqual((settings.headers, settings.expose_headers), ((), ()))
        self.assertEqual((settings.credentials, settings.max_age), (False, DEFAULT_MAX_AGE))
        self.assertEqual(DEFAULT_MAX_AGE, 600)

    def test_values(self):
        """
        Methods are upper-cased, header names lower-cased, max_age is a
        duration in whole seconds.
        """
        settings, problems = _parse(
            origins="https://app.example.com", methods="get, Put, DELETE",
            headers="Content-Type, X-Request-Id", expose_headers="X-Total",
            credentials="yes", max_age="1h")
        self.assertEqual(problems, [])
        self.assertEqual(settings.methods, ("GET", "PUT", "DELETE"))
        self.assertEqual(settings.headers, ("content-type", "x-request-id"))
        self.assertEqual(settings.expose_headers, ("x-total",))
        self.assertEqual((settings.credentials, settings.max_age), (True, 3600))

    def test_problems(self):
        """
        Each bad setting is reported naming the section, key and value.
        """
        table = [
            (dict(origins="*", credentials="yes"),
             "gate.ini [filter:cors] origins: '*' is not allowed with credentials = yes"),
            (dict(origins="*, https://a.example.com"),
             "gate.ini [filter:cors] origins: '*' cannot be combined with other origins"),
            (dict(origins="regex:^https://(a\\.example\\.com$"),
             "gate.ini [filter:cors] origins: 'regex:^https://(a\\\\.example\\\\.com$' is not a valid regular expression"),
            (dict(origins="https://app.example.com/"),
             "gate.ini [filter:cors] origins: 'https://app.example.com/' is not an origin"),
            (dict(origins="app.example.com"), "origins: 'app.example.com' is not an origin"),
            (dict(origins="https://user@app.example.com"), "is not an origin"),
            (dict(origins="https://app.example.com:0"), "is not an origin"),
            (dict(origins="https://a*.example.com"), "is not an origin"),
            (dict(origins="https://*.*.example.com"), "is not an origin"),
            (dict(origins="https://*.com"), "origins: 'https://*.com' is a wildcard too wide"),
            (dict(origins="https://app.example.com", methods="GET, B@D"), "gate.ini [filter:cors] methods:"),
            (dict(origins="https://app.example.com", methods="*"), "methods: '*' has '*'"),
            (dict(origins="https://app.example.com", headers="a b"), "gate.ini [filter:cors] headers:"),
            (dict(origins="https://app.example.com", expose_headers="x:y"), "[filter:cors] expose_headers:"),
            (dict(origins="https://app.example.com", credentials="maybe"), "[filter:cors] credentials:"),
            (dict(origins="https://app.example.com", max_age="soon"), "[filter:cors] max_age:"),
            (dict(origins="https://app.example.com", origin="x"), "[filter:cors] origin: is not a known key"),
            (dict(), "gate.ini [filter:cors] origins: is required"),
        ]
        for items, expected in table:
            _, problems = _parse(**items)
            self.assertEqual(len(problems), 1, (items, problems))
            self.assertIn(expected, problems[0], items)

    def test_whole_config(self):
        """
        A cors filter is known to the loader; its errors stop the load.
        """
        text = ("[listener:web]\nbind = 127.0.0.1:0\n[filter:cors]\ntype = cors\n"
                "origins = *\ncredentials = yes\n[route:r]\npath = /\nfilters = cors\nrespond = 200 ok\n")
        with self.assertRaises(ConfigError) as raised:
            parse_config_text(text)
        self.assertIn("[filter:cors] origins: '*' is not allowed with credentials", str(raised.exception))
        config = parse_config_text(text.replace("credentials = yes", "credentials = no"))
        self.assertEqual(config.filters["cors"].type, "cors")
        built = build_filter(config.filters["cors"], FilterServices(reactor=None, master=None, config=config))
        self.assertTrue(verifyObject(IFilter, built))


class OriginTests(SynchronousTestCase):
    """
    Origins match exactly on scheme, host and port; never by substring.
    """

    def test_canonical_origin(self):
        """
        The canonical form lower-cases scheme and host and drops a default
        port; what is not a serialized origin has none.
        """
        table = [
            ("HTTPS://App.Example.COM:443", "https://app.example.com"),
            ("http://a.example.com:80", "http://a.example.com"),
            ("http://a.example.com:443", "http://a.example.com:443"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("https://a.example.com:0443", "https://a.example.com"),
            ("https://a.example.com.", None),
            ("https://-a.example.com", None),
            ("https://a.example.com/", None),
            ("https:/a.example.com", None),
            ("https://", None),
        ]
        for text, expected in table:
            self.assertEqual(canonical_origin(text), expected, text)

    def test_origin_table(self):
        """
        Every origin of the table is allowed or refused as listed, on
        actual requests and on preflights alike.
        """
        cors = _filter(origins=ORIGINS)
        for origin, allowed in ORIGIN_TABLE:
            exchange = _exchange(headers=[(b"origin", origin)])
            self.assertIsNone(cors.on_request(exchange))
            cors.on_response(exchange)
            names = [name for name, _ in exchange.response_headers]
            self.assertEqual(b"access-control-allow-origin" in names, allowed, origin)
            reply = cors.on_request(_preflight(origin, b"GET"))
            self.assertEqual(reply.status, 204 if allowed else 403, origin)

    def test_null_only_when_listed(self):
        """
        C{null} is refused by C{*}, wildcards and patterns, and allowed
        only when listed as C{null}.
        """
        for origins in ("*", "regex:.*", "regex:null", "https://*.example.com"):
            self.assertFalse(_filter(origins=origins).allows("null"), origins)
        self.assertTrue(_filter(origins="null").allows("null"))

    def test_several_origin_headers(self):
        """
        A request with two Origin headers is not from an allowed origin.
        """
        cors = _filter(origins="https://app.example.com")
        exchange = _exchange(headers=[(b"origin", b"https://app.example.com")] * 2)
        cors.on_request(exchange)
        cors.on_response(exchange)
        self.assertEqual(exchange.response_headers, [(b"vary", b"Origin")])


class PreflightTests(SynchronousTestCase):
    """
    Preflights are answered by the filter: 204 with the CORS headers, or
    403 without them.
    """

    def test_allowed(self):
        """
        An allowed preflight gets the origin echoed, the methods, the
        headers, the max age and credentials.
        """
        cors = _filter(origins="https://app.example.com", methods="GET, PUT",
                       headers="Content-Type, X-Request-Id", credentials="yes", max_age="5m")
        self.assertTrue(verifyObject(IFilter, cors))
        exchange = _preflight(b"https://app.example.com", b"PUT", b"content-type,X-Request-Id")
        reply = cors.on_request(exchange)
        self.assertIsInstance(reply, Reply)
        self.assertEqual(reply.status, 204)
        self.assertEqual(reply.body, b"")
        headers = dict(reply.headers)
        self.assertEqual(headers[b"access-control-allow-origin"], b"https://app.example.com")
        self.assertEqual(headers[b"access-control-allow-methods"], b"GET, PUT")
        self.assertEqual(headers[b"access-control-allow-headers"], b"content-type, x-request-id")
        self.assertEqual(headers[b"access-control-max-age"], b"300")
        self.assertEqual(headers[b"access-control-allow-credentials"], b"true")
        self.assertIn(b"Origin", headers[b"vary"])
        cors.on_response(exchange)
        self.assertEqual(exchange.response_headers, [])

    def test_any_origin(self):
        """
        With C{origins = *} the preflight answer allows C{*}, with no
        credentials header and no headers list when none are configured.
        """
        reply = _filter(origins="*").on_request(_preflight(b"https://x.test", b"POST"))
        headers = dict(reply.headers)
        self.assertEqual(headers[b"access-control-allow-origin"], b"*")
        self.assertNotIn(b"access-control-allow-credentials", headers)
        self.assertNotIn(b"access-control-allow-headers", headers)
        self.assertEqual(headers[b"access-control-max-age"], b"600")

    def test_refused(self):
        """
        A preflight from a refused origin, for a method or a header not
        allowed, is answered 403 with a JSON error and no CORS headers.
        """
        cors = _filter(origins="https://app.example.com", headers="X-Request-Id")
        table = [
            (_preflight(b"https://evil.test", b"GET"), "the origin is not allowed"),
            (_preflight(b"null", b"GET"), "the origin is not allowed"),
            (_preflight(b"https://app.example.com", b"DELETE"), "the method is not allowed"),
            (_preflight(b"https://app.example.com", b"get"), "the method is not allowed"),
            (_preflight(b"https://app.example.com", b"GET", b"x-request-id, authorization"),
             "a request header is not allowed"),
            (_preflight(b"https://app.example.com", b"GET", b"content-type"),
             "a request header is not allowed"),
        ]
        for exchange, reason in table:
            reply = cors.on_request(exchange)
            self.assertEqual(reply.status, 403, reason)
            self.assertIn(reason, json.loads(reply.body)["error"])
            names = {name for name, _ in reply.headers}
            self.assertEqual({n for n in names if n.startswith(b"access-control-")}, set())
            self.assertIn(b"vary", names)

    def test_options_without_request_method(self):
        """
        An OPTIONS request without C{Access-Control-Request-Method} is not a
        preflight: it goes on as an actual request.
        """
        cors = _filter(origins="https://app.example.com")
        exchange = _exchange(b"OPTIONS", [(b"origin", b"https://app.example.com")])
        self.assertIsNone(cors.on_request(exchange))
        cors.on_response(exchange)
        self.assertIn((b"access-control-allow-origin", b"https://app.example.com"),
                      exchange.response_headers)


class ActualRequestTests(SynchronousTestCase):
    """
    Actual requests go on; their responses carry the CORS headers for an
    allowed origin and always C{Vary: Origin}.
    """

    def test_allowed_origin(self):
        """
        The origin is echoed (never C{*} with credentials), with the
        exposed headers and credentials; the request is not changed.
        """
        cors = _filter(origins="https://*.example.com", expose_headers="X-Total, X-Page",
                       credentials="yes")
        exchange = _exchange(b"POST", [(b"origin", b"https://App.example.com")])
        self.assertIsNone(cors.on_request(exchange))
        self.assertEqual(exchange.headers.getRawHeaders(b"origin"), [b"https://App.example.com"])
        cors.on_response(exchange)
        self.assertEqual(exchange.response_headers, [
            (b"vary", b"Origin"),
            (b"access-control-allow-origin", b"https://app.example.com"),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", b"x-total, x-page"),
        ])

    def test_any_origin(self):
        """
        With C{origins = *} an actual response allows C{*}.
        """
        cors = _filter(origins="*")
        exchange = _exchange(headers=[(b"origin", b"https://x.test")])
        cors.on_request(exchange)
        cors.on_response(exchange)
        self.assertEqual(exchange.response_headers,
                         [(b"vary", b"Origin"), (b"access-control-allow-origin", b"*")])

    def test_refused_origin_and_no_origin(self):
        """
        A refused origin's request and a request without Origin go on
        unchanged; their responses get only C{Vary: Origin}.
        """
        cors = _filter(origins="https://app.example.com")
        for headers in ([(b"origin", b"https://evil.test")], []):
            exchange = _exchange(b"GET", headers)
            self.assertIsNone(cors.on_request(exchange))
            self.assertEqual(exchange.context, {})
            cors.on_response(exchange)
            self.assertEqual(exchange.response_headers, [(b"vary", b"Origin")])

    def test_build_filter(self):
        """
        C{build_filter} makes a L{CorsFilter} named after its section.
        """
        settings, _ = _parse(origins="https://app.example.com")
        built = build_filter(FilterSpec("web", "cors", settings),
                             FilterServices(reactor=None, master=None, config=None))
        self.assertIsInstance(built, CorsFilter)
        self.assertEqual(built.name, "web")


ROUTING = """
[listener:web]
bind = 127.0.0.1:8080
[filter:cors]
type = cors
origins = https://app.example.com
[filter:other-cors]
type = cors
origins = https://other.example.com
[route:api]
path = /api/
methods = GET
filters = cors
respond = 200 api
[route:open]
path = /open/
methods = OPTIONS, GET
filters = other-cors
respond = 200 open
[route:plain]
path = /plain/
methods = GET
respond = 200 plain
"""


class RoutingTests(SynchronousTestCase):
    """
    A route with a cors filter also matches preflights, whatever its
    methods; every other request is routed as before.
    """

    http_server = "gatelayer"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(ROUTING, self.http_server))

    def request(self, method, path, *headers):
        """
        Send one request; return C{(status, headers, body)}.
        """
        head = b"%s %s HTTP/1.1\r\nHost: x\r\n" % (method, path)
        head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        return parse_response(self.gate.exchange(head + b"\r\n"))

    def test_table(self):
        """
        Preflights reach the cors filter of a route whose methods lack
        OPTIONS; plain OPTIONS there, and preflights on a route without a
        cors filter, still get 405.
        """
        origin = (b"Origin", b"https://app.example.com")
        asked = (b"Access-Control-Request-Method", b"GET")
        table = [
            ((b"OPTIONS", b"/api/x", origin, asked), 204, b"https://app.example.com"),
            ((b"OPTIONS", b"/api/x", (b"Origin", b"https://evil.test"), asked), 403, None),
            ((b"OPTIONS", b"/api/x", origin), 405, None),
            ((b"OPTIONS", b"/api/x"), 405, None),
            ((b"OPTIONS", b"/plain/x", origin, asked), 405, None),
            ((b"OPTIONS", b"/open/x", (b"Origin", b"https://other.example.com"), asked), 204,
             b"https://other.example.com"),
            ((b"GET", b"/api/x", origin), 200, b"https://app.example.com"),
            ((b"GET", b"/api/x"), 200, None),
        ]
        for request, status, allowed in table:
            got, headers, _ = self.request(*request)
            self.assertEqual(got, status, request)
            self.assertEqual(headers.get(b"access-control-allow-origin"),
                             None if allowed is None else [allowed], request)

    def test_vary_on_route_responses(self):
        """
        Every response of a cors route carries C{Vary: Origin}; a route
        without one gets none.
        """
        self.assertEqual(self.request(b"GET", b"/api/x")[1][b"vary"], [b"Origin"])
        self.assertNotIn(b"vary", self.request(b"GET", b"/plain/x")[1])


class TwistedChannelRoutingTests(RoutingTests):
    """
    The same through the twisted.web channel.
    """

    http_server = "twisted"
