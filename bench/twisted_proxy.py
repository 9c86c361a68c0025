"""
The naive baseline: Twisted's stock C{twisted.web.proxy.ReverseProxyResource}
in front of the upstream, used as its documentation shows (a new upstream
connection per request, the whole response buffered). It is what a Twisted
user gets without gatelayer, so it is left untuned on purpose.

Usage::

    python -m bench.twisted_proxy --port P --upstream-port U [--tls-port T --pem FILE]
"""

import argparse


def build_site(upstream_port, reactor):
    """
    A C{Site} whose every path is proxied to 127.0.0.1:C{upstream_port}.
    """
    from twisted.web.proxy import ReverseProxyResource
    from twisted.web.server import Site

    return Site(ReverseProxyResource("127.0.0.1", upstream_port, b"", reactor=reactor))


def main(argv=None):
    """
    Listen on 127.0.0.1 (plain and, if asked, TLS) and run until stopped.
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--pem", help="certificate and private key, PEM")
    options = parser.parse_args(argv)

    from twisted.internet import endpoints, reactor

    site = build_site(options.upstream_port, reactor)
    endpoints.TCP4ServerEndpoint(reactor, options.port, backlog=4096, interface="127.0.0.1").listen(site)
    if options.tls_port:
        description = (f"ssl:{options.tls_port}:interface=127.0.0.1:backlog=4096:"
                       f"privateKey={options.pem}:certKey={options.pem}")
        endpoints.serverFromString(reactor, description).listen(site)
    reactor.run()


if __name__ == "__main__":
    main()
