"""
The C{jwt} filter: only requests with a valid JSON Web Token go on, and the
upstream learns who sent them.

On success the claims go to C{exchange.context["jwt.claims"]} (and C{sub} to
C{exchange.context["consumer"]}) for later filters such as a rate limit keyed
on C{jwt.sub}, and upstream receives C{X-Consumer: <sub>} plus the
C{forward_claims} headers. Those headers are removed from every request
first, so a client can never supply its own identity. Failures answer 401
(403 for missing scopes) with a C{WWW-Authenticate: Bearer} challenge.
"""

import json

from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.auth.credentials import (
    bearer_tokens, cookie_values, header_safe, query_values, refusal, remove_cookie, without_query_param,
)
from gatelayer.auth.jwks import KeySet
from gatelayer.auth.names import CONSUMER_HEADER
from gatelayer.auth.tokens import TokenRejected, TokenVerifier, UnknownKey
from gatelayer.chain import IFilter
from gatelayer.filters.keys import key_material
from gatelayer.observe.metrics import counter_of

_RFC6750_QUERY = b"access_token"


def claim_header_value(value):
    """
    The header form of a claim value: strings as they are, numbers and
    booleans in JSON, lists of those comma-separated, anything else as
    compact JSON; L{None} when the result cannot be a header value.
    """
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(item, (str, int, float, bool)) for item in value):
        text = ",".join(item if isinstance(item, str) else json.dumps(item) for item in value)
    else:
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except (ValueError, RecursionError):
            return None
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        # JSON may escape lone surrogates, which have no UTF-8 form.
        return None
    if not encoded or not header_safe(encoded):
        return None
    return encoded


@implementer(IFilter)
class JwtFilter:
    """
    Verify the request's bearer token; pass identity upstream or refuse.
    """

    log = Logger()

    def __init__(self, name, settings, clock, fetcher=None, static_keys=None, metrics=None):
        """
        @param name: the filter's section name.
        @param settings: its L{gatelayer.config.filter_jwt.JwtSettings}.
        @param clock: an L{IReactorTime} for expiry checks.
        @param fetcher: a L{gatelayer.auth.fetch.JwksFetcher} for
            C{jwks_url}, or L{None}; its keys are added to the static ones
            whenever it fetches.
        @param static_keys: the L{KeySet} loaded from the settings' key and
            secret files (L{gatelayer.filters.keys.jwt_keys}); L{None} for
            none.
        @param metrics: the worker's
            L{gatelayer.observe.metrics.WorkerMetrics} (outcomes counted in
            C{gatelayer_auth_total}), or L{None}.
        """
        self.name = name
        self._outcomes = counter_of(metrics, "gatelayer_auth_total")
        self._allowed = (name, "allowed", "ok")
        self.settings = settings
        self.clock = clock
        self.fetcher = fetcher
        self.static_keys = KeySet() if static_keys is None else static_keys
        self.verifier = TokenVerifier(
            self.static_keys,
            settings.algorithms,
            issuer=settings.issuer,
            audiences=settings.audiences,
            leeway=settings.leeway,
            required_claims=settings.required_claims,
            max_size=settings.max_token_size,
            cache_size=settings.cache_size,
        )
        self._identity_headers = (CONSUMER_HEADER, *(header for _, header in settings.forward_claims))
        if fetcher is not None:
            fetcher.on_keys = self._keys_fetched
            if len(fetcher.keys):
                self._keys_fetched(fetcher.keys)

    def _keys_fetched(self, fetched):
        self.verifier.set_keys(self.static_keys.merged(fetched))

    def stop(self):
        """
        Stop refreshing the JWKS (the filter is being replaced or the worker
        is stopping).
        """
        if self.fetcher is not None:
            self.fetcher.stop()

    def on_request(self, exchange):
        """
        Verify the token; L{None} to go on, or the refusal L{Reply} (or a
        Deferred of either while an unknown key id is being looked up).
        """
        for header in self._identity_headers:
            exchange.headers.removeHeader(header)
        try:
            token = self._token(exchange)
            claims = self.verifier.verify(token, self.clock.seconds())
        except UnknownKey as e:
            waiting = self.fetcher.refetch_for_unknown_key() if self.fetcher is not None else None
            if waiting is None:
                return self._refuse(e)
            return waiting.addCallback(lambda _: self._retry(exchange, token))
        except TokenRejected as e:
            return self._refuse(e)
        except Exception:
            return self._unexpected()
        return self._accept(exchange, claims)

    def on_response(self, exchange):
        """
        Nothing to add on the way back.
        """

    def _retry(self, exchange, token):
        try:
            claims = self.verifier.verify(token, self.clock.seconds())
        except TokenRejected as e:
            return self._refuse(e)
        except Exception:
            return self._unexpected()
        return self._accept(exchange, claims)

    def _unexpected(self):
        # A token the verifier did not foresee is a bug to fix, but still
        # the client's token that is wrong: refuse it rather than answer 500.
        self.log.failure("jwt [{filter}]: verifying a token failed unexpectedly", filter=self.name)
        return self._refuse(TokenRejected("token could not be verified"))

    def _token(self, exchange):
        kind, name = self.settings.token_from
        headers = exchange.headers
        if kind == "header":
            chosen = bearer_tokens(headers)
            others = query_values(exchange.query, _RFC6750_QUERY)
        elif kind == "cookie":
            chosen = cookie_values(headers, name.encode("ascii"))
            others = bearer_tokens(headers) + query_values(exchange.query, _RFC6750_QUERY)
        else:
            chosen = query_values(exchange.query, name.encode("ascii"))
            others = bearer_tokens(headers)
            if name != _RFC6750_QUERY.decode("ascii"):
                others += query_values(exchange.query, _RFC6750_QUERY)
        if not chosen or not chosen[0]:
            raise TokenRejected("the request carries no token" if not others
                                else "the token is not where this route expects it")
        if len(set(chosen) | set(others)) > 1:
            raise TokenRejected("the request carries several different tokens")
        return chosen[0]

    def _refuse(self, rejection):
        extra = ()
        if rejection.status == 403:
            extra = (("scope", " ".join(self.settings.scopes)),)
        self.log.debug("jwt [{filter}]: refused: {reason}", filter=self.name, reason=rejection.description)
        self._outcomes.inc((self.name, "denied", rejection_reason(rejection)))
        return refusal(rejection.status, "Bearer", rejection.error, rejection.description, extra)

    def _accept(self, exchange, claims):
        try:
            self.verifier.check_scopes(claims, self.settings.scopes)
        except TokenRejected as e:
            return self._refuse(e)
        subject = claims.get("sub")
        identity = None
        if subject is not None:
            identity = claim_header_value(subject)
            if identity is None:
                return self._refuse(TokenRejected("token sub claim cannot be passed on"))
        headers = exchange.headers
        if identity is not None:
            headers.setRawHeaders(CONSUMER_HEADER, [identity])
            exchange.context["consumer"] = subject
        for claim, header in self.settings.forward_claims:
            value = claims.get(claim)
            if value is None:
                continue
            encoded = claim_header_value(value)
            if encoded is None:
                self.log.warn("jwt [{filter}]: claim {claim} cannot be a header value; not forwarded",
                              filter=self.name, claim=claim)
                continue
            headers.setRawHeaders(header, [encoded])
        exchange.context["jwt.claims"] = claims
        if self.settings.hide_credentials:
            self._hide(exchange)
        self._outcomes.inc(self._allowed)
        return None

    def _hide(self, exchange):
        # The token may have come in several places at once (the same token
        # is accepted twice): remove it from every place a token is read
        # from, not only the one this route expects.
        kind, name = self.settings.token_from
        headers = exchange.headers
        if bearer_tokens(headers):
            headers.removeHeader(b"authorization")
        exchange.query = without_query_param(exchange.query, _RFC6750_QUERY)
        if kind == "cookie":
            remove_cookie(headers, name.encode("ascii"))
        elif kind == "query":
            exchange.query = without_query_param(exchange.query, name.encode("ascii"))


