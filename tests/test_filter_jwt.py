"""
Tests for the jwt filter: its settings (L{gatelayer.config.filter_jwt}), its
key material (L{gatelayer.filters.keys}) and its behaviour on requests
(L{gatelayer.filters.jwt}).
"""

import io
import json
import os
import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.auth import testing as t
from gatelayer.auth.fetch import JwksFetcher
from gatelayer.chain import Exchange, IFilter, Reply
from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.filter_jwt import KeyFile, parse_filter
from gatelayer.config.model import FilterSpec
from gatelayer.filters import FilterServices, validate_filters
from gatelayer.filters import build_filter as build_any_filter
from gatelayer.auth.tokens import InsufficientScope, TokenRejected, UnknownKey
from gatelayer.filters.jwt import JwtFilter, build_filter, claim_header_value, rejection_reason
from gatelayer.observe.metrics import WorkerMetrics
from gatelayer.filters.keys import key_material
from gatelayer.testing.config import parse_section
from gatelayer.testing.exchange import raw_headers

NOW = 2_000_000.0
CLAIMS = {"sub": "alice", "exp": NOW + 300, "iss": "https://idp.example.com", "aud": "api",
          "tenant": "acme", "scope": "orders:read profile"}


def _claims(**changes):
    claims = dict(CLAIMS)
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _token(claims=None, **kwargs):
    kwargs.setdefault("kid", "rsa1")
    return t.token(CLAIMS if claims is None else claims, **kwargs)


def _exchange(headers=(), query=b""):
    raw = raw_headers(headers)
    return Exchange(method=b"GET", path=b"/orders/1", query=query, headers=raw, client_ip="192.0.2.7")


