"""
The HTTP/2 keys of C{[listener:NAME]}: C{http2} (offered through ALPN on
TLS listeners, on by default there) and the limits and flood thresholds of
its connections (C{h2_*}).
"""

from attrs import frozen

from gatelayer.config import values as v

__all__ = ["H2_KEYS", "H2Settings", "h2_listener_keys"]

#: The keys this module reads, besides C{http2}.
H2_KEYS = ("h2_max_concurrent_streams", "h2_max_header_list_size", "h2_max_resets",
           "h2_max_pings", "h2_max_settings", "h2_flood_window")


@frozen
class H2Settings:
    """
    What an HTTP/2 connection of one listener allows.

    @ivar max_concurrent_streams: streams a client may have open at once
        (advertised in SETTINGS; more are refused with REFUSED_STREAM).
    @ivar max_header_list_size: the largest decoded header list of a
        request, in bytes (advertised; larger ones are refused).
    @ivar max_resets: client stream resets (RST_STREAM) one connection may
        send in C{flood_window} seconds before it is told GOAWAY
        ENHANCE_YOUR_CALM (the rapid-reset attack, CVE-2023-44487).
    @ivar max_pings: PING frames per C{flood_window} before the same.
    @ivar max_settings: SETTINGS frames per C{flood_window} before the same.
    @ivar flood_window: the window of the three counts, in seconds.
    """

    max_concurrent_streams: int = 100
    max_header_list_size: int = 32768
    max_resets: int = 100
    max_pings: int = 20
    max_settings: int = 20
    flood_window: float = 10.0


def h2_listener_keys(r, mode):
    """
    Read C{http2} and the C{h2_*} keys of the listener section C{r} (a
    L{gatelayer.config.reader.SectionReader}) of mode C{mode}, recording
    what does not apply: HTTP/2 is only offered on TLS listeners of mode
    C{http} (through ALPN; cleartext h2c is not served). Returns keyword
    arguments of L{gatelayer.config.model.ListenerSpec}: C{http2} (bool)
    and C{h2} (an L{H2Settings}).
    """
    tls = r.has("tls") and mode == "http"
    http2 = r.get("http2", v.parse_bool, None)
    if http2 and not tls:
        r.error("http2", "needs a TLS listener of mode = http (HTTP/2 is offered through ALPN; "
                         "cleartext h2c is not served)", r.raw("http2"))
    enabled = tls if http2 is None else bool(http2) and tls
    defaults = H2Settings()
    values = {
        "max_concurrent_streams": r.get(
            "h2_max_concurrent_streams", lambda t: v.parse_int(t, 1, 10000), None),
        "max_header_list_size": r.get("h2_max_header_list_size", _header_list_size, None),
        "max_resets": r.get("h2_max_resets", lambda t: v.parse_int(t, 1, 1000000), None),
        "max_pings": r.get("h2_max_pings", lambda t: v.parse_int(t, 1, 1000000), None),
        "max_settings": r.get("h2_max_settings", lambda t: v.parse_int(t, 1, 1000000), None),
        "flood_window": r.get("h2_flood_window", _window, None),
    }
    if not enabled:
        for key in H2_KEYS:
            if r.has(key):
                r.error(key, "only applies with http2 on (a TLS listener of mode = http)")
    settings = H2Settings(**{
        name: getattr(defaults, name) if value is None else value for name, value in values.items()})
    return {"http2": enabled, "h2": settings}


def _header_list_size(text):
    size = v.parse_size(text)
    if not 1024 <= size <= 1024 * 1024:
        raise ValueError("is not between 1KB and 1MB")
    return size


def _window(text):
    seconds = v.parse_duration(text)
    if not 0 < seconds <= 3600:
        raise ValueError("is not above 0s and at most 1h")
    return seconds