_REASONS = (
    ("carries no token", "missing"), ("not where this route expects", "missing"),
    ("several different tokens", "ambiguous"), ("expired", "expired"), ("not valid yet", "not_yet_valid"),
    ("signature", "bad_signature"), ("algorithm", "bad_algorithm"), ("unsigned", "bad_algorithm"),
    ("issuer", "bad_issuer"), ("audience", "bad_audience"), ("scope", "scope"),
)


def rejection_reason(rejection):
    """
    The short, fixed C{reason} label of a refused token (a
    L{TokenRejected}): C{missing}, C{expired}, C{bad_signature},
    C{unknown_key}, C{scope}, ... or C{invalid} for any other defect.
    """
    if isinstance(rejection, UnknownKey):
        return "unknown_key"
    if rejection.status == 403:
        return "scope"
    description = rejection.description
    for words, reason in _REASONS:
        if words in description:
            return reason
    return "invalid"


def build_filter(spec, services):
    """
    Build the JWT filter of C{spec} (a L{gatelayer.config.model.FilterSpec})
    for a worker, loading its key and secret files; with C{jwks_url}, take
    the key set the master fetches (or, without a master, fetch it on
    C{services.reactor}).

    @raise gatelayer.config.ConfigError: a key or secret file cannot be used.
    """
    settings = spec.settings
    static_keys = key_material(spec, services.config)
    fetcher = None
    if settings.jwks_url is not None and services.master is not None:
        # In a worker: the master fetches once for the host and sends the
        # keys (gatelayer.filters.jwks_shared).
        from gatelayer.filters.jwks_shared import MasterJwksSource
        fetcher = MasterJwksSource(spec.name, services.master, settings.algorithms, settings.jwks_url)
    elif settings.jwks_url is not None:
        from gatelayer.auth.fetch import JwksFetcher
        fetcher = JwksFetcher(
            services.reactor, settings.jwks_url, settings.algorithms,
            refresh=settings.jwks_refresh, timeout=settings.jwks_timeout,
        )
    result = JwtFilter(spec.name, settings, services.reactor, fetcher, static_keys,
                       metrics=services.metrics)
    if fetcher is not None:
        fetcher.start()
    return result
