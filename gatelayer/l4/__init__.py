"""
Layer 4 listeners: TCP relay (C{mode = tcp}), TLS pass-through chosen by
the ClientHello's server name (C{mode = tls_passthrough}) and the PROXY
protocol, in both directions.

 - L{gatelayer.l4.proxyproto}: PROXY v1/v2 parser and writer (sans I/O);
 - L{gatelayer.l4.clienthello}: the ClientHello's server name (sans I/O)
   and the SNI table;
 - L{gatelayer.l4.relay}: one relayed connection;
 - L{gatelayer.l4.listener}: a listener's factory, settings and counters.
"""
