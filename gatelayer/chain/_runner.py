"""
Running the request phase of a route's filters, in order (the response phases run in the
exchange's responder, reversed).
"""

from twisted.internet.defer import Deferred


def run_request_phase(filters, exchange, done, start=0):
    """
    Run C{filters[start:]} on C{exchange}, then call C{done(reply, ran)}
    where C{reply} is the L{Reply} a filter answered with (or L{None} when
    all passed) and C{ran} is how many filters' C{on_request} ran (the
    response phase runs for those only).

    Synchronous filters cost no Deferred; the first one returning a Deferred
    makes the rest of the chain continue when it fires. A filter that raises
    or fails is reported to C{done} as the exception (the caller answers 500
    and logs it): a bug in one filter never leaves a request hanging.
    """
    index = start
    count = len(filters)
    while index < count:
        try:
            result = filters[index].on_request(exchange)
        except Exception as e:
            done(e, index + 1)
            return
        index += 1
        if result is None:
            continue
        if isinstance(result, Deferred):
            next_index = index

            def resumed(value, next_index=next_index):
                if value is None:
                    run_request_phase(filters, exchange, done, next_index)
                else:
                    done(value, next_index)

            def failed(failure, next_index=next_index):
                done(failure.value, next_index)

            result.addCallbacks(resumed, failed)
            return
        done(result, index)
        return
    done(None, index)
