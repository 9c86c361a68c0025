"""
Generated configuration for everything the benchmark runs: the upstream and
the reverse-proxy nginx, HAProxy, gatelayer's C{gate.ini}, and the TLS and JWT
material they need. Pure text builders, plus two small file writers.
"""

import datetime
import os
import re

SMALL_BODY = "hello from the upstream\n"
JSON_BODY = '{"id":7,"name":"widget","price":12.5,"tags":["a","b"],"internal":{"cost":3}}'
"""What the upstream answers on every path under C{/json/}: a small JSON
document for the API scenario (transformed, or one part of an aggregate)."""
BIG_NAME = "1mb"
BIG_SIZE = 1024 * 1024
TEXT_NAME = "text.txt"
"""An 8 KB text document the upstream serves for the edge scenario (cached,
compressed, inspected by the WAF)."""


def write_certificate(directory, name="bench"):
    """
    Write a self-signed ECDSA P-256 certificate for C{localhost} and
    127.0.0.1 into C{directory}; return C{(cert_path, key_path, pem_path)}
    where the last file holds certificate and key together.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    paths = tuple(os.path.join(directory, f"{name}.{ext}") for ext in ("crt", "key", "pem"))
    for path, data in zip(paths, (cert_pem, key_pem, cert_pem + key_pem)):
        with open(path, "wb") as f:
            f.write(data)
    return paths


def write_jwt_material(directory):
    """
    Write an RS256 public key to C{directory}/jwt-public.pem and return
    C{(public_key_path, token)}: a token signed by the matching private key,
    for audience and issuer C{bench}, valid for a day.
    """
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = os.path.join(directory, "jwt-public.pem")
    with open(path, "wb") as f:
        f.write(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    now = datetime.datetime.now(datetime.timezone.utc)
    claims = {"sub": "bench-user", "aud": "bench", "iss": "bench", "iat": now,
              "exp": now + datetime.timedelta(days=1)}
    return path, jwt.encode(claims, key, algorithm="RS256")


def write_big_file(directory):
    """
    Write the 1 MB response body under C{directory}/www and return the
    document root.
    """
    root = os.path.join(directory, "www")
    os.makedirs(root, exist_ok=True)
    block = bytes(range(256)) * 4096
    with open(os.path.join(root, BIG_NAME), "wb") as f:
        f.write(block[:BIG_SIZE])
    with open(os.path.join(root, TEXT_NAME), "w") as f:
        f.write(text_document())
    os.chmod(root, 0o755)
    os.chmod(os.path.join(root, BIG_NAME), 0o644)
    os.chmod(os.path.join(root, TEXT_NAME), 0o644)
    return root


def text_document(size=8192):
    """
    C{size} characters of plain text that compresses like prose (words
    repeat, lines differ), the same on every run.
    """
    words = ("gateway", "upstream", "request", "response", "worker", "route", "filter", "cache",
             "header", "body", "stream", "client", "server", "latency", "the", "a", "of", "to")
    lines = []
    total = 0
    n = 0
    while total < size:
        line = " ".join(words[(n * 7 + i * 3) % len(words)] for i in range(10 + n % 5)) + f" {n}\n"
        lines.append(line)
        total += len(line)
        n += 1
    return "".join(lines)[:size]


def _nginx_common(prefix, name, workers):
    return f"""\
worker_processes {workers};
pid {prefix}/{name}.pid;
error_log {prefix}/{name}-error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
"""


def _nginx_http_common(prefix, name):
    temp = f"{prefix}/{name}-temp"
    return f"""\
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
"""


def nginx_upstream_conf(prefix, port, tls_port, cert, key, root, workers=2):
    """
    The upstream: a small fixed body on every path but C{/1mb}, which is a
    1 MB file; keep-alive, HTTP on C{port} and HTTPS on C{tls_port} (the
    HTTPS one is the direct row of the TLS scenarios).
    """
    body = SMALL_BODY.replace("\n", "\\n")
    return _nginx_common(prefix, "upstream", workers) + f"""\
http {{
{_nginx_http_common(prefix, "upstream")}\
    sendfile on;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        listen 127.0.0.1:{tls_port} ssl reuseport backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
        location ^~ /json/ {{
            default_type application/json;
            return 200 '{JSON_BODY}';
        }}
        location = /{TEXT_NAME} {{
            root {root};
            default_type text/plain;
        }}
        location = /{BIG_NAME} {{
            root {root};
            default_type application/octet-stream;
        }}
    }}
}}
"""


def nginx_http2_style(version):
    """
    How the nginx of C{version} (what C{nginx -v} prints) turns HTTP/2 on:
    C{"on"} (the C{http2 on;} directive, nginx 1.25.1 and later) or
    C{"listen"} (the C{http2} parameter of C{listen}, before).
    """
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        return "on"
    return "on" if tuple(int(n) for n in match.groups()) >= (1, 25, 1) else "listen"


def nginx_proxy_conf(prefix, port, tls_port, cert, key, upstream_port, workers=2, http2=None):
    """
    nginx as the reverse proxy operators would pick: C{workers} workers,
    HTTP/1.1 to the upstream with an idle keep-alive pool per worker.

    @param http2: L{None} (HTTP/1.1 only), or how to turn HTTP/2 on for the
        TLS listener (see L{nginx_http2_style}).
    """
    listen_http2 = " http2" if http2 == "listen" else ""
    http2_on = "        http2 on;\n" if http2 == "on" else ""
    return _nginx_common(prefix, "nginx", workers) + f"""\
