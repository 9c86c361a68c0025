"""
The producers of a resource's response body as the gateway's connection
takes them: push producers stopped exactly once, and pull producers
(C{registerProducer(p, False)}, as L{twisted.web.static.File} registers)
driven as push producers.
"""

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["PullAsPush", "StopOnce"]


@implementer(IPushProducer)
class PullAsPush:
    """
    A resource's pull producer (C{registerProducer(p, False)}, as
    L{twisted.web.static.File} registers) driven as the push producer the
    gateway's connection takes: asked for chunk after chunk until the
    connection pauses it, asked again when it resumes. A producer that
    answers a pull later (not in the call) is pulled again when its write
    arrives.
    """

    def __init__(self, pull):
        self.pull = pull
        self.paused = False
        self.stopped = False
        self.pulling = False
        self.writes = 0

    def resumeProducing(self):
        """
        Pull chunks until paused, stopped, or the producer writes nothing
        in the call.
        """
        self.paused = False
        if self.pulling:
            return
        self.pulling = True
        try:
            while not self.paused and not self.stopped:
                before = self.writes
                self.pull.resumeProducing()
                if self.writes == before:
                    break
        finally:
            self.pulling = False

    def wrote(self):
        """
        The producer wrote: count it, and pull on when the write came
        outside a pull.
        """
        self.writes += 1
        if not self.pulling and not self.paused and not self.stopped:
            self.resumeProducing()

    def pauseProducing(self):
        """
        The client is slow: pull no more until resumed.
        """
        self.paused = True

    def stopProducing(self):
        """
        The client went away: stop the producer.
        """
        if not self.stopped:
            self.stopped = True
            self.pull.stopProducing()


@implementer(IPushProducer)
class StopOnce:
    """
    A resource's push producer as the connection sees it: stopped once,
    whether the connection or the request notices the client leaving
    first.
    """

    def __init__(self, producer):
        self.producer = producer
        self.stopped = False

    def pauseProducing(self):
        """
        Pass the pause on.
        """
        if not self.stopped:
            self.producer.pauseProducing()

    def resumeProducing(self):
        """
        Pass the resume on.
        """
        if not self.stopped:
            self.producer.resumeProducing()

    def stopProducing(self):
        """
        Stop the producer, the first time only.
        """
        if not self.stopped:
            self.stopped = True
            self.producer.stopProducing()
