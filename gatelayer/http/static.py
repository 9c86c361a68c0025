"""
The static-files terminal: C{static = /srv/www}.
"""

import mimetypes
import os
import stat
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import unquote_to_bytes

from twisted.protocols.basic import FileSender
from twisted.python.filepath import FilePath, InsecurePath


_INDEX = "index.html"


class StaticTerminal:
    """
    Serves files below a directory, as nginx's C{root} with C{autoindex off}:
    the path after the route's prefix names a file; a directory serves its
    C{index.html} or 404; a path escaping the root (C{..}, encoded or not) is
    404. Files stream with back-pressure; GET and HEAD only (405 otherwise);
    C{If-Modified-Since} gives 304. Range requests are not supported (the
    whole file is sent, which clients accept).
    """

    def __init__(self, spec, reactor):
        self.root = FilePath(spec.static)
        self.prefix = (spec.strip_prefix or spec.path).encode("utf-8")
        self.reactor = reactor

    def resolve(self, path):
        """
        The L{FilePath} for request path C{path} (bytes), or L{None}.
        """
        rest = path[len(self.prefix):] if path.startswith(self.prefix) else path
        current = self.root
        for raw in rest.split(b"/"):
            if not raw:
                continue
            segment = unquote_to_bytes(raw)
            try:
                name = segment.decode("utf-8")
            except UnicodeDecodeError:
                return None
            if name in (".", "..") or "\0" in name:
                return None
            try:
                current = current.child(name)
            except InsecurePath:
                return None
        return current

    def serve(self, request, exchange, route, ran):
        """
        Send the file the request names.
        """
        gateway = request.channel.factory.gateway
        if request.method not in (b"GET", b"HEAD"):
            request.responseHeaders.setRawHeaders(b"allow", [b"GET, HEAD"])
            gateway.send_error(request, 405, "method not allowed", route.filters, exchange, ran)
            return
        target = self.resolve(request.path)
        try:
            if target is not None and target.isdir():
                target = target.child(_INDEX)
            info = os.stat(target.path) if target is not None else None
        except OSError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            gateway.send_error(request, 404, "not found", route.filters, exchange, ran)
            return
        try:
            handle = open(target.path, "rb")
        except OSError:
            gateway.send_error(request, 404, "not found", route.filters, exchange, ran)
            return
        headers = request.responseHeaders
        last_modified = formatdate(info.st_mtime, usegmt=True).encode("ascii")
        headers.setRawHeaders(b"last-modified", [last_modified])
        since = request.requestHeaders.getRawHeaders(b"if-modified-since")
        if since and _not_modified(since[0], info.st_mtime):
            handle.close()
            exchange.status = 304
            request.setResponseCode(304)
            gateway.response_headers(request, exchange, route, ran)
            request.finish()
            return
        content_type, encoding = mimetypes.guess_type(target.basename())
        headers.setRawHeaders(b"content-type", [(content_type or "application/octet-stream").encode("ascii")])
        if encoding:
            headers.setRawHeaders(b"content-encoding", [encoding.encode("ascii")])
        exchange.status = 200
        request.setResponseCode(200)
        gateway.response_headers(request, exchange, route, ran)
        headers.setRawHeaders(b"content-length", [b"%d" % (info.st_size,)])
        if request.method == b"HEAD" or info.st_size == 0:
            handle.close()
            request.write(b"")
            request.finish()
            return
        sender = FileSender()
        sender.CHUNK_SIZE = 65536
        request.write(b"")
        finished = sender.beginFileTransfer(handle, request)

        def done(_):
            handle.close()
            if not request._disconnected and not request.finished:
                request.finish()

        def lost():
            sender.stopProducing()

        request.on_lost(lost)
        finished.addBoth(done)


def _not_modified(header, mtime):
    try:
        since = parsedate_to_datetime(header.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(mtime) <= since


