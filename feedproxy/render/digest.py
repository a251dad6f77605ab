"""Digests: a feed of one entry per day or ISO week, each listing that period's papers (``digest=``).

Pure functions like render.formats: the same papers give the same bytes. A
period is listed once it is over, that is once the sources hold a paper of a
later period (decided by the data, never the clock), so a reader gets the whole
day or week in one item and is not shown a half-filled one it has already read.
Each entry's id is the feed's canonical URL without ``format`` plus ``#digest-``
and the period (``2026-08-21``, ``2026-W34``): the same at every refresh and in
every format; a paper added to a period later updates that entry (same id,
content and ``updated`` moved).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from html import escape
from typing import Iterable, Sequence

from feedgen.entry import FeedEntry
from lxml import etree

from feedproxy.render.formats import FORMATS, RSS_NAMESPACES, FeedInfo, _splice, _text
from feedproxy.upstream.papers import Paper, iso_z

PERIODS = ("daily", "weekly")
MAX_TLDR_CHARACTERS = 300
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


@dataclass(frozen=True)
class Digest:
    """One period's papers, in the feed's order."""

    key: str  # "2026-08-21" or "2026-W34": part of the entry id
    label: str  # what the entry's title calls the period
    papers: tuple[Paper, ...]

    @property
    def updated(self) -> datetime:
        """The newest paper's Daily Papers date: the entry's published and updated."""
        return max(paper.published for paper in self.papers)


def period_key(moment: datetime, period: str) -> str:
    """The period a UTC moment falls in: ``2026-08-21`` (daily) or ``2026-W34`` (weekly, ISO 8601)."""
    day = moment.astimezone(timezone.utc).date()
    if period == "daily":
        return day.isoformat()
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _label(key: str, period: str) -> str:
    if period == "daily":
        return key
    year, week = key.split("-W")
    monday = date.fromisocalendar(int(year), int(week), 1)
    sunday = date.fromisocalendar(int(year), int(week), 7)
    return f"Week {key} ({monday.isoformat()} to {sunday.isoformat()})"


def group_digests(papers: Iterable[Paper], period: str, newest: datetime | None) -> list[Digest]:
    """Group papers by period, newest period first, keeping the given order within each.

    Only periods before ``newest``'s (the newest paper the sources hold, matching or not)
    are listed: the current period is still filling up.
    """
    if newest is None:
        return []
    current = period_key(newest, period)
    groups: dict[str, list[Paper]] = {}
    for paper in papers:
        key = period_key(paper.published, period)
        if key < current:  # ISO dates and ISO weeks sort as text
            groups.setdefault(key, []).append(paper)
    return [Digest(key, _label(key, period), tuple(groups[key])) for key in sorted(groups, reverse=True)]


def digest_id(ids: str, key: str) -> str:
    """A digest entry's id: stable for a feed (``ids``: its canonical URL without format) and a period."""
    return f"{ids}#digest-{key}"


def one_line_tldr(paper: Paper) -> str:
    """The AI summary, else the abstract's first sentence; cut to MAX_TLDR_CHARACTERS."""
    text = paper.ai_summary or _SENTENCE_END.split(paper.abstract, maxsplit=1)[0]
    return text if len(text) <= MAX_TLDR_CHARACTERS else text[: MAX_TLDR_CHARACTERS - 1].rstrip() + "…"


def _upvotes(n: int) -> str:
    return f"{n} upvote" if n == 1 else f"{n} upvotes"


def _title(digest: Digest) -> str:
    n = len(digest.papers)
    return f"{digest.label}: {n} paper{'' if n == 1 else 's'}"


def digest_html(digest: Digest) -> str:
    """The entry's body: one list item per paper (title and link, upvotes, one-line TL;DR), escaped."""
    e = lambda s: escape(_text(s), quote=True)  # noqa: E731
    items = []
    for paper in digest.papers:
        tldr = one_line_tldr(paper)
        items.append(f'<li><a href="{e(paper.url)}">{e(paper.title)}</a> · {_upvotes(paper.upvotes)}'
                     + (f"<br>{e(tldr)}" if tldr else "") + "</li>")
    return "<ol>\n" + "\n".join(items) + "\n</ol>"


def _summary(digest: Digest) -> str:
    return " · ".join(_text(paper.title) for paper in digest.papers)


def _feed_entry(info: FeedInfo, digest: Digest, ids: str) -> FeedEntry:
    entry = FeedEntry()
    entry.id(digest_id(ids, digest.key))
    entry.guid(digest_id(ids, digest.key), permalink=False)
    entry.title(_title(digest))
    entry.link(href=info.alternate_url, rel="alternate", type="text/html")
    entry.summary(_summary(digest), type="text")
    entry.content(digest_html(digest), type="html")
    entry.published(digest.updated)
    entry.updated(digest.updated)
    return entry


def _atom_entry(info: FeedInfo, digest: Digest, ids: str) -> bytes:
    return etree.tostring(_feed_entry(info, digest, ids).atom_entry(), encoding="UTF-8", xml_declaration=False)


def _rss_item(info: FeedInfo, digest: Digest, ids: str) -> bytes:
    # Inside an element declaring RSS_NAMESPACES the item uses their prefixes undeclared (as <rss> declares them).
    scope = etree.Element("scope", nsmap=RSS_NAMESPACES)
    scope.append(_feed_entry(info, digest, ids).rss_entry())
    xml = etree.tostring(scope, encoding="UTF-8", xml_declaration=False)
    return xml[xml.index(b">") + 1 : -len(b"</scope>")]


def _json_item(info: FeedInfo, digest: Digest, ids: str) -> bytes:
    item = {
        "id": digest_id(ids, digest.key),
        "url": info.alternate_url,
        "title": _title(digest),
        "content_html": digest_html(digest),
        "summary": _summary(digest),
        "date_published": iso_z(digest.updated),
        "date_modified": iso_z(digest.updated),
    }
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_digests(fmt: str, info: FeedInfo, digests: Sequence[Digest], ids: str) -> bytes:
    """A feed document in format ``fmt`` (atom, rss, json) whose entries are ``digests``, their ids made from ``ids``.

    The document's head is the one render.formats writes for a feed without entries, so a digest
    feed says about itself (self, hub, title...) exactly what a feed of papers says.
    """
    head = FORMATS[fmt].render(info, (), None)
    if fmt == "atom":
        return _splice(head, b"</feed>", [_atom_entry(info, d, ids) for d in digests])
    if fmt == "rss":
        return _splice(head, b"</channel></rss>", [_rss_item(info, d, ids) for d in digests])
    # "items" is the last key: open its list again and fill it.
    return _splice(head, b"]}", [b",".join(_json_item(info, d, ids) for d in digests)])
