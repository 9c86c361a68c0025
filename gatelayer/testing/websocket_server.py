"""
A WebSocket server for integration tests, in a process of its own, on the
C{websockets} library (a WebSocket implementation that is not gatelayer's,
so the gateway is tested against what real applications run).

Run as C{python -m gatelayer.testing.websocket_server NAME [PORT]}: it
listens on 127.0.0.1:PORT (0 or omitted: any free port), writes C{listening
PORT} on stdout once it accepts connections, then C{connected PATH} for
every handshake it accepts (so a test can tell that one never reached it),
and exits when stdin closes. L{gatelayer.testing.websocket.WebSocketServerProcess}
is the test-side handle.

Every message is echoed (text as text, binary as binary, any size), except
these text commands:

  - C{close}: the server closes the connection (code 1000);
  - C{send N}: the server answers with one binary message of N bytes;
  - C{headers}: the server answers with the handshake's request headers as
    JSON.

On the path C{/stream?mb=N} the server sends N megabytes at once, in
binary messages of 64 KB, as fast as the connection takes them, and then
closes: the traffic of a slow-reader test.
"""

import asyncio
import json
import sys
import threading
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve

__all__ = ["main"]

_PIECE = b"x" * 65536


def _say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _handler(websocket):
    path = websocket.request.path
    _say("connected " + path)
    parts = urlsplit(path)
    if parts.path == "/stream":
        megabytes = int(parse_qs(parts.query).get("mb", ["1"])[0])
        for _ in range(megabytes * 16):
            await websocket.send(_PIECE)
        await websocket.close(1000, "sent")
        return
    async for message in websocket:
        if message == "close":
            await websocket.close(1000, "asked to close")
            return
        if isinstance(message, str) and message.startswith("send "):
            await websocket.send(b"y" * int(message[5:]))
        elif message == "headers":
            await websocket.send(json.dumps(
                {name.lower(): value for name, value in websocket.request.headers.raw_items()}))
        else:
            await websocket.send(message)


async def _serve(port, stopped):
    async with serve(_handler, "127.0.0.1", port, max_size=None, compression=None,
                     close_timeout=1, ping_interval=None) as server:
        _say("listening %d" % (server.sockets[0].getsockname()[1],))
        await stopped.wait()


def main(argv):
    """
    Serve until stdin closes. C{argv} is C{[NAME]} or C{[NAME, PORT]}.
    """
    if not 1 <= len(argv) <= 2:
        sys.stderr.write("usage: python -m gatelayer.testing.websocket_server NAME [PORT]\n")
        return 2
    port = int(argv[1]) if len(argv) == 2 else 0
    loop = asyncio.new_event_loop()
    # Python 3.9 (PyPy's) binds an Event to the current loop when it is made.
    asyncio.set_event_loop(loop)
    stopped = asyncio.Event()

    def watch_stdin():
        sys.stdin.read()
        loop.call_soon_threadsafe(stopped.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    loop.run_until_complete(_serve(port, stopped))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
