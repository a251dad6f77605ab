"""Loopback stand-ins for feed servers and for the internet, for tests of feeds.py and safefetch.py.

``FakeFeeds`` serves fixed bodies per path on 127.0.0.1 (optionally over TLS),
with ETags, redirects, slow ("dripping") headers and bodies, length-less bodies,
and records every request. ``LoopbackNetwork`` is the ``network`` a SafeFetcher
is given in tests: it receives requests already pinned to a checked public
address and delivers them, through the transport production uses, to the
FakeFeeds standing at that address.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from feedproxy.upstream.safe import direct_network

FEEDS = Path(__file__).parent / "fixtures" / "feeds"
TLS = FEEDS / "tls"


def fixture(name: str) -> bytes:
    return (FEEDS / name).read_bytes()


@dataclass
class Route:
    """How to answer GET of one path (whatever its query string)."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    headers: dict = field(default_factory=dict)
    etag: bool = False  # send an ETag; answer a matching If-None-Match with 304
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    drip: float = 0.0  # seconds to wait before each byte of the body
    drip_headers: float = 0.0  # seconds to wait before each byte of the headers (after the status line)


class FakeFeeds:
    """Serve routes on 127.0.0.1 at a free port; with ``tls``, over HTTPS with the feeds.example certificate."""

    def __init__(self, routes: dict[str, Route] | None = None, *, tls: bool = False):
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[dict] = []  # {"path": ..., "headers": {...}}
        self.heads: list[str] = []  # how each dripped head ended: "whole", or "cut short" when the client left
        self.bodies: list[str] = []  # the same for each dripped body
        self._lock = threading.Lock()
        self._head_ended = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.tls = tls
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS / "feeds.example.pem", TLS / "feeds.example.key")
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes = b"", **options) -> Route:
        route = Route(body=body, **options)
        self.routes[path] = route
        return route

    def redirect(self, path: str, location: str, status: int = 302) -> Route:
        return self.serve(path, status=status, headers={"Location": location}, content_type="text/plain")

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    def wait_for_heads(self, count: int, timeout: float = 30) -> list[str]:
        """Wait (at most ``timeout`` seconds) until ``count`` dripped heads have ended; return how each ended."""
        with self._head_ended:
            self._head_ended.wait_for(lambda: len(self.heads) >= count, timeout)
            return list(self.heads)

    def wait_for_bodies(self, count: int, timeout: float = 60) -> list[str]:
        """Wait (at most ``timeout`` seconds) until ``count`` dripped bodies have ended; return how each ended."""
        with self._head_ended:
            self._head_ended.wait_for(lambda: len(self.bodies) >= count, timeout)
            return list(self.bodies)

    def start(self) -> "FakeFeeds":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeFeeds":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers)})
                route = fake.routes.get(urlsplit(self.path).path)
                if route is None:
                    self._answer(Route(status=404, body=b"not found", content_type="text/plain"))
                    return
                if route.etag:
                    etag = '"' + hashlib.sha1(route.body).hexdigest() + '"'
                    if self.headers.get("If-None-Match") == etag:
                        self._answer(Route(status=304, headers={"ETag": etag}))
                        return
                    route = Route(**{**route.__dict__, "headers": {**route.headers, "ETag": etag}})
                self._answer(route)

            def _answer(self, route: Route):
                headers = [("Content-Type", route.content_type)]
                if route.send_length:
                    headers.append(("Content-Length", str(len(route.body))))
                headers += route.headers.items()
                try:
                    if route.drip_headers:
                        self._drip_head(route, headers)
                    else:
                        self.send_response(route.status)
                        for key, value in headers:
                            self.send_header(key, value)
                        self.end_headers()
                    if route.drip:
                        self._drip_body(route)
                    else:
                        self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass
                if not route.send_length:
                    self.close_connection = True

            def _drip_body(self, route: Route) -> None:
                self._drip(route.body, route.drip, fake.bodies)

            def _drip_head(self, route: Route, headers: list[tuple[str, str]]) -> None:
                self.wfile.write(f"HTTP/1.1 {route.status} {self.responses[route.status][0]}\r\n".encode())
                self.wfile.flush()
                head = "".join(f"{key}: {value}\r\n" for key, value in headers) + "Connection: close\r\n\r\n"
                self.close_connection = True
                self._drip(head.encode(), route.drip_headers, fake.heads)

            def _drip(self, data: bytes, delay: float, endings: list[str]) -> None:
                """Send ``data`` a byte every ``delay`` seconds; record in ``endings`` whether it all went out."""
                ended = "cut short"
                try:
                    for i in range(len(data)):
                        time.sleep(delay)
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                    ended = "whole"
                finally:
                    with fake._head_ended:
                        endings.append(ended)
                        fake._head_ended.notify_all()

        return Handler


class LoopbackNetwork(httpx.BaseTransport):
    """The internet for SafeFetcher tests: requests pinned to a public address go to the FakeFeeds standing there.

    ``hosts`` maps a public-looking address to a server; a request for any other
    address fails as a connection error, so no test can reach a real network.
    Every request is recorded with its URL, Host header and TLS server name.
    """

    def __init__(self, hosts: dict[str, FakeFeeds]):
        self.hosts = hosts
        self.sent: list[dict] = []
        context = ssl.create_default_context(cafile=str(TLS / "ca.pem"))
        self._transport = direct_network(verify=context)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append({
            "url": str(request.url),
            "host": request.headers.get("Host"),
            "sni": request.extensions.get("sni_hostname"),
        })
        server = self.hosts.get(request.url.host)
        if server is None:
            raise httpx.ConnectError(f"test network: nothing at {request.url.host}", request=request)
        delivered = httpx.Request(
            request.method,
            request.url.copy_with(scheme="https" if server.tls else "http", host="127.0.0.1", port=server.port),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,  # keeps sni_hostname: TLS still verifies the host name
        )
        return self._transport.handle_request(delivered)

    def close(self) -> None:
        self._transport.close()
