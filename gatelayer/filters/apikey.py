"""
The C{api_key} filter: only requests carrying a registered API key go on,
and the upstream learns which consumer sent them.

The consumer's name goes to C{exchange.context["consumer"]} (a rate limit
can key on it) and upstream as C{X-Consumer}; a client-sent C{X-Consumer} is
always removed first. With C{hide_credentials} (the default) the key itself
does not go upstream.
"""

from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.auth.apikeys import MAX_KEY_LENGTH
from gatelayer.auth.credentials import query_values, refusal, without_query_param
from gatelayer.auth.names import CONSUMER_HEADER
from gatelayer.chain import IFilter
from gatelayer.filters.keys import key_material
from gatelayer.observe.metrics import counter_of

CHALLENGE_SCHEME = "ApiKey"
"""The scheme of the C{WWW-Authenticate} challenge on a refusal."""


@implementer(IFilter)
class ApiKeyFilter:
    """
    Look the request's API key up; pass the consumer upstream or refuse.
    """

    log = Logger()

    def __init__(self, name, settings, store, metrics=None):
        """
        @param name: the filter's section name.
        @param settings: its L{gatelayer.config.filter_apikey.ApiKeySettings}.
        @param store: the L{gatelayer.auth.apikeys.ApiKeyStore} loaded from
            its key file (L{gatelayer.filters.keys.apikey_store}).
        @param metrics: the worker's
            L{gatelayer.observe.metrics.WorkerMetrics} (outcomes counted in
            C{gatelayer_auth_total}), or L{None}.
        """
        self.name = name
        self._outcomes = counter_of(metrics, "gatelayer_auth_total")
        self._allowed = (name, "allowed", "ok")
        self.settings = settings
        self.store = store
        self.kind, self.field = settings.source

    def on_request(self, exchange):
        """
        L{None} with the consumer set when the key is registered, else a 401
        L{Reply}.
        """
        exchange.headers.removeHeader(CONSUMER_HEADER)
        if self.kind == "header":
            values = []
            for value in exchange.headers.getRawHeaders(self.field, ()):
                values.extend(part.strip() for part in value.split(b","))
        else:
            values = query_values(exchange.query, self.field)
        values = [value for value in values if value]
        if not values:
            return self._refuse("the request carries no API key", "missing")
        if len(set(values)) > 1:
            return self._refuse("the request carries several different API keys", "ambiguous")
        key = values[0]
        if len(key) > MAX_KEY_LENGTH:
            return self._refuse("the API key is not valid", "unknown_key")
        consumer = self.store.consumer_for(key)
        if consumer is None:
            return self._refuse("the API key is not valid", "unknown_key")
        exchange.context["consumer"] = consumer
        exchange.headers.setRawHeaders(CONSUMER_HEADER, [consumer.encode("ascii")])
        if self.settings.hide_credentials:
            if self.kind == "header":
                exchange.headers.removeHeader(self.field)
            else:
                exchange.query = without_query_param(exchange.query, self.field)
        self._outcomes.inc(self._allowed)
        return None

    def on_response(self, exchange):
        """
        Nothing to add on the way back.
        """

    def _refuse(self, description, reason):
        self.log.debug("api_key [{filter}]: refused: {reason}", filter=self.name, reason=description)
        self._outcomes.inc((self.name, "denied", reason))
        return refusal(401, CHALLENGE_SCHEME, "invalid_key", description)


def build_filter(spec, services):
    """
    Build the API key filter of C{spec} (a
    L{gatelayer.config.model.FilterSpec}), loading its key file; of
    C{services} it needs only the config, for error messages.

    @raise gatelayer.config.ConfigError: the key file cannot be used.
    """
    return ApiKeyFilter(spec.name, spec.settings, key_material(spec, services.config),
                        metrics=services.metrics)
