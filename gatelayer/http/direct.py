"""
The direct-response terminal: C{respond = 200 hello}.
"""

from zope.interface import implementer

from gatelayer.chain import ITerminal

_TEXT = ((b"content-type", b"text/plain; charset=utf-8"),)


@implementer(ITerminal)
class DirectTerminal:
    """
    Answers every request of a route with a fixed status and body.
    """

    def __init__(self, spec):
        self.status = spec.respond_status
        self.body = spec.respond_body

    def serve(self, exchange):
        """
        Write the configured response.
        """
        exchange.send(self.status, _TEXT, self.body)
