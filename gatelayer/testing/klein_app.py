"""
A small Klein application for tests of the resource terminal, mounted
with C{resource = gatelayer.testing.klein_app:app.resource}: routes with
variables, JSON answers, a body read, a streaming endpoint, a failure.
"""

import json

from klein import Klein

from gatelayer.testing.resources import ChunkProducer

__all__ = ["app"]

app = Klein()
"""The application; C{app.resource} is the factory a route names."""

_ITEMS = {1: "anvil", 2: "rope"}


def _json(request, document, status=200):
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(document, sort_keys=True).encode("utf-8")


@app.route("/items/<int:item_id>", methods=["GET"])
def item(request, item_id):
    """
    One item as JSON, or a JSON 404; the path as Klein saw it.
    """
    if item_id not in _ITEMS:
        return _json(request, {"error": "no such item", "id": item_id}, 404)
    return _json(request, {
        "id": item_id, "name": _ITEMS[item_id],
        "prepath": [p.decode("utf-8") for p in request.prepath],
        "url": request.prePathURL().decode("utf-8"),
    })


@app.route("/items", methods=["POST"])
def create(request):
    """
    Echo a JSON body back as the created item (201); a body that is not
    JSON is a 400.
    """
    try:
        document = json.loads(request.content.read())
    except ValueError:
        return _json(request, {"error": "not JSON"}, 400)
    return _json(request, {"created": document}, 201)


@app.route("/users/<name>/greeting")
def greeting(request, name):
    """
    A text answer built from a path variable and a query argument.
    """
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    punctuation = request.args.get(b"p", [b"!"])[0].decode("utf-8")
    return f"hello {name}{punctuation}"


@app.route("/stream/<int:chunks>")
def stream(request, chunks):
    """
    Stream C{chunks} chunks of 4096 bytes with a push producer; Klein
    finishes the request when the producer is done.
    """
    request.setHeader(b"content-type", b"application/octet-stream")
    producer = ChunkProducer(request, chunks, 4096, finish=False)
    producer.start()
    return producer.done


@app.route("/fail")
def fail(request):
    """
    Raise: the gateway answers 500 without the detail.
    """
    raise RuntimeError("klein handler broke (secret detail)")
