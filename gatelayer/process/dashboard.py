"""
The admin dashboard: C{GET /} on the admin endpoint answers one
self-contained HTML page (C{dashboard.html}, package data) whose script
polls C{/status} and C{/metrics} and renders them.

The page is read and its headers computed once, when the admin site is
built. Its inline script and style are allowed by their SHA-256 hashes in
the C{Content-Security-Policy}; nothing else may load or run
(C{default-src 'none'}), the script may only fetch from the admin endpoint
itself (C{connect-src 'self'}), and the page cannot be framed.

The page holds no data of its own: everything it shows comes from
C{/status} and C{/metrics}, which keep the admin guard's bearer token. So
the page itself passes the Host check like every admin request but not the
token (a browser cannot send a bearer token when it opens a URL); its
script sends the token on every request it makes (see docs/dashboard.md).
"""

import base64
import hashlib
import re

from importlib import resources

from twisted.web import resource

__all__ = ["DASHBOARD_PATH", "DashboardPage", "content_security_policy", "load_dashboard"]

#: The path of the page on the admin endpoint.
DASHBOARD_PATH = b"/"

_INLINE = {"script": re.compile(rb"<script>(.*?)</script>", re.S),
           "style": re.compile(rb"<style>(.*?)</style>", re.S)}


def _hash(block):
    return "'sha256-" + base64.b64encode(hashlib.sha256(block).digest()).decode("ascii") + "'"


def content_security_policy(page):
    """
    The C{Content-Security-Policy} for C{page} (bytes): its one inline
    C{<script>} and one inline C{<style>} allowed by hash, nothing else.

    @raise ValueError: the page does not have exactly one of each.
    """
    hashes = {}
    for tag, pattern in _INLINE.items():
        blocks = pattern.findall(page)
        if len(blocks) != 1:
            raise ValueError(f"the dashboard must have exactly one inline <{tag}>, not {len(blocks)}")
        hashes[tag] = _hash(blocks[0])
    return ("default-src 'none'; "
            f"script-src {hashes['script']}; style-src {hashes['style']}; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'").encode("ascii")


def load_dashboard():
    """
    The page as shipped with the package (bytes).
    """
    return resources.files("gatelayer.process").joinpath("dashboard.html").read_bytes()


class DashboardPage(resource.Resource):
    """
    C{GET /}: the page, with its security headers.
    """

    isLeaf = True

    def __init__(self, page=None):
        """
        @param page: the HTML (bytes); by default L{load_dashboard}.
        """
        super().__init__()
        self.page = load_dashboard() if page is None else page
        self.headers = (
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-security-policy", content_security_policy(self.page)),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
        )

    def render_GET(self, request):
        """
        The page (C{HEAD} is answered from this too, without the body).
        """
        for name, value in self.headers:
            request.setHeader(name, value)
        return self.page