class KeyFiles:
    """
    Writes the key files a test's configuration names.
    """

    def make_keys(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.write("jwks.json", t.jwks(t.public_jwk(t.private_key("RSA"), "rsa1"),
                                       t.public_jwk(t.private_key("P-256"), "ec1")))
        self.write("idp.pem", t.public_pem(t.private_key("RSA", 2)))
        self.write("hs.key", t.HMAC_SECRET + b"\n")

    def write(self, name, data):
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def parse(self, **items):
        return parse_section(parse_filter, "filter:jwt", items, self.directory)

    def load(self, **items):
        """
        Parse a section as the config does, then load its key material as
        the filter does: C{(keys, problems)}, the problems of both steps.
        """
        settings, problems = self.parse(**items)
        if problems:
            return None, problems
        try:
            return key_material(FilterSpec("jwt", "jwt", settings)), []
        except ConfigError as e:
            return None, e.problems

    def settings(self, **items):
        options = {"keys": "jwks.json", "issuer": "https://idp.example.com", "audience": "api",
                   "forward_claims": "sub:X-User-Id, tenant:X-Tenant"}
        options.update(items)
        settings, problems = self.parse(**{k: v for k, v in options.items() if v is not None})
        self.assertEqual(problems, [])
        return settings


class SettingsTests(KeyFiles, SynchronousTestCase):
    """
    The section's keys are parsed and checked at load time, each problem
    naming section and key; key files are checked to exist there and loaded
    where the filter is built, with problems in the same words.
    """

    def setUp(self):
        self.make_keys()

    def test_defaults(self):
        """
        A section with only keys gets the documented defaults.
        """
        settings, problems = self.parse(keys="jwks.json")
        self.assertEqual(problems, [])
        self.assertEqual(settings.algorithms, ("RS256", "ES256"))
        self.assertEqual(settings.key_files, (KeyFile(os.path.join(self.directory, "jwks.json")),))
        self.assertEqual(len(key_material(FilterSpec("jwt", "jwt", settings))), 2)
        self.assertEqual(settings.token_from, ("header", None))
        self.assertEqual(settings.required_claims, ("exp",))
        self.assertEqual((settings.leeway, settings.hide_credentials, settings.jwks_url), (0.0, False, None))
        self.assertEqual((settings.cache_size, settings.max_token_size), (10000, 8192))

    def test_everything(self):
        """
        Every key of the issue's example is understood.
        """
        settings, problems = self.parse(
            keys="jwks.json, idp.pem", jwks_url="https://idp.example.com/.well-known/jwks.json",
            jwks_refresh="10m", algorithms="RS256, ES256", issuer="https://idp.example.com",
            audience="api", leeway="30s", required_claims="exp, sub", scopes="orders:read",
            token_from="cookie:session", forward_claims="sub:X-User-Id, https://example.com/tenant:X-Tenant",
            hide_credentials="yes", jwks_timeout="2s", cache_size="0", max_token_size="16384")
        self.assertEqual(problems, [])
        self.assertEqual(len(key_material(FilterSpec("jwt", "jwt", settings))), 3)
        self.assertEqual(settings.jwks_refresh, 600.0)
        self.assertEqual(settings.jwks_timeout, 2.0)
        self.assertEqual(settings.leeway, 30.0)
        self.assertEqual(settings.required_claims, ("exp", "sub"))
        self.assertEqual(settings.scopes, ("orders:read",))
        self.assertEqual(settings.token_from, ("cookie", "session"))
        self.assertEqual(settings.forward_claims,
                         (("sub", b"x-user-id"), ("https://example.com/tenant", b"x-tenant")))
        self.assertEqual((settings.hide_credentials, settings.cache_size, settings.max_token_size),
                         (True, 0, 16384))

    def test_secret_default_algorithm(self):
        """
        With only a secret file, HS256 is the default algorithm.
        """
        settings, problems = self.parse(secret_file="hs.key")
        self.assertEqual(problems, [])
        self.assertEqual(settings.algorithms, ("HS256",))

    def test_problems(self):
        """
        Each mistake is reported with file, section, key and what is wrong.
        """
        self.write("private.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        self.write("short.key", b"tooshort")
        self.write("bad.json", b'{"keys": [{"kty": "RSA", "n": "AQAB"}]}')
        cases = [
            ({}, "gate.ini [filter:jwt] keys: is required (or secret_file, or jwks_url)"),
            ({"keys": "missing.json"}, "is not a file"),
            ({"keys": "bad.json"}, "bad.json key 1: is not a valid RSA key"),
            ({"keys": "private.pem"}, "is a private key; configure the public key only"),
            ({"keys": "jwks.json", "algorithms": "none"}, "unsigned tokens are never accepted"),
            ({"keys": "jwks.json", "algorithms": "RS256, XS999"}, "'XS999', not one of"),
            ({"keys": "jwks.json", "algorithms": "RS256"}, "pinned to ES256, which algorithms does not allow"),
            ({"keys": "idp.pem", "algorithms": "RS256, PS256"}, "allows several for it"),
            ({"secret_file": "short.key"}, "too weak for HS256"),
            ({"secret_file": "hs.key", "algorithms": "HS256, HS512"}, "allows several for it"),
            ({"keys": "idp.pem", "token_from": "body"}, "is not header, cookie:NAME or query:NAME"),
            ({"keys": "idp.pem", "forward_claims": "sub"}, "is not claim:Header-Name"),
            ({"keys": "idp.pem", "forward_claims": "sub:Host"}, "Host cannot carry a claim"),
            ({"keys": "idp.pem", "forward_claims": "sub:X-Consumer"}, "X-Consumer cannot carry a claim"),
            ({"keys": "idp.pem", "forward_claims": "sub:X-A, tenant:x-a"}, "names the header x-a twice"),
            ({"keys": "idp.pem", "forward_claims": "sub:X A"}, "is not claim:Header-Name"),
            ({"jwks_url": "ftp://idp.example.com/jwks"}, "is not an http:// or https:// URL"),
            ({"jwks_url": "https:///jwks"}, "is not an http:// or https:// URL"),
            ({"jwks_url": "https://idp.example.com/j", "algorithms": "HS256"}, "shared secrets are never fetched"),
            ({"keys": "idp.pem", "leeway": "1h"}, "leeway: '1h' is more than 10m"),
            ({"keys": "idp.pem", "leeway": "soon"}, "is not a duration"),
            ({"keys": "idp.pem", "jwks_refresh": "5m"}, "jwks_refresh: only applies with jwks_url"),
            ({"jwks_url": "https://i.example/j", "jwks_refresh": "1s"}, "must be at least 10s"),
            ({"jwks_url": "https://i.example/j", "jwks_timeout": "2m"}, "at most 60s"),
            ({"keys": "idp.pem", "scopes": 'a"b'}, "is not a scope"),
            ({"keys": "idp.pem", "required_claims": "exp, a b"}, "is not a claim name"),
            ({"keys": "idp.pem", "hide_credentials": "perhaps"}, "is not yes or no"),
            ({"keys": "idp.pem", "max_token_size": "10"}, "must be at least 256"),
            ({"keys": "idp.pem", "audiance": "api"}, "audiance: is not a known key"),
        ]
        for items, expected in cases:
            _, problems = self.load(**items)
            self.assertTrue(any(expected in p for p in problems), (items, problems))
            self.assertTrue(all(p.startswith("gate.ini [filter:jwt] ") for p in problems), problems)

    def test_key_material_not_loaded_by_config(self):
        """
        The config only checks that key files exist: one holding a private
        key parses, and loading it (as the filter does) reports the problem
        in the words the config check used to, naming file, section and key.
        """
        private = self.write("private.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        settings, problems = self.parse(keys="private.pem")
        self.assertEqual(problems, [])
        self.assertEqual(settings.key_files, (KeyFile(private),))
        self.assertEqual(self.load(keys="private.pem")[1], [
            f"gate.ini [filter:jwt] keys: {private}: is a private key; configure the public key only"])

    def test_pinned_algorithm_kept(self):
        """
        The algorithm written after a key file is kept with its path and
        used when the key is loaded.
        """
        settings, problems = self.parse(keys="idp.pem RS384", algorithms="RS256, RS384")
        self.assertEqual(problems, [])
        self.assertEqual(settings.key_files, (KeyFile(os.path.join(self.directory, "idp.pem"), "RS384"),))
        keys = key_material(FilterSpec("jwt", "jwt", settings))
        self.assertEqual([key.algorithm for key in keys], ["RS384"])

    def test_unreadable_file(self):
        """
        A key file that exists but cannot be opened is a config problem
        naming it. (Opening is refused through a stand-in for C{open}:
        the suite may run as root, who can read any file.)
        """
        from gatelayer.config import values
        path = self.write("locked.pem", b"")

        def refusing_open(name, *args, **kwargs):
            if name == path:
                raise PermissionError(13, "Permission denied", name)
            return open(name, *args, **kwargs)
        # A module-level name shadows the builtin inside that module only.
        values.open = refusing_open
        self.addCleanup(delattr, values, "open")
        _, problems = self.parse(keys="locked.pem")
        self.assertEqual(problems, [f"gate.ini [filter:jwt] keys: {path}: cannot be read: Permission denied"])

    def test_secret_problems_name_secret_file(self):
        """
        A secret file's problems are reported on the secret_file key.
        """
        short = self.write("short.key", b"tooshort")
        problems = self.load(secret_file="short.key")[1]
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith(f"gate.ini [filter:jwt] secret_file: {short}: is too weak for HS256"),
                        problems)

    def test_bad_algorithms_alone(self):
        """
        When algorithms itself is wrong, the keys are not also reported as
        not fitting it.
        """
        _, problems = self.parse(keys="jwks.json, idp.pem", algorithms="RS256, none")
        self.assertEqual(problems, [
            "gate.ini [filter:jwt] algorithms: 'RS256, none' lists none: unsigned tokens are never accepted"])

    def test_through_loader(self):
        """
        A whole gate.ini with a jwt filter loads, paths taken relative to it,
        and its problems are reported by the loader.
        """
        text = """
[listener:web]
bind = 127.0.0.1:0
[route:orders]
path = /orders/
respond = 200 ok
filters = jwt
[filter:jwt]
type = jwt
keys = jwks.json
audience = api
"""
        path = os.path.join(self.directory, "gate.ini")
        config = parse_config_text(text, path)
        validate_filters(config)
        self.assertEqual(len(key_material(config.filters["jwt"], config)), 2)
        with self.assertRaises(ConfigError) as raised:
            parse_config_text(text.replace("jwks.json", "nothing.json"), path)
        self.assertIn("[filter:jwt] keys:", str(raised.exception))

    def test_validate_filters(self):
        """
        validate_filters, which the master runs before it starts, reports
        bad key material as a ConfigError naming file, section and key.
        """
        self.write("jwks.json", b'{"keys": []}')
        path = os.path.join(self.directory, "gate.ini")
        text = ("[listener:web]\nbind = 127.0.0.1:0\n[route:a]\nrespond = 200 ok\nfilters = jwt\n"
                "[filter:jwt]\ntype = jwt\nkeys = jwks.json\n")
        config = parse_config_text(text, path)
        error = self.assertRaises(ConfigError, validate_filters, config)
        jwks = os.path.join(self.directory, "jwks.json")
        self.assertEqual(error.problems, [
            f"{path} [filter:jwt] keys: {jwks}: holds no key usable for verifying signatures"])
        services = FilterServices(reactor=MemoryReactorClock(), master=None, config=config)
        built = self.assertRaises(ConfigError, build_any_filter, config.filters["jwt"], services)
        self.assertEqual(built.problems, error.problems)

    def test_check_reports_bad_key(self):
        """
        C{twistd gatelayer --check} still reports a bad key file as a
        configuration problem (exit 1) naming file, section and key.
        """
        from gatelayer.tap import Options
        private = self.write("private.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        path = os.path.join(self.directory, "gate.ini")
        with open(path, "w") as f:
            f.write("[listener:web]\nbind = 127.0.0.1:0\n[route:a]\nrespond = 200 ok\nfilters = jwt\n"
                    "[filter:jwt]\ntype = jwt\nkeys = private.pem\n")
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        exit = self.assertRaises(SystemExit, Options().parseOptions, ["-c", path, "--check"])
        self.assertEqual(exit.code, 1)
        self.assertIn(f"  - {path} [filter:jwt] keys: {private}: is a private key; configure the public key only\n",
                      stderr.getvalue())


class FilterTests(KeyFiles, SynchronousTestCase):
    """
    The filter on requests: refusals, identity headers, hiding.
    """

    def setUp(self):
        self.make_keys()
        self.clock = Clock()
        self.clock.advance(NOW)

    def make(self, **items):
        settings = self.settings(**items)
        return JwtFilter("jwt", settings, self.clock, static_keys=key_material(FilterSpec("jwt", "jwt", settings)))

    def assertRefused(self, result, status=401, description=None):
        self.assertIsInstance(result, Reply)
        self.assertEqual(result.status, status)
        body = json.loads(result.body)
        headers = dict(result.headers)
        self.assertEqual(headers[b"content-type"], b"application/json")
        challenge = headers[b"www-authenticate"]
        error = "invalid_token" if status == 401 else "insufficient_scope"
        self.assertTrue(challenge.startswith(f'Bearer error="{error}", error_description="'.encode()), challenge)
        self.assertEqual(body["error"], error)
        if description is not None:
            self.assertEqual(body["error_description"], description)
        self.assertIn(body["error_description"].encode(), challenge)

    def test_interface(self):
        """
        The filter provides IFilter.
        """
        verifyObject(IFilter, self.make())

    def test_outcomes_counted(self):
        """
        With the worker's metrics, each decision is counted under the
        filter's name: allowed with reason C{ok}, refusals with their short
        reason.
        """
        metrics = WorkerMetrics(self.clock.seconds)
        settings = self.settings()
        jwt = JwtFilter("jwt", settings, self.clock, static_keys=key_material(FilterSpec("jwt", "jwt", settings)),
                        metrics=metrics)
        jwt.on_request(_exchange([(b"Authorization", b"Bearer " + _token())]))
        jwt.on_request(_exchange())
        jwt.on_request(_exchange([(b"Authorization", b"Bearer " + _token(_claims(exp=NOW - 3600)))]))
        jwt.on_request(_exchange([(b"Authorization", b"Bearer " + _token() + b"x")]))
        counted = {tuple(k): v for k, v in metrics.snapshot()["gatelayer_auth_total"]}
        self.assertEqual(counted, {
            ("jwt", "allowed", "ok"): 1, ("jwt", "denied", "missing"): 1,
            ("jwt", "denied", "expired"): 1, ("jwt", "denied", "bad_signature"): 1})

    def test_rejection_reasons(self):
        """
        Every refusal maps to a short fixed reason, never to the words of
        the description; anything unforeseen is C{invalid}.
        """
        cases = [
            (TokenRejected("the request carries no token"), "missing"),
            (TokenRejected("the token is not where this route expects it"), "missing"),
            (TokenRejected("the request carries several different tokens"), "ambiguous"),
            (TokenRejected("token has expired"), "expired"),
            (TokenRejected("token is not valid yet"), "not_yet_valid"),
            (TokenRejected("token signature does not verify"), "bad_signature"),
            (TokenRejected("unsigned tokens are not accepted"), "bad_algorithm"),
            (TokenRejected("token issuer is not accepted"), "bad_issuer"),
            (TokenRejected("token audience is not accepted"), "bad_audience"),
            (UnknownKey("no key"), "unknown_key"),
            (InsufficientScope("token lacks scope x"), "scope"),
            (TokenRejected("token is not valid base64url"), "invalid"),
        ]
        self.assertEqual([rejection_reason(r) for r, _ in cases], [reason for _, reason in cases])

    def test_accepts(self):
        """
        A valid token passes; claims, consumer and identity headers are set,
        and the token still goes upstream.
        """
        token = _token()
        exchange = _exchange([(b"Authorization", b"Bearer " + token)])
        self.assertIsNone(self.make().on_request(exchange))
        self.assertEqual(exchange.context["jwt.claims"], CLAIMS)
        self.assertEqual(exchange.context["consumer"], "alice")
        self.assertEqual(exchange.headers.getRawHeaders(b"x-consumer"), [b"alice"])
        self.assertEqual(exchange.headers.getRawHeaders(b"x-user-id"), [b"alice"])
        self.assertEqual(exchange.headers.getRawHeaders(b"x-tenant"), [b"acme"])
        self.assertEqual(exchange.headers.getRawHeaders(b"authorization"), [b"Bearer " + token])

    def test_client_identity_removed(self):
        """
        Identity headers sent by the client are removed, even when the token
        has no claim to replace them, and on refusals.
        """
        spoofed = [(b"X-Consumer", b"admin"), (b"X-Tenant", b"other"), (b"X-User-Id", b"root"),
                   (b"x-consumer", b"admin2")]
        exchange = _exchange([(b"Authorization", b"Bearer " + _token(_claims(tenant=None)))] + spoofed)
        self.assertIsNone(self.make().on_request(exchange))
        self.assertEqual(exchange.headers.getRawHeaders(b"x-consumer"), [b"alice"])
        self.assertIsNone(exchange.headers.getRawHeaders(b"x-tenant"))
        refused = _exchange(spoofed)
        self.assertRefused(self.make().on_request(refused))
        for name, _ in spoofed:
            self.assertIsNone(refused.headers.getRawHeaders(name))

    def test_no_sub(self):
        """
        A token without sub passes without X-Consumer.
        """
        exchange = _exchange([(b"Authorization", b"Bearer " + _token(_claims(sub=None)))])
        self.assertIsNone(self.make().on_request(exchange))
        self.assertIsNone(exchange.headers.getRawHeaders(b"x-consumer"))
        self.assertNotIn("consumer", exchange.context)

    def test_bad_tokens(self):
        """
        Missing, malformed, expired, forged and misaddressed tokens, huge
        tokens, bad base64 and non-JSON payloads get 401 with a Bearer
        challenge, never an exception.
        """
        jwt = self.make()
        self.assertRefused(jwt.on_request(_exchange()), description="the request carries no token")
        for headers in ([(b"Authorization", b"Basic YWxhZGRpbjpvcGVuc2VzYW1l")], [(b"Authorization", b"Bearer")],
                        [(b"Authorization", b"Bearer ")], [(b"Authorization", b"")],
                        [(b"Authorization", b"Bearer " + b"A" * 1000000)]):
            self.assertRefused(jwt.on_request(_exchange(headers)))
        for description, token in t.bad_tokens(CLAIMS, NOW):
            if description in ("spaces", "trailing newline"):
                # Whitespace around a header value is not part of it (RFC 9110 5.5).
                continue
            exchange = _exchange([(b"Authorization", b"Bearer " + token)])
            result = jwt.on_request(exchange)
            self.assertRefused(result)
            self.assertNotIn("jwt.claims", exchange.context, description)

    def test_random_requests(self):
        """
        Random Authorization headers, cookies and query strings, with every
        token_from, are only ever refused.
        """
        import random

        rng = random.Random(6)
        alphabet = b"Bearer bearer ABCxyz019-_.=+/%;,&\x00\xff{}\"' \t"
        filters = [self.make(), self.make(token_from="cookie:s"), self.make(token_from="query:access_token")]
        for _ in range(300):
            junk = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
            exchange = _exchange([(b"Authorization", junk), (b"Cookie", b"s=" + junk)],
                                 query=b"access_token=" + junk)
            for jwt in filters:
                self.assertIsInstance(jwt.on_request(exchange), Reply)

    def test_several_tokens(self):
        """
        Different tokens in several Authorization headers, or in the header
        and the access_token query parameter, are refused; the same token
        twice is not.
        """
        jwt = self.make()
        one, two = _token(), _token(_claims(sub="bob"))
        self.assertRefused(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + one),
                                                     (b"Authorization", b"Bearer " + two)])),
                           description="the request carries several different tokens")
        self.assertRefused(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + one)],
                                                    query=b"access_token=" + two)),
                           description="the request carries several different tokens")
        self.assertIsNone(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + one)],
                                                   query=b"access_token=" + one)))
        self.assertIsNone(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + one),
                                                    (b"authorization", b"bearer " + one)])))

    def test_query(self):
        """
        token_from = query:NAME reads the parameter; several different values,
        or a different bearer header, are refused; hiding removes only it.
        """
        jwt = self.make(token_from="query:token", hide_credentials="yes")
        one, two = _token(), _token(_claims(sub="bob"))
        exchange = _exchange(query=b"a=1&token=" + one + b"&b=%20x")
        self.assertIsNone(jwt.on_request(exchange))
        self.assertEqual(exchange.query, b"a=1&b=%20x")
        self.assertEqual(exchange.context["consumer"], "alice")
        self.assertRefused(jwt.on_request(_exchange(query=b"token=" + one + b"&token=" + two)))
        self.assertRefused(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + two)],
                                                    query=b"token=" + one)))
        self.assertRefused(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + one)])),
                           description="the token is not where this route expects it")
        self.assertRefused(jwt.on_request(_exchange(query=b"token=%ZZ" + one)))

    def test_cookie(self):
        """
        token_from = cookie:NAME reads the cookie; hiding removes just that
        cookie.
        """
        jwt = self.make(token_from="cookie:session", hide_credentials="yes")
        exchange = _exchange([(b"Cookie", b"theme=dark; session=" + _token() + b"; lang=en")])
        self.assertIsNone(jwt.on_request(exchange))
        self.assertEqual(exchange.headers.getRawHeaders(b"cookie"), [b"theme=dark; lang=en"])
        only = _exchange([(b"Cookie", b"session=" + _token())])
        self.assertIsNone(jwt.on_request(only))
        self.assertIsNone(only.headers.getRawHeaders(b"cookie"))
        self.assertRefused(jwt.on_request(_exchange([(b"Cookie", b"session=a; session=b")])))
        self.assertRefused(jwt.on_request(_exchange([(b"Cookie", b"other=" + _token())])))

    def test_hide_header(self):
        """
        hide_credentials = yes removes the Authorization header.
        """
        exchange = _exchange([(b"Authorization", b"Bearer " + _token())])
        self.assertIsNone(self.make(hide_credentials="yes").on_request(exchange))
        self.assertIsNone(exchange.headers.getRawHeaders(b"authorization"))

    def test_hide_every_copy(self):
        """
        hide_credentials removes the token from every place it came in (the
        same token may be sent twice): the bearer header, C{access_token} in
        the query (however its name is encoded), and the configured cookie
        or parameter; other parameters and cookies stay.
        """
        token = _token()
        cases = [
            ({}, [(b"Authorization", b"Bearer " + token)], b"a=1&access_token=" + token + b"&b=2", b"a=1&b=2"),
            ({}, [(b"Authorization", b"Bearer " + token)], b"%61ccess_token=" + token, b""),
            ({"token_from": "query:token"}, [(b"Authorization", b"Bearer " + token)],
             b"token=" + token + b"&access_token=" + token + b"&c=3", b"c=3"),
            ({"token_from": "cookie:session"},
             [(b"Cookie", b"session=" + token + b"; k=v"), (b"Authorization", b"Bearer " + token)],
             b"access_token=" + token, b""),
        ]
        for settings, headers, query, left in cases:
            exchange = _exchange(headers, query=query)
            self.assertIsNone(self.make(hide_credentials="yes", **settings).on_request(exchange))
            self.assertEqual(exchange.query, left, settings)
            self.assertIsNone(exchange.headers.getRawHeaders(b"authorization"), settings)
            for cookie in exchange.headers.getRawHeaders(b"cookie", ()):
                self.assertNotIn(token, cookie)

    def test_scopes(self):
        """
        Missing scopes get 403 with an insufficient_scope challenge naming
        the scopes needed; scp lists count too.
        """
        jwt = self.make(scopes="orders:read, orders:write")
        result = jwt.on_request(_exchange([(b"Authorization", b"Bearer " + _token())]))
        self.assertRefused(result, status=403)
        self.assertIn(b'scope="orders:read orders:write"', dict(result.headers)[b"www-authenticate"])
        granted = _token(_claims(scope=None, scp=["orders:read", "orders:write"]))
        self.assertIsNone(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + granted)])))

    def test_time(self):
        """
        exp, nbf and the leeway follow the clock.
        """
        jwt = self.make(leeway="30s")
        token = _token(_claims(exp=NOW + 60, nbf=NOW + 40))
        self.assertRefused(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + token)])),
                           description="token is not valid yet")
        self.clock.advance(10)
        self.assertIsNone(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + token)])))
        self.clock.advance(79)
        self.assertIsNone(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + token)])))
        self.clock.advance(1)
        self.assertRefused(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + token)])),
                           description="token has expired")

    def test_unsafe_claims(self):
        """
        A sub that cannot be a header value is refused; another claim that
        cannot is just not forwarded.
        """
        jwt = self.make()
        self.assertRefused(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + _token(
            _claims(sub="alice\r\nX-Admin: yes")))])))
        payload = json.dumps(_claims(sub=None)).encode()[:-1] + b', "sub": "\\ud800"}'
        lone = t.sign({"alg": "RS256", "kid": "rsa1"}, payload, t.private_key("RSA"), "RS256")
        self.assertRefused(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + lone)])))
        exchange = _exchange([(b"Authorization", b"Bearer " + _token(_claims(tenant="a\nb")))])
        self.assertIsNone(jwt.on_request(exchange))
        self.assertIsNone(exchange.headers.getRawHeaders(b"x-tenant"))

    def test_unforeseen_error(self):
        """
        Should verification ever raise something unforeseen, the request is
        refused with 401 and the error logged, never a 500.
        """
        jwt = self.make()

        def broken(token, now):
            raise RuntimeError("bug")
        jwt.verifier.verify = broken
        self.assertRefused(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + _token())])),
                           description="token could not be verified")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_claim_header_values(self):
        """
        Claim values become header text: strings as is, numbers and booleans
        as JSON, flat lists comma-joined, objects as JSON.
        """
        self.assertEqual(claim_header_value("acme"), b"acme")
        self.assertEqual(claim_header_value("\u00e9"), "\u00e9".encode())
        self.assertEqual(claim_header_value(42), b"42")
        self.assertEqual(claim_header_value(True), b"true")
        self.assertEqual(claim_header_value(["a", 1, False]), b"a,1,false")
        self.assertEqual(claim_header_value({"a": [1]}), b'{"a":[1]}')
        self.assertIsNone(claim_header_value(""))
        self.assertIsNone(claim_header_value("a\x00b"))
        self.assertIsNone(claim_header_value("\ud800"))
        deep = []
        for _ in range(100000):
            deep = [deep]
        self.assertIsNone(claim_header_value({"a": deep}))

    def test_secret_and_pem(self):
        """
        HS256 tokens verify with a secret file, PEM keys without kid.
        """
        jwt = self.make(keys="idp.pem", secret_file="hs.key", algorithms="RS256, HS256")
        for token in (_token(kid=None, key=t.private_key("RSA", 2)),
                      _token(kid=None, key=t.HMAC_SECRET, alg="HS256")):
            self.assertIsNone(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + token)])))
        confused = t.hmac_token(t.public_pem(t.private_key("RSA", 2)), {"alg": "HS256"}, CLAIMS)
        self.assertRefused(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + confused)])),
                           description="token signature does not verify")


