"""A WebSub subscriber on 127.0.0.1, standing at a public-looking address for the hub's callback client.

It answers intent verifications (GET) by echoing hub.challenge, or as told, and
records every verification and every content delivery (POST) with its headers
and body (answering a delivery only when told to, with ``hold_pushes``). ``callback_client`` makes the hub's CallbackClient whose world is
subscriber.example at a public address routed to this server (the production
address checks run unchanged), as tests/test_safefetch.py does for url= feeds.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from feedproxy.upstream.callbacks import CallbackClient

from .fakefeeds import LoopbackNetwork

PUBLIC = "93.184.216.34"  # where subscriber.example "is"
UNREACHABLE = "93.184.216.99"  # down.example: public, but the test network has nothing there


def resolver(table: dict[str, list[str]]):
    """A resolver answering from ``table``; unknown names fail as DNS does."""

    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return list(table[host])

    return resolve


WORLD = {"subscriber.example": [PUBLIC], "down.example": [UNREACHABLE], "intranet.example": ["10.0.0.7"]}


class FakeSubscriber:
    """Answer verifications and record deliveries; ``verify_with`` and ``push_statuses`` inject behaviour."""

    tls = False  # for LoopbackNetwork

    def __init__(self):
        self.verifications: list[dict[str, str]] = []  # each GET's query parameters (with "path")
        self.pushes: list[dict] = []  # {"path", "headers", "body"}
        self.verify_with: str = "echo"  # echo, wrong (another challenge), 404
        self.push_statuses: list[int] = []  # answers to the next pushes, in order; then 204
        self.hold_pushes: threading.Event | None = None  # when set: a push is answered only once this is set
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def __enter__(self) -> "FakeSubscriber":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, predicate, timeout: float = 10) -> bool:
        """Wait until ``predicate(self)`` holds; return whether it did in time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _record(self, kind: str, entry) -> None:
        with self._changed:
            getattr(self, kind).append(entry)
            self._changed.notify_all()

    def _handler(self):
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                challenge = query.get("hub.challenge", "").encode()
                status, body = {"404": (404, b"no such subscription"), "wrong": (200, b"not-" + challenge)}.get(
                    subscriber.verify_with, (200, challenge))
                # Recorded before answering: once the hub has its answer, the test sees the request.
                subscriber._record("verifications", {"path": parts.path, **query})
                self._answer(status, body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = subscriber.push_statuses.pop(0) if subscriber.push_statuses else 204
                subscriber._record("pushes", {"path": self.path, "headers": dict(self.headers), "body": body})
                if subscriber.hold_pushes is not None:
                    subscriber.hold_pushes.wait(60)
                self._answer(status, b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def callback_client(subscriber: FakeSubscriber, **options) -> CallbackClient:
    """The hub's CallbackClient in a world where subscriber.example is ``subscriber``."""
    options = {"connect_timeout": 1.0, "read_timeout": 2.0, **options}
    return CallbackClient(resolver=resolver(WORLD), network=LoopbackNetwork({PUBLIC: subscriber}), **options)
