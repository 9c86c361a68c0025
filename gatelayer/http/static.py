"""
The static-files terminal: C{static = /srv/www}.
"""

import mimetypes
import os
import stat
from email.utils import formatdate
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.chain import ITerminal
from gatelayer.http.conditional import (
    UNSATISFIABLE, entity_tag, if_range_matches, modified_since, none_match, parse_range)

__all__ = ["StaticTerminal", "FileStreamer", "SMALL_FILE", "http_time"]

_INDEX = "index.html"
SMALL_FILE = 65536
"""
Files (or ranges) up to this many bytes go out in one write; larger ones
are streamed by a L{FileStreamer}.
"""

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_LAST_HTTP_SECOND = 253402300799  # Fri, 31 Dec 9999 23:59:59 GMT
_ALLOW = (b"allow", b"GET, HEAD")
# Characters no served name contains: a separator (an encoded "/" or, on
# any platform the files may be copied to, "\"), NUL and the other
# controls.
_REFUSED_CHARS = frozenset("/\\\x7f" + "".join(map(chr, range(32))))
# Opening never blocks (a FIFO planted in the root would otherwise hang
# the worker) and never follows a symlink swapped in after the check.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)


@implementer(ITerminal)
class StaticTerminal:
    """
    Serves files below a directory, as nginx's C{root} with C{autoindex off}:
    the path after the route's prefix names a file; a directory serves its
    C{index.html} or 404.

    The terminal is safe on its own, whatever normalization ran before it:
    a path with a C{.} or C{..} segment (encoded or not), an encoded C{/},
    a backslash, NUL or another control character, or bytes that are not
    UTF-8 (overlong forms included) is 404; so is a path that resolves,
    after symlinks, outside the root, a dot-file or dot-directory unless
    the route says C{dotfiles = allow}, and a regular file named with a
    trailing slash.

    GET and HEAD only (405 otherwise). Validators C{Last-Modified} and
    C{ETag}; C{If-None-Match} and C{If-Modified-Since} give 304. One byte
    range per request (C{Range}, C{If-Range}) gives 206, or 416 when it
    starts past the end; several ranges get the whole file. Every answer
    carries C{X-Content-Type-Options: nosniff}. Bodies stream with
    back-pressure.
    """

    log = Logger()

    def __init__(self, spec, reactor):
        """
        @param spec: the route's L{gatelayer.config.model.RouteSpec}.
        @param reactor: the worker's reactor (unused: files are read as the
            connection asks for them, with no timers).
        """
        self.root = os.path.realpath(spec.static)
        self._inside = self.root if self.root.endswith(os.sep) else self.root + os.sep
        self.prefix = (spec.strip_prefix or spec.path).encode("utf-8")
        self.dotfiles = spec.dotfiles
        self.reactor = reactor

    # -- which file --------------------------------------------------------

    def resolve(self, path):
        """
        The real path (C{str}, symlinks resolved) of the regular file that
        request path C{path} (bytes, without query) names below the root,
        or L{None} when it names nothing that may be served.
        """
        found = self._locate(path)
        return found[0] if found is not None else None

    def _locate(self, path):
        """
        C{(real path, name)} of the file C{path} names, where C{name} is the
        last name the request spelled (C{index.html} for a directory) and
        gives the content type, as nginx takes it from the URI; or L{None}.
        """
        rest = path[len(self.prefix):] if path.startswith(self.prefix) else path
        names = []
        for raw in rest.split(b"/"):
            if not raw:
                continue
            name = self._name(raw)
            if name is None:
                return None
            names.append(name)
        try:
            real = self._contained(os.path.join(self.root, *names))
            if real is None:
                return None
            name = names[-1] if names else _INDEX
            info = os.stat(real)
            if stat.S_ISDIR(info.st_mode):
                real = self._contained(os.path.join(real, _INDEX))
                if real is None:
                    return None
                name = _INDEX
                info = os.stat(real)
            elif rest.endswith(b"/"):
                # "file.txt/" names no file (as nginx answers).
                return None
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return real, name

    def _name(self, raw):
        """
        The file name one path segment (bytes, percent-encoded) spells, or
        L{None} if it is refused.
        """
        try:
            name = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if name in (".", "..") or not _REFUSED_CHARS.isdisjoint(name):
            return None
        if name.startswith(".") and not self.dotfiles:
            return None
        return name

    def _contained(self, candidate):
        """
        C{candidate} with every symlink resolved, if that is still below the
        root and (unless dot-files are allowed) reaches no dot-file through
        a symlink; else L{None}.
        """
        real = os.path.realpath(candidate)
        if real == self.root:
            return real
        if not real.startswith(self._inside):
            return None
        if not self.dotfiles:
            for name in real[len(self._inside):].split(os.sep):
                if name.startswith("."):
                    return None
        return real

    def open_file(self, path):
        """
        Open the file request path C{path} names: C{(handle, stat result,
        name)} (see L{_locate} for the name), or L{None}. The stat describes
        the opened file itself, so its size and time match the bytes sent.
        """
        found = self._locate(path)
        if found is None:
            return None
        real, name = found
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except (OSError, ValueError):
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                return None
            if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0):
                os.set_blocking(fd, True)
            return os.fdopen(fd, "rb"), info, name
        except OSError:
            os.close(fd)
            return None

    # -- the answer --------------------------------------------------------

    def serve(self, exchange):
        """
        Answer the request with the file its (canonical) path names.
        """
        method = exchange.method
        if method not in (b"GET", b"HEAD"):
            exchange.reply_error(405, "method not allowed: static files answer GET and HEAD",
                                 (_ALLOW, _NOSNIFF))
            return
        opened = self.open_file(exchange.path)
        if opened is None:
            exchange.reply_error(404, "file not found", (_NOSNIFF,))
            return
        handle, info, name = opened
        size = info.st_size
        mtime = http_time(info.st_mtime)
        etag = entity_tag(mtime, size)
        last_modified = formatdate(mtime, usegmt=True).encode("ascii")
        validators = ((b"last-modified", last_modified), (b"etag", etag),
                      (b"accept-ranges", b"bytes"), _NOSNIFF)
        request_headers = exchange.headers
        if _not_modified(request_headers, etag, mtime):
            handle.close()
            exchange.respond(304, validators).finish()
            return
        span = _requested_range(request_headers, size, etag, mtime)
        if span is UNSATISFIABLE:
            handle.close()
            exchange.reply_error(
                416, "range not satisfiable: the file is %d bytes" % (size,),
                ((b"content-range", b"bytes */%d" % (size,)), (b"accept-ranges", b"bytes"), _NOSNIFF))
            return
        content_type, encoding = mimetypes.guess_type(name)
        headers = validators + ((b"content-type", (content_type or "application/octet-stream").encode("ascii")),)
        if encoding:
            headers += ((b"content-encoding", encoding.encode("ascii")),)
        if span is None:
            status, start, length = 200, 0, size
        else:
            status, start, length = 206, span[0], span[1] - span[0] + 1
            headers += ((b"content-range", b"bytes %d-%d/%d" % (span[0], span[1], size)),)
        body = None
        if method != b"HEAD" and 0 < length <= SMALL_FILE:
            # Small bodies are read before anything is sent (a read error
            # can still be answered) and go out in one write.
            try:
                handle.seek(start)
                body = handle.read(length)
            except OSError as error:
                handle.close()
                self.log.warn("static file {name} could not be read: {error}", name=name, error=error)
                exchange.reply_error(500, "the file could not be read", (_NOSNIFF,))
                return
        if body is not None:
            handle.close()
            if len(body) == length:
                exchange.send(status, headers, body)
            else:
                _short(exchange.respond(status, headers, length), self.log, name, length, len(body), body)
            return
        sink = exchange.respond(status, headers, length)
        if method == b"HEAD" or length == 0:
            handle.close()
            sink.write(b"")
            sink.finish()
            return
        sink.write(b"")
        streamer = FileStreamer(handle, sink, length, name, start)
        exchange.on_client_lost(streamer.stopProducing)
        sink.register_producer(streamer)
        streamer.resumeProducing()


