"""
The admin endpoint served by the master: C{GET /status} (JSON) and
C{GET /healthz}. Bound to the address in C{[gateway] admin}, which is never
public by default.
"""

import json

from twisted.web import resource, server


class _Status(resource.Resource):
    isLeaf = True

    def __init__(self, master):
        super().__init__()
        self.master = master

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")

        def write(data):
            if not request._disconnected:
                request.write(json.dumps(data, indent=2, default=str).encode("utf-8") + b"\n")
                request.finish()

        def failed(failure):
            if not request._disconnected:
                request.setResponseCode(500)
                request.write(b'{"error":"status unavailable"}\n')
                request.finish()
        self.master.status().addCallbacks(write, failed)
        return server.NOT_DONE_YET


class _Health(resource.Resource):
    isLeaf = True

    def __init__(self, master):
        super().__init__()
        self.master = master

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        alive = sum(1 for r in self.master.workers.values() if r.process is not None)
        ok = alive > 0 and not self.master.stopping
        request.setResponseCode(200 if ok else 503)
        return json.dumps({"status": "ok" if ok else "unavailable", "workers": alive}).encode("utf-8")


def admin_site(master):
    """
    The admin L{server.Site} for C{master}.
    """
    root = resource.Resource()
    root.putChild(b"status", _Status(master))
    root.putChild(b"healthz", _Health(master))
    site = server.Site(root)
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None
    return site
