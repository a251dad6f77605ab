"""A loopback fake of the Daily Papers API that serves real responses and injects faults.

It pages a list of real items (newest first) with ``p`` and ``limit`` like the
real API, records every request (and the paper ids of each page it served), and
can be told to answer the next requests with a status, a delay, a different body
or a cut-off body, to wait until released, or to list a new item to one request only (``add_then_fail``).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PATH = "/api/daily_papers"
HOLD_SECONDS = 30  # a held answer is sent after this all the same, so a failing test cannot hang


def _paper_id(item) -> str | None:
    """An item's paper id; None for the malformed items some tests serve on purpose."""
    paper = item.get("paper") if isinstance(item, dict) else None
    return paper.get("id") if isinstance(paper, dict) else None


@dataclass
class Fault:
    """How to answer one request instead of the real page."""

    status: int = 200
    body: bytes | None = None  # replaces the page's JSON when set
    delay: float = 0.0  # seconds to wait before answering
    headers: dict = field(default_factory=dict)
    truncate: bool = False  # send a Content-Length larger than the body, then close
    hold: threading.Event | None = None  # answer only once this is set (at most HOLD_SECONDS later)


class FakeUpstream:
    """Serve ``items`` as the Daily Papers listing on 127.0.0.1, on a free port."""

    def __init__(self, items: list[dict]):
        self.items = list(items)
        # {"params": {...}, "headers": {...}, "listed": [paper ids of the page served, when one was]}
        self.requests: list[dict] = []
        self.faults: list[Fault] = []  # consumed one per request, in order
        self.always: Fault | None = None  # applied to every request while set
        self.etags = False  # send an ETag and answer a matching If-None-Match with 304, like a CDN
        self._fail_after: tuple[str, Fault] | None = None  # (paper id, fault): see add_then_fail
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{PATH}"

    def requests_etag(self, n: int) -> str | None:
        """The ETag sent in answer to request n (when etags are on)."""
        return self.requests[n].get("etag")

    def page_requests(self) -> list[int]:
        return [int(r["params"].get("p", "0")) for r in self.requests]

    def start(self) -> "FakeUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_then_fail(self, item: dict, fault: Fault) -> None:
        """List ``item`` first, to one request only: every request after the first page that lists it
        is answered with ``fault`` (it becomes ``always``), so one refresh alone ever sees the item."""
        with self._lock:
            self.items.insert(0, item)
            self._fail_after = (_paper_id(item), fault)

    def listed(self, paper_id: str) -> int:
        """How many requests were answered with a page that lists ``paper_id``."""
        with self._lock:
            return sum(paper_id in r.get("listed", ()) for r in self.requests)

    def _answer(self, params: dict, record: dict) -> tuple[Fault | None, int, bytes]:
        """The fault to apply (if any) and the page, decided at once for the request ``record``."""
        with self._lock:
            fault = self.faults.pop(0) if self.faults else self.always
            status, body, ids = self._page(params)
            if fault is None and status == 200:
                record["listed"] = ids
                if self._fail_after is not None and self._fail_after[0] in ids:
                    self.always, self._fail_after = self._fail_after[1], None
            return fault, status, body

    def _page(self, params: dict) -> tuple[int, bytes, list[str]]:
        try:
            page = int(params.get("p", "0"))
            limit = int(params.get("limit", "50"))
        except ValueError:
            return 400, b'{"error":"bad p or limit"}', []
        if limit > 100 or limit < 1 or page < 0:
            return 400, b'{"error":"\\"limit\\" must be less than or equal to 100"}', []
        items = self.items[page * limit : (page + 1) * limit]
        return 200, json.dumps(items).encode(), [_paper_id(item) for item in items]

    def _handler(self):
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(parts.query).items()}
                record = {"params": params, "headers": dict(self.headers)}
                with upstream._lock:
                    upstream.requests.append(record)
                if parts.path != PATH:
                    self._send(404, b'{"error":"not found"}', {})
                    return
                fault, status, body = upstream._answer(params, record)
                headers = {}
                if upstream.etags and status == 200 and fault is None:
                    etag = '"' + hashlib.sha1(body).hexdigest() + '"'
                    record["etag"] = etag
                    if self.headers.get("If-None-Match") == etag:
                        self._send(304, b"", {"ETag": etag})
                        return
                    headers["ETag"] = etag
                if fault is not None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    if fault.hold is not None:
                        fault.hold.wait(HOLD_SECONDS)
                    status = fault.status
                    body = fault.body if fault.body is not None else body
                    headers = fault.headers
                    if fault.truncate:
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body) * 2))
                        self.end_headers()
                        self.wfile.write(body[: len(body) // 2])
                        self.close_connection = True
                        return
                self._send(status, body, headers)

            def _send(self, status, body, headers):
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
