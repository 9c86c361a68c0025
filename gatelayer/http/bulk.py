"""
How much of a response body a client connection takes from the gateway at
once.

Twisted's TCP transports pause their producer as soon as more than 64 KB
wait to be sent, and send at most 128 KB per call. Relaying a large body
then means a pause and a resume of the upstream connection (each a change
of the reactor's interest in a socket, and a Python call path) for nearly
every read, and several reactor turns to send what one send could. The
client connections of the gateway allow L{WRITE_BUFFER} bytes to wait and
send up to L{SEND_LIMIT} bytes at once; the upstream connections read up to
256 KB at once (L{gatelayer.upstream.client}). A slow client still holds at
most C{WRITE_BUFFER} plus one read of a response in the worker's memory
before the upstream connection is paused.
"""

__all__ = ["SEND_LIMIT", "WRITE_BUFFER", "tune_client_writes"]

#: Bytes of a response waiting to be sent before the producer is paused.
WRITE_BUFFER = 256 * 1024
#: The most bytes given to one send call.
SEND_LIMIT = 512 * 1024


def tune_client_writes(transport):
    """
    Let the client connection C{transport} buffer L{WRITE_BUFFER} bytes
    and send L{SEND_LIMIT} bytes at once, when it is one of Twisted's
    socket transports (a TLS or in-memory transport is left as it is).
    """
    if getattr(transport, "SEND_LIMIT", None) is not None and hasattr(transport, "bufferSize"):
        transport.bufferSize = WRITE_BUFFER
        transport.SEND_LIMIT = SEND_LIMIT
