"""
The direct-response terminal: C{respond = 200 hello}.
"""

from gatelayer.http.errors import reason_phrase

_TEXT = [b"text/plain; charset=utf-8"]


class DirectTerminal:
    """
    Answers every request of a route with a fixed status and body.
    """

    def __init__(self, spec):
        self.status = spec.respond_status
        self.body = spec.respond_body
        self._length = [b"%d" % (len(self.body),)]

    def serve(self, request, exchange, route, ran):
        """
        Write the configured response.
        """
        exchange.status = self.status
        request.setResponseCode(self.status, reason_phrase(self.status))
        headers = request.responseHeaders
        headers.setRawHeaders(b"content-type", _TEXT)
        request.channel.factory.gateway.response_headers(request, exchange, route, ran)
        headers.setRawHeaders(b"content-length", self._length)
        request.write(self.body)
        request.finish()
