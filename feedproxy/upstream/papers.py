"""The Paper model and the conversion of one Daily Papers API item into it.

Upstream items are loosely typed: only ``paper.id`` and a title are certain.
``paper_from_item`` accepts anything JSON can hold and either returns a clean,
immutable ``Paper`` or raises ``InvalidItem`` naming what was wrong, so one bad
item is skipped without losing the rest of a page.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable

from feedproxy.errors import InvalidItem

HF_PAPER_URL = "https://huggingface.co/papers/{id}"
ARXIV_ABS_URL = "https://arxiv.org/abs/{id}"
ARXIV_PDF_URL = "https://arxiv.org/pdf/{id}"

# Characters XML 1.0 forbids: C0 controls except tab, LF, CR; lone surrogates;
# U+FFFE and U+FFFF. One of these anywhere makes a whole feed unparseable.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_WHITESPACE = re.compile(r"\s+")
# arXiv ids are the stable key and end up in URLs: accept only their shapes
# (new style 2405.15738, old style hep-th/9901001) so no id can inject a path.
_PAPER_ID = re.compile(r"^(?:\d{4}\.\d{4,5}|[a-z][a-z.-]*/\d{7})$", re.IGNORECASE)
# Hugging Face user and organisation names, and organisation ids (24 hex digits): one word each.
_HF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def is_arxiv_id(text: str) -> bool:
    """True for an arXiv id without version: 2405.15738 or hep-th/9901001."""
    return bool(_PAPER_ID.match(text))


def strip_xml_forbidden(text: str) -> str:
    """Remove characters that XML 1.0 cannot carry, keeping everything else.

    Every such character (C0 controls, surrogates, U+FFFE, U+FFFF) is unprintable to Python, so
    printable text, nearly every title and abstract, skips the regular expression (which was 8%
    of a worker's time rendering new entries).
    """
    return text if text.isprintable() else _XML_FORBIDDEN.sub("", text)


def clean_text(value: object) -> str:
    """Return ``value`` as one line of text: forbidden characters gone, whitespace folded.

    Old responses wrap titles and abstracts with hard line breaks; folding them
    makes "Multimodal\\n  Models" read and match as "Multimodal Models".
    """
    if not isinstance(value, str):
        return ""
    return _WHITESPACE.sub(" ", strip_xml_forbidden(value)).strip()


def parse_timestamp(value: object) -> datetime | None:
    """Parse an ISO 8601 timestamp from the API into an aware UTC datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _optional_url(value: object) -> str | None:
    text = clean_text(value)
    if text.startswith(("https://", "http://")) and " " not in text:
        return text
    return None


# Sizes no real paper reaches, so that no item can make rendering or indexing slow (feedgen's entry
# building is quadratic in authors: 50,000 of them took 40 s) or a snapshot large.
MAX_AUTHORS = 1000
MAX_KEYWORDS = 100
MAX_TITLE_CHARS = 1000
MAX_TEXT_CHARS = 20_000  # abstract and AI summary
MAX_COUNT = 10**9  # upvotes, comments, stars: no real count comes near; the index stores them in 64 bits


def _optional_int(value: object) -> int:
    """A count from the API: a whole number from 0 to MAX_COUNT (more is MAX_COUNT; junk, NaN: 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return 0
    if value >= MAX_COUNT:  # also float("inf"), which int() refuses
        return MAX_COUNT
    return max(int(value), 0)


def _optional_count(value: object) -> int | None:
    """A count the API may leave out (githubStars): None when it is missing or not a number (NaN included),
    else as _optional_int has it (more than MAX_COUNT is MAX_COUNT), so an odd count never costs the paper."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return _optional_int(value)


def _hf_name(value: object) -> str:
    """A Hugging Face user or organisation name (or id) as given, or "" when it is not one."""
    text = clean_text(value)
    return text if _HF_NAME.match(text) else ""


def _user_name(user: object) -> str:
    """The user name of a Hugging Face user object: ``user`` in paper.submittedOnDailyBy and
    authors[].user, ``name`` in the outer submittedBy (where ``fullname`` is a display name)."""
    if not isinstance(user, dict):
        return ""
    return _hf_name(user.get("user")) or _hf_name(user.get("name"))


@dataclass(frozen=True)
class Paper:
    """One paper as listed on Daily Papers, with clean text and UTC dates."""

    id: str
    title: str
    published: datetime  # when it was put on Daily Papers
    abstract: str = ""
    authors: tuple[str, ...] = ()
    upvotes: int = 0
    comments: int = 0
    ai_summary: str = ""
    ai_keywords: tuple[str, ...] = ()
    github_repo: str | None = None
    project_page: str | None = None
    thumbnail: str | None = None
    organization: str = ""  # the organisation's display name ("Google"), else its name
    arxiv_published: datetime | None = field(default=None, compare=False)
    # Set for entries of RSS/Atom sources: the entry's own page. Empty for Daily Papers.
    link: str = ""
    # arXiv listings only: new, cross, replace or replace-cross.
    announce_type: str = ""
    # True when the source gave no date: ``published`` is then the document's own date, kept from the
    # first time the entry was seen.
    undated: bool = False
    # Daily Papers only, all optional (older schemas lack them; saved snapshots from before them load
    # with these defaults). The organisation's Hugging Face name ("google") and id.
    organization_name: str = ""
    organization_id: str = ""
    github_stars: int | None = None  # None: no repository, or the API gave no count
    # The Hugging Face user name of whoever put the paper on Daily Papers.
    submitter: str = ""
    # The Hugging Face user names of the authors who claimed their authorship, in author order.
    author_users: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """The paper's page, also its permanent entry id: the Hugging Face page for Daily Papers."""
        return self.link or HF_PAPER_URL.format(id=self.id)

    @property
    def is_arxiv(self) -> bool:
        """True when the id is an arXiv id, so arXiv links can be offered."""
        return is_arxiv_id(self.id)

    @property
    def arxiv_url(self) -> str | None:
        return ARXIV_ABS_URL.format(id=self.id) if self.is_arxiv else None

    @property
    def pdf_url(self) -> str | None:
        return ARXIV_PDF_URL.format(id=self.id) if self.is_arxiv else None


def recency(paper: Paper) -> tuple[datetime, str]:
    """The newest-first sort key: the Daily Papers date, ties broken by id, the same in every process."""
    return paper.published, paper.id


def newest_first(papers: Iterable[Paper]) -> list[Paper]:
    """Sort papers newest first (by ``recency``), deterministically."""
    return sorted(papers, key=recency, reverse=True)


def iso_z(moment: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 in UTC with a Z (2026-08-21T12:00:00Z), as JSON answers give dates."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if moment else None


def paper_from_item(item: object) -> Paper:
    """Build a Paper from one API item, or raise InvalidItem saying why."""
    if not isinstance(item, dict):
        raise InvalidItem(f"item is a {type(item).__name__}, not an object")
    inner = item.get("paper")
    if not isinstance(inner, dict):
        raise InvalidItem("item has no 'paper' object")
    paper_id = inner.get("id")
    if not isinstance(paper_id, str) or not _PAPER_ID.match(paper_id.strip()):
        raise InvalidItem(f"item has no valid paper.id: {str(paper_id)[:40]!r}")
    paper_id = paper_id.strip()
    title = clean_text(item.get("title")) or clean_text(inner.get("title"))
    if not title:
        raise InvalidItem(f"paper {paper_id} has no title")
    arxiv_published = parse_timestamp(inner.get("publishedAt"))
    published = (
        parse_timestamp(item.get("publishedAt"))
        or parse_timestamp(inner.get("submittedOnDailyAt"))
        or arxiv_published
    )
    if published is None:
        raise InvalidItem(f"paper {paper_id} has no valid publishedAt")

    # Authors marked "hidden" on Hugging Face are still listed on arXiv (often
    # the first author), so they stay: dropping them would break author: queries.
    authors_raw = inner.get("authors")
    author_objects = [a for a in (authors_raw if isinstance(authors_raw, list) else ()) if isinstance(a, dict)]
    authors = tuple(name for name in (clean_text(a.get("name"))[:MAX_TITLE_CHARS] for a in author_objects) if name)
    authors = authors[:MAX_AUTHORS]
    keywords_raw = inner.get("ai_keywords")
    keywords_given = keywords_raw if isinstance(keywords_raw, list) else ()
    keywords = tuple(k for k in (clean_text(k)[:MAX_TITLE_CHARS] for k in keywords_given) if k)[:MAX_KEYWORDS]
    github_repo = _optional_url(inner.get("githubRepo"))
    org = item.get("organization") or inner.get("organization")
    if not isinstance(org, dict):
        org = {}
    organization = clean_text(org.get("fullname") or org.get("name"))
    # Where each field lives: submittedOnDailyBy (paper, since 2025-03) or submittedBy (outer, from
    # 2024-06); the oldest items have neither. Authors carry a user object once they claim the paper.
    submitter = _user_name(inner.get("submittedOnDailyBy")) or _user_name(item.get("submittedBy"))
    author_users = tuple(dict.fromkeys(
        name for name in (_user_name(a.get("user")) for a in author_objects[:MAX_AUTHORS]) if name))

    return Paper(
        id=paper_id,
        title=title[:MAX_TITLE_CHARS],
        published=published,
        abstract=(clean_text(item.get("summary")) or clean_text(inner.get("summary")))[:MAX_TEXT_CHARS],
        authors=authors,
        upvotes=_optional_int(inner.get("upvotes")),
        comments=_optional_int(item.get("numComments")),
        ai_summary=clean_text(inner.get("ai_summary"))[:MAX_TEXT_CHARS],
        ai_keywords=keywords,
        github_repo=github_repo,
        project_page=_optional_url(inner.get("projectPage")),
        thumbnail=_optional_url(item.get("thumbnail")) or _optional_url(item.get("mediaUrl")),
        organization=organization,
        arxiv_published=arxiv_published,
        organization_name=_hf_name(org.get("name")),
        organization_id=_hf_name(org.get("_id")),
        github_stars=_optional_count(inner.get("githubStars")) if github_repo else None,
        submitter=submitter,
        author_users=author_users,
    )
