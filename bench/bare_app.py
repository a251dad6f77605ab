"""The yardstick of the cache-hit benchmark: a bare Flask app that answers every request with one saved response.

bench/run.py saves what feedproxy answered to `/feed?q=pretraining` (status,
headers, body bytes exactly as sent) to a JSON file and starts this app under
the same gunicorn settings (`gunicorn -c gunicorn.conf.py bench.bare_app:app`),
with BENCH_BARE_RESPONSE naming the file. It does no routing work, no
parameter parsing, no logging and no cache lookup: the gap between its
throughput and feedproxy's cache hits is what feedproxy adds on top of Flask.
"""

from __future__ import annotations

import base64
import json
import os

from flask import Flask, Response

# Headers that belong to the connection or the moment, which gunicorn writes itself.
_NOT_COPIED = {"date", "server", "connection", "content-length", "transfer-encoding", "keep-alive"}

with open(os.environ["BENCH_BARE_RESPONSE"], encoding="utf-8") as _file:
    _saved = json.load(_file)

STATUS: int = _saved["status"]
HEADERS: dict[str, str] = {k: v for k, v in _saved["headers"].items() if k.lower() not in _NOT_COPIED}
BODY: bytes = base64.b64decode(_saved["body"])

app = Flask(__name__)


@app.get("/feed")
def feed() -> Response:
    return Response(BODY, status=STATUS, headers=HEADERS)