class JwksUrlTests(KeyFiles, SynchronousTestCase):
    """
    The filter with a JWKS URL: rotation through unknown key ids, bounded
    waits, known keys served while a fetch hangs.
    """

    URL = "https://idp.example.com/jwks.json"

    def setUp(self):
        self.make_keys()
        self.clock = Clock()
        self.clock.advance(NOW)
        self.agent = t.FakeAgent()
        self.fetcher = JwksFetcher(self.clock, self.URL, ("RS256",), timeout=5, agent=self.agent)
        settings = self.settings(keys=None, jwks_url=self.URL, algorithms="RS256")
        self.jwt = JwtFilter("jwt", settings, self.clock, self.fetcher)
        self.fetcher.start()
        self.addCleanup(self.jwt.stop)

    def request(self, kid, key_index=0):
        token = _token(kid=kid, key=t.private_key("RSA", key_index))
        return self.jwt.on_request(_exchange([(b"Authorization", b"Bearer " + token)]))

    def serve(self, *kids):
        self.agent.respond(t.FakeResponse(200, t.jwks(
            *(t.public_jwk(t.private_key("RSA", index), kid) for kid, index in kids))))

    def test_rotation(self):
        """
        After the first fetch, a token with a new kid waits for one refetch
        and passes once the provider publishes that key.
        """
        self.serve(("k1", 0))
        self.assertIsNone(self.request("k1"))
        waiting = self.request("k2", 1)
        self.assertIsInstance(waiting, Deferred)
        self.serve(("k1", 0), ("k2", 1))
        self.assertIsNone(self.successResultOf(waiting))
        self.assertIsNone(self.request("k2", 1))

    def test_unknown_kid_rate_limited(self):
        """
        Unknown kids trigger at most one refetch a minute; in between they
        get 401 at once.
        """
        self.serve(("k1", 0))
        waiting = self.request("nope")
        self.serve(("k1", 0))
        self.assertRefused(self.successResultOf(waiting))
        self.assertRefused(self.request("nope"))
        self.assertRefused(self.request("other"))
        self.assertEqual(len(self.agent.requests), 2)

    def test_hanging_fetch(self):
        """
        While a fetch hangs, known kids are served at once and unknown ones
        wait no longer than the timeout, then get 401.
        """
        self.serve(("k1", 0))
        waiting = self.request("k2", 1)
        self.assertNoResult(waiting)
        self.assertIsNone(self.request("k1"))
        self.clock.advance(4)
        self.assertNoResult(waiting)
        self.assertIsNone(self.request("k1"))
        self.clock.advance(1)
        self.assertRefused(self.successResultOf(waiting))

    def test_before_first_fetch(self):
        """
        Before the first fetch completes, tokens wait for it (bounded).
        """
        waiting = self.request("k1")
        self.serve(("k1", 0))
        self.assertIsNone(self.successResultOf(waiting))

    def test_static_keys_kept(self):
        """
        Configured key files stay valid alongside fetched keys.
        """
        settings = self.settings(keys="idp.pem", jwks_url=self.URL, algorithms="RS256")
        agent = t.FakeAgent()
        fetcher = JwksFetcher(self.clock, self.URL, ("RS256",), timeout=5, agent=agent)
        jwt = JwtFilter("jwt", settings, self.clock, fetcher, key_material(FilterSpec("jwt", "jwt", settings)))
        fetcher.start()
        self.addCleanup(jwt.stop)
        agent.respond(t.FakeResponse(200, t.jwks(t.public_jwk(t.private_key("RSA"), "k1"))))
        for token in (_token(kid=None, key=t.private_key("RSA", 2)), _token(kid="k1")):
            self.assertIsNone(jwt.on_request(_exchange([(b"Authorization", b"Bearer " + token)])))

    assertRefused = FilterTests.assertRefused


class BuildTests(KeyFiles, SynchronousTestCase):
    """
    Building the filter through the registry.
    """

    def setUp(self):
        self.make_keys()

    def test_build(self):
        """
        build_filter makes a JwtFilter; with jwks_url its fetcher starts on
        the worker's reactor and stop() leaves nothing scheduled.
        """
        reactor = MemoryReactorClock()
        services = FilterServices(reactor=reactor, master=None, config=None)
        plain = build_any_filter(FilterSpec("jwt", "jwt", self.settings()), services)
        self.assertIsInstance(plain, JwtFilter)
        self.assertIsNone(plain.fetcher)
        settings = self.settings(keys=None, jwks_url="http://127.0.0.1:9/jwks.json", algorithms="RS256")
        fetching = build_filter(FilterSpec("jwt", "jwt", settings), services)
        self.assertTrue(fetching.fetcher.fetching)
        self.assertEqual(reactor.tcpClients[0][:2], ("127.0.0.1", 9))
        fetching.stop()
        self.assertEqual([c for c in reactor.getDelayedCalls() if c.active()], [])
