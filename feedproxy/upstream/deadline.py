"""One wall-clock deadline over a whole HTTP exchange: connect, TLS, request, status line, headers, body, redirects.

httpx's timeouts bound each socket operation, so a server that sends a byte
now and then (of its headers, of a TLS handshake, of a body chunk) holds a
fetch as long as it likes. ``with Deadline(seconds):`` sets a deadline for the
calling thread (a context variable); every connect, TLS handshake, read and
write of a transport made by ``with_deadline`` is then given the time left
before it (or its own timeout, when shorter), and one started with no time
left fails at once as the timeout it is. Outside a ``Deadline`` such a
transport behaves as httpx's own.

httpx has no parameter for httpcore's network backend, so ``with_deadline``
wraps the backend of a transport's connection pool, before any connection is
made; ``DeadlineClient`` does the same to the transports an httpx.Client
builds itself (its default one and one per proxy from the environment).
"""

from __future__ import annotations

import ssl
import time
import typing
from contextvars import ContextVar

import httpcore
import httpx

_ends: ContextVar[float | None] = ContextVar("feedproxy_exchange_deadline", default=None)


def exchange_seconds(connect_timeout: float, read_timeout: float) -> float:
    """The deadline of a whole exchange: the connect timeout and two read timeouts."""
    return connect_timeout + 2 * read_timeout


class Deadline:
    """``with Deadline(seconds):`` every exchange in the block ends within ``seconds`` of entering it.

    Inside another Deadline the earlier end wins.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends = float("inf")
        self._token = None

    def __enter__(self) -> "Deadline":
        outer = _ends.get()
        self.ends = time.monotonic() + self.seconds
        if outer is not None:
            self.ends = min(self.ends, outer)
        self._token = _ends.set(self.ends)
        return self

    def __exit__(self, *exc) -> None:
        _ends.reset(self._token)

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.ends


def _bounded(timeout: float | None, timeout_error: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` cut to the time left before the current deadline; ``timeout_error`` if none is left."""
    ends = _ends.get()
    if ends is None:
        return timeout
    left = ends - time.monotonic()
    if left <= 0:
        raise timeout_error("the deadline of the whole exchange has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the current deadline."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend whose connections (and connecting) end by the current deadline."""

    def __init__(self, backend: httpcore.NetworkBackend):
        self._backend = backend

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def with_deadline(transport: httpx.HTTPTransport) -> httpx.HTTPTransport:
    """``transport`` (new, with no connection yet) made to keep the current Deadline; returned for chaining."""
    pool = transport._pool  # a ConnectionPool, or an HTTPProxy or SOCKSProxy built on one
    if not isinstance(pool._network_backend, _DeadlineBackend):
        pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport


class DeadlineClient(httpx.Client):
    """An httpx.Client whose own transports keep the current Deadline; a transport passed in is used as it is."""

    def _init_transport(self, *args, **kwargs) -> httpx.BaseTransport:
        built = super()._init_transport(*args, **kwargs)
        return built if kwargs.get("transport") is not None else with_deadline(built)

    def _init_proxy_transport(self, *args, **kwargs) -> httpx.BaseTransport:
        return with_deadline(super()._init_proxy_transport(*args, **kwargs))
