"""Every error feedproxy raises on purpose, in one tree.

::

    FeedproxyError
      ConfigError            a setting is missing or invalid; the service will not start
      UpstreamError          a fetch from a source (Daily Papers, an RSS/Atom feed) failed
        UpstreamUnreachable    no connection (DNS, refused, TLS, missing file)
        UpstreamTimeout        connected, but no complete answer in time
        UpstreamHTTPError      an HTTP status other than 200 (carries status, retry_after)
        UpstreamBadData        the answer is not a listing or feed we can use
        FetchRefused           a url= fetch led to a private address or off the allow-list (also UrlNotAllowed)
      InvalidItem            one upstream item cannot become a Paper; it is skipped, the rest kept
      StorageError           the data folder could not be read or written
      MetricsUnreadable      the workers' metric files are gone: /metrics answers 503 (serving goes on)
      RefresherError         a refresher child did not finish (crashed, killed, timed out)
        RefresherStopped       it was stopped by SIGINT or SIGTERM (the service is stopping)
        RefresherCannotSave    it cannot save to the data folder: the worker refreshes in its own process
      ConceptsUnavailable    concept search cannot run: the model did not load (keyword search still works)
        ModelMismatch          saved embeddings were made by another model: rebuild them
      QueryError             the q parameter is not a valid query (carries the position)
      BadParameter           a request parameter is invalid (carries its name and the HTTP status, 400)
        UnknownSource          source= names a source this server lacks (404)
        UrlNotAllowed          url= names a feed this server will not fetch (403)
        SubscriptionRefused    a WebSub request the hub refuses (carries its status: 400, 403, 404, 503)
      NoData                 nothing to serve yet (carries the reason and a Retry-After)
      CallbackFailed         a request to a WebSub subscriber's callback got no answer (carries the outcome)
      InvalidValue           an argument a function does not take, or text that spells no valid value (also ValueError)
      InvalidType            an argument of a type a function does not take (also TypeError)

Messages start with where the error comes from and say what the operator or user
can do about it; they are shown to users verbatim, so they never carry tracebacks.
Code that needs to know which parameter was bad reads ``BadParameter.parameter``,
never the message.
"""

from __future__ import annotations


class FeedproxyError(Exception):
    """Base of all errors raised on purpose by feedproxy."""


class ConfigError(FeedproxyError):
    """A setting is missing or invalid; the message names the setting and why."""


class UpstreamError(FeedproxyError):
    """A fetch from the upstream listing failed."""

    retry_after: float | None = None
    outcome = "error"  # how feedproxy_upstream_requests_total labels it (see upstream_outcome)


class UpstreamUnreachable(UpstreamError):
    """The upstream could not be reached at all."""

    outcome = "unreachable"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer completely within the timeouts."""

    outcome = "timeout"


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with an HTTP status other than 200."""

    outcome = "http_error"

    def __init__(self, message: str, status: int, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class UpstreamBadData(UpstreamError):
    """The upstream answered 200 with something that is not a usable listing."""

    outcome = "bad_data"


class InvalidItem(FeedproxyError):
    """An upstream item that cannot become a Paper (no id, no title, bad shape)."""


class StorageError(FeedproxyError):
    """A saved snapshot could not be read or written; the message says which file and why."""


class MetricsUnreadable(FeedproxyError):
    """The workers' metric files cannot be read (their folder was removed); feeds are served regardless."""


class RefresherError(FeedproxyError):
    """The child process did not finish its refresh (crashed, killed, timed out)."""


class RefresherStopped(RefresherError):
    """The child was stopped by SIGINT or SIGTERM, as when the service stops: no failure of the upstream."""


class RefresherCannotSave(RefresherError):
    """The child cannot save to the data folder (the message says why), so the worker would never see its data."""


class ConceptsUnavailable(FeedproxyError):
    """Concept search cannot run here: wordllama or its model files are missing or broken."""


class ModelMismatch(ConceptsUnavailable):
    """Saved embeddings were made by a different model (or wordllama version): rebuild them."""


class QueryError(FeedproxyError):
    """A query the user must fix; str() says what is wrong and where."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class BadParameter(FeedproxyError):
    """A request parameter is invalid; the message says what is accepted, ``parameter`` names it."""

    status = 400

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class UnknownSource(BadParameter):
    """The request names a source this server does not have."""

    status = 404

    def __init__(self, message: str) -> None:
        super().__init__(message, "source")


class UrlNotAllowed(BadParameter):
    """A user-supplied URL this server will not fetch; the message says why and can be shown to the user."""

    status = 403

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message, "url")
        self.url = url


class FetchRefused(UrlNotAllowed, UpstreamError):
    """A fetch SafeFetcher refused: the host resolves to a non-public address, or a redirect leads off the allow-list.

    Both a UrlNotAllowed (the user's URL is the problem) and an UpstreamError, so
    code that handles only upstream failures (a snapshot refresh) records it too.
    """


class SubscriptionRefused(BadParameter):
    """A WebSub subscribe or unsubscribe request the hub refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, parameter: str, status: int = 400) -> None:
        super().__init__(message, parameter)
        self.status = status


class CallbackFailed(FeedproxyError):
    """A request to a subscriber's callback got no HTTP answer; ``outcome`` says why, as metrics count it."""

    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome  # private_address, unreachable, timeout, bad_response


class InvalidValue(FeedproxyError, ValueError):
    """An argument a function does not take (out of range, text that spells no valid value); also a ValueError."""


class InvalidType(FeedproxyError, TypeError):
    """An argument of a type a function does not take; also a TypeError, as callers of Python code expect."""


class NoData(FeedproxyError):
    """No snapshot exists yet; carries the last failure and when to try again."""

    def __init__(self, reason: str, retry_after: int):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def upstream_outcome(error: UpstreamError | None) -> str:
    """The outcome of one upstream request, as metrics label it: ok, or the kind of failure.

    A plain word, so a refresher child can tell its worker on a pipe (store.child).
    """
    return "ok" if error is None else error.outcome
