"""Every error feedproxy raises on purpose, in one tree.

::

    FeedproxyError
      ConfigError          a setting is missing or invalid; the service will not start
      UpstreamError        a fetch from the Daily Papers API failed
        UpstreamUnreachable  no connection (DNS, refused, TLS, missing file)
        UpstreamTimeout      connected, but no complete answer in time
        UpstreamHTTPError    an HTTP status other than 200 (carries status, retry_after)
        UpstreamBadData      the answer is not a JSON listing we can use
      NoData               nothing to serve yet (no successful fetch so far)

Messages start with where the error comes from and say what the operator or user
can do about it; they are shown to users verbatim, so they never carry tracebacks.
"""

from __future__ import annotations


class FeedproxyError(Exception):
    """Base of all errors raised on purpose by feedproxy."""


class ConfigError(FeedproxyError):
    """A setting is missing or invalid; the message names the setting and why."""


class UpstreamError(FeedproxyError):
    """A fetch from the upstream listing failed."""

    retry_after: float | None = None


class UpstreamUnreachable(UpstreamError):
    """The upstream could not be reached at all."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer completely within the timeouts."""


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with an HTTP status other than 200."""

    def __init__(self, message: str, status: int, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class UpstreamBadData(UpstreamError):
    """The upstream answered 200 with something that is not a usable listing."""


class NoData(FeedproxyError):
    """No snapshot exists yet; carries the last failure and when to try again."""

    def __init__(self, reason: str, retry_after: int):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
