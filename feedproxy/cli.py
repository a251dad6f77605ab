"""The ``feedproxy`` command: try queries in a terminal against saved or fixture papers.

    feedproxy query "pretraining -survey" --from tests/fixtures/daily_papers/2026-08-21.json
    feedproxy query "author:hinton" --sort upvotes --limit 10      # the saved snapshot

Without --from it reads the snapshot the service saved (FEEDPROXY_DATA_DIR, or
the per-user cache folder), so it shows what /feed would show, offline.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from feedproxy.config import DEFAULT_SOURCE, default_data_dir
from feedproxy.errors import QueryError, StorageError, UpstreamError
from feedproxy.search.index import SORTS, PaperIndex
from feedproxy.search.merged import count_matches, search_snapshots
from feedproxy.search.query import parse_query
from feedproxy.store.files import SnapshotFile
from feedproxy.store.snapshot import Snapshot
from feedproxy.upstream.daily_papers import FileListing

# How the papers shown are chosen, for "showing the newest 50".
_FIRST_BY_SORT = {"date": "newest", "upvotes": "most upvoted", "relevance": "most relevant",
                  "trending": "most trending"}


def _papers_from_listing(path: str):
    return [p for page in FileListing(path).pages() for p in page.papers]


def _papers_from_saved(data_dir: str, source: str):
    saved = SnapshotFile(Path(data_dir) / source).load()
    if saved is None:
        raise StorageError(
            f"no saved snapshot in {Path(data_dir) / source}: start the service once (make run), "
            "or give a listing file with --from"
        )
    return list(saved.papers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feedproxy", description="feedproxy command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    query = commands.add_parser("query", help="print the papers a query matches")
    query.add_argument("q", help='the query, as in /feed?q=..., e.g. "pretraining -survey"')
    query.add_argument("--from", dest="source_file", metavar="FILE",
                       help="a Daily Papers JSON listing (.json or .json.gz) instead of the saved snapshot")
    query.add_argument("--data-dir", default=os.environ.get("FEEDPROXY_DATA_DIR") or str(default_data_dir()),
                       help="where the service saves its snapshot (default: %(default)s)")
    query.add_argument("--source", default=DEFAULT_SOURCE, help="which saved source to read (default: %(default)s)")
    query.add_argument("--limit", type=int, default=50, help="at most this many papers (default: %(default)s)")
    query.add_argument("--sort", choices=SORTS, default="date")
    query.add_argument("--min-upvotes", type=int, default=0)
    query.add_argument("--days", type=int, default=None, help="only the last N days of the data")
    args = parser.parse_args(argv)

    try:
        parsed = parse_query(args.q)
    except QueryError as exc:
        print(f"feedproxy: invalid query: {exc}", file=sys.stderr)
        return 2
    try:
        papers = _papers_from_listing(args.source_file) if args.source_file else _papers_from_saved(
            args.data_dir, args.source)
    except (UpstreamError, StorageError) as exc:
        print(f"feedproxy: {exc}", file=sys.stderr)
        return 1
    snapshot = Snapshot.build(papers, datetime.now(timezone.utc), build_index=PaperIndex)
    filters = dict(now=datetime.now(timezone.utc), min_upvotes=args.min_upvotes, days=args.days)
    found = search_snapshots([snapshot], parsed, sort=args.sort, limit=max(1, args.limit), **filters)
    for paper in found:
        print(f"{paper.id}  {paper.published:%Y-%m-%d}  {paper.upvotes:>4}  {paper.title}")
    matching = count_matches([snapshot], parsed, **filters)
    summary = f"{matching} of {len(snapshot.papers)} papers match {args.q!r}"
    if len(found) < matching:
        summary += f"; showing the {_FIRST_BY_SORT[args.sort]} {len(found)} (--limit)"
    print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