@implementer(IPushProducer)
class FileStreamer:
    """
    Streams an open file to a response's body sink (an
    L{gatelayer.chain.IBodySink}) with back-pressure: it writes until the
    connection's buffer asks it to pause, and goes on when resumed.
    (twisted.web's pull-producer path runs on the global cooperator, which
    a worker component must not depend on.)

    It sends exactly the C{length} bytes the response announced: a file
    that grows meanwhile is cut there, and one that shrinks closes the
    connection (finishing the response would let the next response on the
    connection be read as the rest of this body).
    """

    CHUNK = 65536
    log = Logger()

    def __init__(self, handle, sink, length=None, name=None, start=None):
        """
        @param handle: the file.
        @param sink: the L{gatelayer.chain.IBodySink} written to.
        @param length: how many bytes to send; L{None} for up to the end.
        @param name: the file's name, for the log.
        @param start: the offset of the first byte to send; L{None} to
            start where the file is positioned.
        """
        self.handle = handle
        self.start = start
        self.name = name
        self.sink = sink
        self.remaining = length
        self.sent = 0
        self.paused = False
        self.done = False

    def resumeProducing(self):
        """
        Write chunks until paused or the bytes to send are sent.
        """
        self.paused = False
        while not self.paused and not self.done:
            want = self.CHUNK if self.remaining is None else min(self.CHUNK, self.remaining - self.sent)
            try:
                if self.start is not None:
                    self.handle.seek(self.start)
                    self.start = None
                chunk = self.handle.read(want) if want else b""
            except OSError as error:
                # A disk error mid-file: end like a file that shrank.
                self.log.warn("static file {name} could not be read: {error}", name=self.name, error=error)
                chunk = b""
            if not chunk:
                self._finish()
                return
            self.sent += len(chunk)
            self.sink.write(chunk)

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
        sink = self.sink
        if sink.closed:
            return
        sink.unregister_producer()
        if self.remaining is not None and self.sent < self.remaining:
            _short(sink, self.log, self.name, self.remaining, self.sent, None)
            return
        sink.finish()