http {{
{_nginx_http_common(prefix, "nginx")}\
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        listen 127.0.0.1:{tls_port} ssl{listen_http2} backlog=4096;
{http2_on}\
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # Stream large bodies through memory buffers instead of spooling
            # them to temp files, as gatelayer and HAProxy do.
            proxy_buffer_size 16k;
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


def haproxy_conf(port, tls_port, pem, upstream_port, threads=2):
    """
    HAProxy with C{threads} threads, keep-alive on both sides and
    C{http-reuse always} towards the upstream.
    """
    return f"""\
global
    nbthread {threads}
    maxconn 8000
    tune.ssl.default-dh-param 2048

defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 300s

frontend bench
    bind 127.0.0.1:{port}
    bind 127.0.0.1:{tls_port} ssl crt {pem}
    default_backend app

backend app
    http-reuse always
    server upstream 127.0.0.1:{upstream_port} maxconn 1000
"""


FILTER_SETS = {
    "jwt": ("jwt",),
    "ratelimit": ("limit",),
    "ratelimit-redis": ("limit_redis",),
    "jwt+ratelimit": ("jwt", "limit"),
    "transform": ("transform",),
    "bff": ("bff",),
    "cache": ("cache",),
    "compress": ("compress",),
    "waf": ("waf",),
    "nometrics": ("nometrics",),
    "accesslog": ("accesslog",),
}
"""The filter combinations the filter and API scenarios measure, by label.
C{bff} is not a filter: it makes the route an aggregate of three parts;
C{nometrics} and C{accesslog} are not either: they set C{[gateway] metrics
= no} and an access log (the observe scenario)."""

_NOT_FILTERS = ("bff", "nometrics", "accesslog")

AGGREGATE_PARTS = ("item", "stock", "price")
"""The parts of the C{bff} route, each a C{GET /json/NAME} on the upstream."""


def gatelayer_ini(workers, port, upstream_port, admin_port, tls=None, filters=(),
                  jwt_key=None, redis_port=None, http_server=None, access_log=None):
    """
    A C{gate.ini} proxying every path to the upstream.

    @param tls: L{None}, or C{(tls_port, pem_path)} to add a TLS listener.
    @param filters: filter section names from L{FILTER_SETS} to put on the route.
    @param http_server: the C{[gateway] http_server} to set, or L{None}.
    @param access_log: the access log file of the C{accesslog} set.
    """
    lines = [
        "; generated by the gatelayer benchmark",
        "[gateway]",
        f"workers = {workers}",
        f"admin = 127.0.0.1:{admin_port}",
        "drain_timeout = 2s",
    ]
    if http_server is not None:
        lines.append(f"http_server = {http_server}")
    if "nometrics" in filters:
        lines.append("metrics = no")
    if "accesslog" in filters:
        lines.append(f"access_log = {access_log or 'access.log'}")
    lines += [
        "",
        "[listener:web]",
        f"bind = 127.0.0.1:{port}",
        "",
    ]
    if tls is not None:
        tls_port, pem = tls
        lines += [
            "[listener:secure]",
            f"bind = 127.0.0.1:{tls_port}",
            "tls = bench",
            "",
            "[tls:bench]",
            f"certificates = {pem}",
            f"default = {pem}",
            "",
        ]
    lines += [
        "[upstream:app]",
        f"servers = 127.0.0.1:{upstream_port}",
        "keepalive = 256",
        "",
        "[route:app]",
        "path = /",
    ]
    if "bff" in filters:
        parts = [f"{name}: app GET /json/{name}" for name in AGGREGATE_PARTS]
        lines.append("aggregate = " + "\n    ".join(parts))
    else:
        lines.append("upstream = app")
    route_filters = [name for name in filters if name not in _NOT_FILTERS]
    if route_filters:
        lines.append("filters = " + ", ".join(route_filters))
    lines.append("")
    if "cache" in filters:
        lines += ["[filter:cache]", "type = cache", "default_ttl = 60s", ""]
    if "compress" in filters:
        lines += ["[filter:compress]", "type = compress", "encodings = gzip", ""]
    if "waf" in filters:
        lines += ["[filter:waf]", "type = waf", "mode = block", ""]
    if "transform" in filters:
        lines += [
            "[filter:transform]",
            "type = transform",
            "request_headers_set = X-Client: $remote_addr",
            "response_headers_remove = X-Powered-By",
            "response_json_remove = /internal",
            "response_body = json_to_xml",
            "",
        ]
    if "jwt" in filters:
        lines += [
            "[filter:jwt]",
            "type = jwt",
            f"keys = {jwt_key}",
            "algorithms = RS256",
            "issuer = bench",
            "audience = bench",
            "",
        ]
    for name in ("limit", "limit_redis"):
        if name in filters:
            lines += [
                f"[filter:{name}]",
                "type = rate_limit",
                "key = jwt.sub" if "jwt" in filters else "key = ip",
                "rate = 1000000/second",
            ]
            if name == "limit_redis":
                lines += [f"store = redis://127.0.0.1:{redis_port}/0", "on_store_error = closed"]
            lines.append("")
    return "\n".join(lines)


def redis_conf(port, directory):
    """
    A throwaway Redis for the Redis-backed rate limit: loopback only, no
    persistence.
    """
    return f"""\
bind 127.0.0.1
port {port}
dir {directory}
save ""
appendonly no
protected-mode yes
"""
