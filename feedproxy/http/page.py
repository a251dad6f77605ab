"""The human side: the page at /, its live preview data at /preview.json, and OPML at /opml.

The page lets someone try a query, see which papers it finds, how many matched
each week (a bar chart drawn on the server as inline SVG) and copy the feed URL,
with or without JavaScript. Every view validates with web.parse_request_args
and picks sources with web.sources_for, as /feed does, and searches with
web.find_papers, as /feed does: what the page previews is what the feed serves.
Templates and static files live in ``templates/`` and ``static/`` beside this
module, where ``Flask(__name__)`` in create_app finds them (/static/...).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date

from flask import Blueprint, Response, current_app, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from feedproxy.upstream.papers import Paper, iso_z, strip_xml_forbidden
from feedproxy.errors import BadParameter, ConceptsUnavailable, NoData, QueryError
from feedproxy.http.params import TOP_SORT, TOPS, FeedRequest, encode_params
from feedproxy.search.index import SORTS
from feedproxy.search.merged import prepared, weekly_counts
from feedproxy.search.query import EMPTY_QUERY, MATCHES, highlight, parse_query
from feedproxy.render.digest import PERIODS
from feedproxy.render.formats import FORMATS
from feedproxy.store.snapshot import Snapshot
from feedproxy.store.sources import Source, current_snapshots
from feedproxy.http.views import (
    concepts_unavailable_text, find_papers, parse_request_args, plain, sources_for, why_matched,
)

bp = Blueprint("page", __name__)

MAX_OPML_QUERIES = 50
DEFAULTS = FeedRequest(query=EMPTY_QUERY)
CONTROLS = ("q", "min_upvotes", "days", "sort", "top", "format", "limit", "digest", "match")  # the form's visible controls
PASSED_ON = ("similar", "source", "announce", "url")  # /feed parameters the form keeps in hidden fields
# Scripts, styles and requests only from this service: no CDN, font or inline script can run,
# so even a markup injection that slipped past escaping could not execute.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SYNTAX_EXAMPLES = (
    ("pretraining -survey", "every word must match (AND is the default); -word or NOT word excludes"),
    ("pre-training", 'a hyphenated word is one term: finds "pre-training", "pretraining", "pretrained"'),
    ("diffusion OR flow", "either word: OR (in capitals) or |"),
    ("video (diffusion | flow)", "parentheses group: video AND (diffusion OR flow)"),
    ('"language model"', "a phrase: the words next to each other, in this order"),
    ('title:agent author:"g hinton"', "a word or phrase in one field: title:, abstract:, author:, keyword:"),
    ('~"tool use" -survey', "a concept: papers near that meaning, even in other words; mixes with the rest"),
    ("org:google has:code", "an organisation (name or id) or submitter: (a Hugging Face user name); papers with "
                            "code (has:code) or a project page (has:project)"),
    ("agent stars>=100 -comments<1", "compare GitHub stars or comments with >=, >, <=, < or ="),
)
# The chart of matching papers per week: its viewBox, in SVG units (the page stretches it to its width).
CHART_WIDTH, CHART_HEIGHT = 600, 60


@dataclass(frozen=True)
class WeekBar:
    """One week with matches, as a bar of the chart."""

    week: date  # its Monday
    count: int
    x: float
    y: float
    width: float
    height: float

    @property
    def label(self) -> str:
        return f"week of {self.week.isoformat()}: {_papers(self.count)}"

    def to_json(self) -> dict:
        return {"week": self.week.isoformat(), "count": self.count, "x": self.x, "y": self.y, "width": self.width,
                "height": self.height, "label": self.label}


@dataclass(frozen=True)
class WeekChart:
    """How many papers match each week (Monday to Sunday, UTC) over the window: how busy a topic is."""

    weeks: tuple[tuple[date, int], ...]
    bars: tuple[WeekBar, ...]  # the weeks with matches; the others are gaps
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT

    @classmethod
    def of(cls, weeks: list[tuple[date, int]]) -> "WeekChart":
        """Lay out one slot per week, a bar 80% of it, heights relative to the busiest week."""
        most = max((count for _, count in weeks), default=0)
        slot = CHART_WIDTH / max(len(weeks), 1)
        bars = []
        for n, (week, count) in enumerate(weeks):
            if count:
                height = round(max(count / most * CHART_HEIGHT, 1), 2)  # at least 1: a week with one paper shows
                bars.append(WeekBar(week, count, x=round(n * slot + slot * 0.1, 2), y=round(CHART_HEIGHT - height, 2),
                                    width=round(slot * 0.8, 2), height=height))
        return cls(tuple(weeks), tuple(bars))

    @property
    def summary(self) -> str:
        """The chart in one sentence: its text alternative."""
        if not self.weeks:
            return "No papers to count."
        span = (f"the week of {self.weeks[0][0].isoformat()}" if len(self.weeks) == 1 else
                f"the {len(self.weeks)} weeks from {self.weeks[0][0].isoformat()} to {self.weeks[-1][0].isoformat()}")
        total = sum(count for _, count in self.weeks)
        if not total:
            return f"No matching papers in {span}."
        week, most = max(self.weeks, key=lambda pair: (pair[1], pair[0]))
        busiest = "" if len(self.weeks) == 1 else f"; the most, {most}, in the week of {week.isoformat()}"
        return f"{_papers(total)} matching in {span}{busiest}."

    def to_json(self) -> dict:
        return {"summary": self.summary, "width": self.width, "height": self.height,
                "bars": [bar.to_json() for bar in self.bars]}


def _papers(n: int) -> str:
    return f"{n} paper" if n == 1 else f"{n} papers"


def week_chart(params: FeedRequest, current: list[tuple[Source, Snapshot]]) -> WeekChart:
    """Count the matches of ``params`` per week, over the days its feed searches (all of them, not ``limit``)."""
    snapshots = [snapshot for _, snapshot in current]
    searched = prepared(snapshots, params.query, params.match, params.similar)  # as the feed searches it
    weeks = weekly_counts(snapshots, searched, now=current[0][0].store.clock(),
                          min_upvotes=params.min_upvotes, days=params.searched_days, announce=params.announce)
    return WeekChart.of(weeks)


@dataclass(frozen=True)
class Row:
    """One paper as the preview shows it: its title with the searched words marked, and why it is there."""

    paper: Paper
    title: tuple[tuple[str, bool], ...]
    why: str
    similar_url: str


@dataclass(frozen=True)
class Preview:
    """What the page shows for one set of parameters: the feed URL and the papers, or why not."""

    feed_url: str | None = None
    opml_url: str | None = None
    rows: tuple[Row, ...] = ()
    chart: WeekChart | None = None
    error: str | None = None  # the message /feed answers for these parameters
    error_status: int = 400
    error_control: str = "q"  # the form control the message is about
    no_data: NoData | None = None
    unavailable: str | None = None  # why concept search cannot answer these parameters here (503)


def _absolute(path: str, pairs: list[tuple[str, str]]) -> str:
    return request.host_url + path + ("?" + encode_params(pairs) if pairs else "")


def example_links(args: MultiDict) -> list[tuple[str, str, str]]:
    """The syntax examples as (query, meaning, page URL): each keeps the other parameters chosen."""
    kept = [(k, v) for k, v in args.items(multi=True) if k != "q"]
    page = url_for("page.index")
    return [(example, meaning, page + "?" + encode_params([("q", example), *kept]))
            for example, meaning in SYNTAX_EXAMPLES]


def _window_days() -> int:
    return current_app.extensions["feedproxy.store"].window.days


def words_to_mark(params: FeedRequest):
    """The words to mark in titles: the query's own (a concept query's words are not searched as words)."""
    return params.query if params.match != "concept" else EMPTY_QUERY


def build_preview(args: MultiDict) -> Preview:
    """Validate ``args`` exactly as /feed does and find the papers it would list."""
    try:
        params = parse_request_args(args)
        sources = sources_for(params)
    except BadParameter as exc:
        control = exc.parameter if exc.parameter in CONTROLS else "q"
        return Preview(error=str(exc), error_status=exc.status, error_control=control)
    pairs = params.url_params()
    # /opml needs a q even for "every paper", so the empty query is written q= there.
    opml_pairs = pairs if pairs and pairs[0][0] == "q" else [("q", ""), *pairs]
    found = dict(feed_url=_absolute("feed", pairs), opml_url=_absolute("opml", opml_pairs))
    try:
        current = current_snapshots(sources)
        papers = find_papers(params, current)
        why = why_matched(params, [snapshot for _, snapshot in current], papers)
        marks = words_to_mark(params)
        scope = params.scope_params()  # papers like one of a source's are searched for in that source
        rows = tuple(Row(p, tuple(highlight(p.title, marks)), why.get(p.id, ""),
                         url_for("page.index") + "?" + encode_params([*scope, ("similar", p.id)]))
                     for p in papers)
        return Preview(**found, rows=rows, chart=week_chart(params, current))
    except NoData as exc:
        return Preview(**found, no_data=exc)
    except BadParameter as exc:  # similar= names a paper no source holds
        return Preview(error=str(exc), error_status=exc.status, error_control=exc.parameter or "q")
    except ConceptsUnavailable as exc:
        return Preview(**found, unavailable=concepts_unavailable_text(exc, params))


@bp.get("/")
def index() -> Response:
    """The page. Bad parameters are shown next to the form, with /feed's status (400) and message."""
    preview = build_preview(request.args)
    html = render_template(
        "page.html",
        args=request.args,
        preview=preview,
        passed_on=[(k, v) for k, v in request.args.items(multi=True) if k in PASSED_ON],
        window_days=_window_days(),
        sorts=SORTS,
        matches=MATCHES,
        tops=TOPS,
        top_sort=TOP_SORT,
        formats=tuple(FORMATS),
        digests=PERIODS,
        defaults=DEFAULTS,
        examples=example_links(request.args),
    )
    response = Response(html, status=preview.error_status if preview.error else 200,
                        content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@bp.get("/preview.json")
def preview_json() -> Response:
    """The live preview's data: 200 with papers, /feed's 4xx with its message, or 503 while no data."""
    preview = build_preview(request.args)
    if preview.error:
        return _json({"error": preview.error, "parameter": preview.error_control}, preview.error_status)
    if preview.no_data is not None or preview.unavailable is not None:
        reason = preview.unavailable or f"no papers yet: {preview.no_data.reason}"
        retry = preview.no_data.retry_after if preview.no_data is not None else 60
        body = {"error": reason, "feed_url": preview.feed_url, "opml_url": preview.opml_url}
        return _json(body, 503, {"Retry-After": str(retry)})
    papers = [
        {"id": row.paper.id, "title": row.paper.title, "url": row.paper.url, "published": iso_z(row.paper.published),
         "upvotes": row.paper.upvotes, "organization": row.paper.organization or None,
         "github_repo": row.paper.github_repo, "github_stars": row.paper.github_stars,
         "title_parts": row.title, "why": row.why, "similar_url": row.similar_url}
        for row in preview.rows
    ]
    return _json({"feed_url": preview.feed_url, "opml_url": preview.opml_url, "papers": papers,
                  "count": len(papers), "chart": preview.chart.to_json()}, 200)


def _json(body: dict, status: int, headers: dict | None = None) -> Response:
    response = Response(json.dumps(body, ensure_ascii=False), status=status, headers=headers,
                        content_type="application/json")
    response.headers["Cache-Control"] = "no-store"  # it follows the snapshot; a reload must see new papers
    return response


@bp.get("/opml")
def opml() -> Response:
    """An OPML 2.0 subscription list: one feed per q, the other parameters applied to each."""
    queries = request.args.getlist("q")
    if not queries:
        return plain("give at least one 'q' parameter, one per feed, e.g. /opml?q=diffusion&q=agents", 400)
    if len(queries) > MAX_OPML_QUERIES:
        return plain(f"too many feeds: {len(queries)} 'q' parameters, at most {MAX_OPML_QUERIES} are accepted", 400)
    shared = [(k, v) for k, v in request.args.items(multi=True) if k != "q"]
    try:
        sources = sources_for(parse_request_args(MultiDict(shared)))
    except BadParameter as exc:
        return plain(str(exc), exc.status)
    source_title = " + ".join(source.title for source in sources)
    feeds = []
    for number, raw in enumerate(queries, start=1):
        try:
            parse_query(raw)
        except QueryError as exc:
            return plain(f"'q' number {number} ({raw[:60]!r}) is not a valid query: {exc}", 400)
        params = parse_request_args(MultiDict([*shared, ("q", raw)]))
        feeds.append((params.title(source_title), params.url_params()))
    return Response(
        render_opml(feeds),
        content_type="text/x-opml; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="feedproxy.opml"'},
    )


def render_opml(feeds: list[tuple[str, list[tuple[str, str]]]]) -> bytes:
    """Write one <outline> per (title, feed parameters); ElementTree escapes every value."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = "feedproxy feeds"
    body = ET.SubElement(root, "body")
    for title, pairs in feeds:
        title = strip_xml_forbidden(title)  # XML 1.0 cannot carry control characters, escaped or not
        ET.SubElement(body, "outline", type="rss", text=title, title=title,
                      xmlUrl=_absolute("feed", pairs), htmlUrl=_absolute("", pairs))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