def http_time(mtime):
    """
    A file's modification time as an HTTP date can carry it: whole seconds
    between 1970 and the end of year 9999 (a file stamped outside that, as
    some filesystems allow, would otherwise make the date unformattable).
    """
    return min(max(int(mtime), 0), _LAST_HTTP_SECOND)


def _not_modified(headers, etag, mtime):
    """
    Whether the client's copy is current: C{If-None-Match} decides when
    present, else C{If-Modified-Since} (RFC 9110 section 13.2.2).
    """
    tags = headers.getRawHeaders(b"if-none-match")
    if tags:
        return none_match(b", ".join(tags).decode("latin-1"), etag)
    since = headers.getRawHeaders(b"if-modified-since")
    return bool(since) and not modified_since(since[0].decode("latin-1"), mtime)


def _requested_range(headers, size, etag, mtime):
    """
    The range to send, L{UNSATISFIABLE}, or L{None} for the whole file.
    """
    ranges = headers.getRawHeaders(b"range")
    if not ranges or size == 0:
        # Nothing of an empty file can be named by a range: it is sent
        # whole (and empty).
        return None
    condition = headers.getRawHeaders(b"if-range")
    if condition and not if_range_matches(condition[0].decode("latin-1"), etag, mtime):
        return None
    return parse_range(",".join(r.decode("latin-1") for r in ranges), size)


def _short(sink, log, name, expected, got, data):
    """
    The file shrank while it was sent: send what there is and close the
    connection, so the client sees a short body instead of a desynchronized
    connection.
    """
    log.warn("static file {name} shrank while it was sent: {got} of {expected} bytes",
             name=name, got=got, expected=expected)
    if data:
        sink.write(data)
    sink.abort(flush=True)
