"""
The static-files terminal: C{static = /srv/www}.
"""

import mimetypes
import os
import stat
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import IPushProducer
from twisted.python.filepath import FilePath, InsecurePath
from zope.interface import implementer


_INDEX = "index.html"
SMALL_FILE = 65536


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
        if request.method == b"HEAD" or info.st_size <= SMALL_FILE:
            # Small files go out in one write, without a producer.
            data = handle.read() if request.method != b"HEAD" else b""
            handle.close()
            request.write(data)
            request.finish()
            return
        request.write(b"")
        streamer = FileStreamer(handle, request)
        request.on_lost(streamer.stopProducing)
        request.registerProducer(streamer, True)
        streamer.resumeProducing()


@implementer(IPushProducer)
class FileStreamer:
    """
    Streams an open file to a request with back-pressure: it writes until
    the connection's buffer asks it to pause, and goes on when resumed.
    (twisted.web's pull-producer path runs on the global cooperator, which
    a worker component must not depend on.)
    """

    CHUNK = 65536

    def __init__(self, handle, request):
        self.handle = handle
        self.request = request
        self.paused = False
        self.done = False

    def resumeProducing(self):
        """
        Write chunks until paused or the file ends.
        """
        self.paused = False
        while not self.paused and not self.done:
            chunk = self.handle.read(self.CHUNK)
            if not chunk:
                self._finish()
                return
            self.request.write(chunk)

    def pauseProducing(self):
        """
        The client is slow: stop reading the file.
        """
        self.paused = True

    def stopProducing(self):
        """
        The client went away.
        """
        self.done = True
        self.handle.close()

    def _finish(self):
        self.done = True
        self.handle.close()
        request = self.request
        if not request._disconnected and not request.finished:
            request.unregisterProducer()
            request.finish()


def _not_modified(header, mtime):
    try:
        since = parsedate_to_datetime(header.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(mtime) <= since


