"""Search a snapshot of papers: an inverted index built once, queried per request.

Papers are numbered newest first, and a set of papers is a Python int with bit
i set for paper i (a bitset): AND, OR and NOT are &, | and ~ over whole sets in
C, and the lowest set bits are the newest matches, so a date-sorted page reads
only as many bits as it shows. Each field maps a stem to the papers holding it.
A bitset costs (number of the paper's last holder) / 8 bytes whatever its size,
so stems held by few papers (most of them: author names, rare words) keep an
array of paper numbers instead and become a bitset only when a query asks.

Each paper also keeps its stems in order as a string, one character per stem,
fields separated by NUL: "are these stems adjacent" is then a substring test,
and a term's frequency is ``str.count``. A phrase is first narrowed to the
papers holding all its stems; only those are checked, and for a date-sorted
page only until the page is full.

Filters (has:code, stars>=100) are bitsets too: one per has: value, and for each
count (upvotes, stars, comments) a list of nested masks, "at least N" for every
N some paper has, so any comparison is a bisection and one or two masks.
"""

from __future__ import annotations

import heapq
import itertools
import math
from array import array
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np

from feedproxy.errors import ConceptsUnavailable, InvalidValue
from feedproxy.search import concepts as concept_search
from feedproxy.search.concepts import DEFAULT_MIN_ZSCORE, RRF_K, ConceptIndex, model_problem
from feedproxy.search.query import (
    And, Compare, Concept, Has, Node, Not, Or, Phrase, Query, Term, TextAnalyser, concept_leaves, keyword_part,
    positive_leaves,
)
from feedproxy.upstream.papers import Paper, newest_first

SORTS = ("date", "upvotes", "relevance", "trending")
# sort=trending: upvotes per hour since the paper was listed, counted to the newest paper's listing
# time (not the clock, so every instance holding the same papers gives the same order), and as if
# listed at least this many hours before, so the newest papers' first upvotes do not divide by zero.
TRENDING_MIN_HOURS = 2.0

# The order of fields in a paper's stem string. Bare words and phrases search the first four, so
# those with their own prefix only (org:, submitter:) come last: a paper's "any field" is a prefix.
_LAYOUT = ("title", "abstract", "keyword", "author", "org", "submitter")
_ANY_FIELDS = _LAYOUT[:4]
_ANY_FIELD_END = _ANY_FIELDS[-1]
_SEPARATOR = "\0"
# A stem's postings stay an array until the bitset would be at most this many
# times bigger: bitsets are faster to combine, arrays far smaller when rare.
_DENSE_RATIO = 4
# Phrases: the most spellings tried (a compound term in text may be hyphenated).
_MAX_PHRASE_VARIANTS = 64
# BM25 with the usual constants; a title occurrence counts 1 + _TITLE_EXTRA
# times, because a title says what a paper is about.
_K1, _B = 1.2, 0.75
_TITLE_EXTRA = 2

# Stems in text take code points up to here, joined stems the ones above: half
# a million of each, where 10,000 papers hold 50,000 and 30,000.
_LAST_STEM_CODE = 0x88000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_MICROS_PER_HOUR = 3_600_000_000
_BIT_DIGITS = bytes.maketrans(b"\0\1", b"01")
_CONCEPT_CACHE_SIZE = 64  # concepts' scores kept per index (9,877 floats each: 40 kB)


class PaperIndex:
    """The papers of one snapshot, newest first, with everything a search needs."""

    def __init__(self, papers: Iterable[Paper], *, concepts: bool = True) -> None:
        self.papers: tuple[Paper, ...] = _sharing_strings(newest_first(papers))
        # The concept index (embeddings, search.concepts), or why there is none: keyword search
        # works either way; concept queries raise ConceptsUnavailable with this reason.
        self.concepts: ConceptIndex | None = None
        self.concepts_error: str | None = "concept search is off for this index"
        self.concepts_wanted = concepts
        if concepts:
            try:
                self.concepts = ConceptIndex.build([concept_text(p) for p in self.papers])
                self.concepts_error = None
            except ConceptsUnavailable as exc:
                self.concepts_error = str(exc)
        self._index_text()
        self._index_filters()

    def can_gain_concepts(self) -> bool:
        """Built without concept vectors though asked for them (the model would not load then), and the
        model loads now: the next refresh builds the index again instead of keeping it, without concept
        search, until new papers arrive."""
        if self.concepts is not None or not self.concepts_wanted:
            return False
        try:
            concept_search.shared_model()
        except ConceptsUnavailable:
            return False
        return True

    def concepts_problem(self) -> str | None:
        """Why concept queries cannot run over this index in this process (they answer 503), or None.

        Opens no model: /healthz asks it of a worker that may never have had a concept query.
        """
        if self.concepts is None:
            return self.concepts_error
        return model_problem(self.concepts.fingerprint)

    def _index_text(self) -> None:
        """Build the stem strings and compound splits, then the postings.

        Two passes, so their working memory never adds up: the first analyses
        text into stem strings, the second reads the postings off those strings
        one field at a time. A worker holds the old index while it builds anew.
        """
        analyser = TextAnalyser()
        # Each stem in text gets a character; the first seen are the common
        # ones, and early code points keep most stem strings at 2 bytes a
        # character. Joined stems of compounds, which the stem strings spell in
        # parts, get characters counting down from the last code point.
        codes: dict[str, str] = {}
        joined_codes: dict[str, str] = {}
        # Per paper, the joined stems of its compounds, fields separated by NUL.
        joined_texts: list[str] = []
        # A compound's joined stem -> its parts as stem strings, NUL-separated,
        # for phrases: "pretrained model" must find "pre-trained model".
        self._splits: dict[str, str] = {}
        self._texts: list[str] = []
        # _ends[field][n]: where field ends in paper n's stem string.
        self._ends = {field: array("I") for field in _LAYOUT}
        for paper in self.papers:
            field_texts, field_joined = [], []
            for texts in _field_texts(paper):
                analyses = [analyser.analyse(text) for text in texts]
                joined = set()
                for a in analyses:
                    for s in a.stems:
                        if s not in codes:
                            codes[s] = _stem_char(len(codes) + 1)
                    for compound in a.compounds:
                        if compound.joined not in joined_codes:
                            joined_codes[compound.joined] = _joined_char(len(joined_codes) + 1)
                        joined.add(joined_codes[compound.joined])
                        self._add_split(compound.joined, "".join(map(codes.__getitem__, compound.parts)))
                field_texts.append(_SEPARATOR.join("".join(map(codes.__getitem__, a.stems)) for a in analyses))
                field_joined.append("".join(joined))
            self._texts.append(_SEPARATOR.join(field_texts))
            joined_texts.append(_SEPARATOR.join(field_joined))
            end = -1
            for field, field_text in zip(_LAYOUT, field_texts):
                end += 1 + len(field_text)
                self._ends[field].append(end)
        del analyser

        # Stem -> code point as a sorted list and an array: a dict would cost
        # eight times the memory, and a lookup happens only once per query term.
        self._stems = sorted(codes)
        self._codes = array("I", (ord(codes[s]) for s in self._stems))
        stem_at = {ord(code): s for s, code in itertools.chain(codes.items(), joined_codes.items())}
        del codes, joined_codes

        typecode = "H" if len(self.papers) <= 1 << 16 else "I"
        self._fields = {}
        for at, field in enumerate(_LAYOUT):
            holders: defaultdict[str, array[int]] = defaultdict(lambda: array(typecode))
            for number, (text, joined) in enumerate(zip(self._texts, joined_texts)):
                start, end = self._field_range(number, field)
                in_field = set(text[start:end]).union(joined.split(_SEPARATOR)[at])
                in_field.discard(_SEPARATOR)
                for s in set(map(stem_at.__getitem__, map(ord, in_field))):
                    holders[s].append(number)
            self._fields[field] = _FieldPostings(holders, typecode)

    def _add_split(self, joined: str, parts: str) -> None:
        known = self._splits.get(joined)
        if known is None:
            self._splits[joined] = parts
        elif parts not in known.split(_SEPARATOR):
            self._splits[joined] = known + _SEPARATOR + parts

    def _index_filters(self) -> None:
        """Build what the filters and sorts need: dates, counts, links, text lengths."""
        # The length of the text bare words search: a BM25 norm.
        lengths = self._ends[_ANY_FIELD_END]
        average = sum(lengths) / len(lengths) if lengths else 1.0
        self._norms = array("d", (_K1 * (1 - _B + _B * length / (average or 1.0)) for length in lengths))
        self._upvotes = array("q", (p.upvotes for p in self.papers))
        self._all = (1 << len(self.papers)) - 1
        # Newest first, so the papers published at or after a moment are a prefix.
        self._published_keys = [-_micros(p.published) for p in self.papers]
        self._upvote_levels = _Levels(self._upvotes)
        self._counts = {
            "stars": _Levels([p.github_stars for p in self.papers]),
            "comments": _Levels([p.comments for p in self.papers]),
        }
        self._has = {
            "code": _bits_from_positions([n for n, p in enumerate(self.papers) if p.github_repo]),
            "project": _bits_from_positions([n for n, p in enumerate(self.papers) if p.project_page]),
        }

    def __len__(self) -> int:
        return len(self.papers)

    def search(
        self,
        query: Query,
        *,
        min_upvotes: int = 0,
        since: datetime | None = None,
        sort: str = "date",
        limit: int = 50,
        top: bool = False,
        trending_at: datetime | None = None,
    ) -> list[Paper]:
        """Return up to ``limit`` papers matching ``query`` and the filters, in ``sort`` order.

        date: newest first (ties by id, descending); upvotes: most first, ties by
        date; relevance: BM25 over the searched terms, ties by date; trending:
        trending_score counted to ``trending_at`` (default: this index's newest
        paper), ties by date. ``top``: only the ``limit`` most upvoted matches,
        in ``sort`` order.
        """
        if sort not in SORTS:
            raise InvalidValue(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        if limit < 0 or min_upvotes < 0:
            raise InvalidValue("limit and min_upvotes must not be negative")
        if since is not None and since.tzinfo is None:
            raise InvalidValue("since must be a timezone-aware datetime")
        scope = self._scope(min_upvotes, since)
        if not scope or not limit:
            return []
        search = _Search(self, scope)
        if top:
            chosen = _bits_from_positions(self._most_upvoted(search.matches(query.root), limit))
            found = self._ordered(query.root, chosen, sort, limit, trending_at, search)
        elif sort == "date":
            found = search.newest(query.root, limit)
        else:
            found = self._ordered(query.root, search.matches(query.root), sort, limit, trending_at, search)
        return [self.papers[n] for n in found]

    def number_of(self, paper_id: str) -> int | None:
        """The number of the paper with this id in this index, or None."""
        numbers = self.__dict__.get("_numbers")
        if numbers is None:
            numbers = self.__dict__["_numbers"] = {p.id: n for n, p in enumerate(self.papers)}
        return numbers.get(paper_id)

    def fields_matched(self, root: Node, paper_ids: Iterable[str]) -> dict[str, list[tuple[Term | Phrase, list[str]]]]:
        """For each of the papers held among ``paper_ids``: each word or phrase searched for, and the
        fields of the paper that hold it. A word's postings are read once for all the papers."""
        columns = []
        for leaf in positive_leaves(root):
            fields = [leaf.field] if leaf.field else list(_ANY_FIELDS)
            if isinstance(leaf, Term):
                columns.append((leaf, [(f, _digits(self._fields[f].bits(leaf.stem))) for f in fields], None))
            else:
                columns.append((leaf, fields, self.phrase_variants(leaf.stems)))
        found = {}
        for paper_id in paper_ids:
            number = self.number_of(paper_id)
            if number is None:
                continue
            rows = []
            for leaf, fields, variants in columns:
                if variants is None:
                    held = [f for f, digits in fields if number < len(digits) and digits[number] == "1"]
                else:
                    held = [f for f in fields if variants and self.has_phrase(number, variants, f)]
                rows.append((leaf, held))
            found[paper_id] = rows
        return found

    def concepts_near(self, concepts: Sequence[Concept], paper_id: str) -> list[tuple[str, float]]:
        """For each of ``concepts`` (a query's concept_leaves) that paper ``paper_id`` is near: its text and how near."""
        number = self.number_of(paper_id)
        near = []
        for concept in concepts:
            score = float(self.concept_scores(concept)[number])
            if score >= (DEFAULT_MIN_ZSCORE if concept.min_score is None else concept.min_score):
                near.append((concept.text, score))
        return near

    def concept_scores(self, concept: Concept) -> np.ndarray:
        """Each paper's closeness to the meaning of ``concept``, in standard deviations above the mean.

        A concept that is one of this index's papers (similar=) uses the paper's saved embedding, the
        same vector its text would give: its text is not tokenized and embedded again.
        """
        if self.concepts is None:
            raise ConceptsUnavailable(f"concept search is unavailable: {self.concepts_error}")
        cache = self.__dict__.setdefault("_concept_cache", {})
        text = concept.text
        scores = cache.get(text)
        if scores is None:
            row = self.number_of(concept.paper) if concept.paper is not None else None
            if row is not None and concept_text(self.papers[row]) == text:
                scores = self.concepts.zscores_of_row(row)
            else:
                scores = self.concepts.zscores(text)
            if len(cache) >= _CONCEPT_CACHE_SIZE:
                cache.pop(next(iter(cache)), None)  # the oldest; a race only costs a recomputation
            cache[text] = scores
        return scores

    def __getstate__(self) -> dict:
        # Caches filled by queries are not part of the index.
        return {k: v for k, v in self.__dict__.items() if k not in ("_numbers", "_concept_cache")}

    def _ordered(
        self, root: Node | None, matches: int, sort: str, limit: int, trending_at: datetime | None,
        search: "_Search",
    ) -> list[int]:
        """The first ``limit`` of ``matches`` in ``sort`` order."""
        if sort == "date":
            return list(itertools.islice(_positions(matches), limit))
        if sort == "upvotes":
            return self._most_upvoted(matches, limit)
        if sort == "trending":
            return self._most_trending(matches, limit, trending_at)
        return self._most_relevant(root, matches, limit, search)

    def count(self, query: Query, *, min_upvotes: int = 0, since: datetime | None = None) -> int:
        """Return how many papers match ``query`` and the filters: a bit count, none of them listed or sorted."""
        scope = self._scope(min_upvotes, since)
        return _Search(self, scope).matches(query.root).bit_count() if scope else 0

    def count_since(
        self, query: Query, moments: Sequence[datetime], *, min_upvotes: int = 0, since: datetime | None = None
    ) -> list[int]:
        """For each of ``moments``, how many papers matching ``query`` and the filters were listed at or after it.

        One search and a bit count per moment: the differences of consecutive
        moments are the matches listed between them (the page's weekly chart).
        """
        scope = self._scope(min_upvotes, since)
        matches = _Search(self, scope).matches(query.root) if scope else 0
        return [(matches & self._listed_since(moment)).bit_count() for moment in moments]

    def _listed_since(self, moment: datetime) -> int:
        """The papers listed at or after ``moment``: a prefix, as papers are numbered newest first."""
        return (1 << bisect_right(self._published_keys, -_micros(moment))) - 1

    def _scope(self, min_upvotes: int, since: datetime | None) -> int:
        """Return the papers that pass the filters."""
        scope = self._all
        if since is not None:
            scope &= self._listed_since(since)
        if min_upvotes > 0:
            scope &= self._upvote_levels.at_least(min_upvotes)
        return scope

    def has(self, what: str) -> int:
        """Return the papers with a GitHub repository (``what`` "code") or a project page ("project")."""
        return self._has[what]

    def compare(self, count: str, operator: str, value: int) -> int:
        """Return the papers whose ``count`` (stars or comments) compares with ``value`` as ``operator`` says."""
        return self._counts[count].compare(operator, value)

    def postings(self, stem: str, field: str | None) -> int:
        """Return the papers whose ``field`` (None: any field a bare word searches) holds ``stem``."""
        if field is not None:
            return self._fields[field].bits(stem)
        return _any_of(self._fields[f].bits(stem) for f in _ANY_FIELDS)

    def phrase_variants(self, stems: Sequence[str]) -> tuple[str, ...]:
        """Return the stem strings that spell ``stems`` in a paper: joined or hyphenated."""
        options = []
        for s in stems:
            spellings = []
            code = self._code(s)
            if code:
                spellings.append(code)
            if s in self._splits:
                spellings.extend(self._splits[s].split(_SEPARATOR))
            if not spellings:
                return ()
            options.append(spellings)
        return tuple("".join(v) for v in itertools.islice(itertools.product(*options), _MAX_PHRASE_VARIANTS))

    def _code(self, stem: str) -> str:
        at = bisect_left(self._stems, stem)
        return chr(self._codes[at]) if at < len(self._stems) and self._stems[at] == stem else ""

    def with_phrase(self, numbers: Iterable[int], variants: tuple[str, ...], field: str | None) -> list[int]:
        """Return those of papers ``numbers`` that spell one of ``variants`` in ``field``."""
        if field is not None or len(variants) != 1:
            return [n for n in numbers if self.has_phrase(n, variants, field)]
        texts, ends, variant = self._texts, self._ends[_ANY_FIELD_END], variants[0]
        return [n for n in numbers if texts[n].find(variant, 0, ends[n]) >= 0]

    def has_phrase(self, number: int, variants: tuple[str, ...], field: str | None) -> bool:
        """Tell whether paper ``number`` spells one of ``variants`` in ``field`` (None: any a bare word searches)."""
        text = self._texts[number]
        start, end = (0, self._ends[_ANY_FIELD_END][number]) if field is None else self._field_range(number, field)
        return any(text.find(v, start, end) >= 0 for v in variants)

    def _field_range(self, number: int, field: str) -> tuple[int, int]:
        at = _LAYOUT.index(field)
        start = self._ends[_LAYOUT[at - 1]][number] + 1 if at else 0
        return start, self._ends[field][number]

    def _most_upvoted(self, matches: int, limit: int) -> list[int]:
        # The upvote masks are nested: find the smallest that still holds a
        # full page of matches, then sort only the matches inside it.
        masks = self._upvote_levels.masks
        low, high = 0, len(masks) - 1
        while low < high:
            middle = (low + high) // 2
            if (matches & masks[middle]).bit_count() >= limit:
                high = middle
            else:
                low = middle + 1
        candidates = matches & masks[high] if masks else 0
        return sorted(_positions(candidates), key=lambda n: (-self._upvotes[n], n))[:limit]

    def _most_trending(self, matches: int, limit: int, trending_at: datetime | None) -> list[int]:
        if not self.papers:
            return []
        reference = _micros(trending_at or self.papers[0].published)
        keys = self._published_keys
        scored = ((-trending_score(self._upvotes[n], (reference + keys[n]) / _MICROS_PER_HOUR), n)
                  for n in _positions(matches))
        return [n for _, n in heapq.nsmallest(limit, scored)]

    def _most_relevant(self, root: Node | None, matches: int, limit: int, search: "_Search") -> list[int]:
        concepts = concept_leaves(root)
        if not concepts:
            return self._by_bm25(root, matches, limit)
        # Keyword and concept scores are not comparable: fuse their rankings by reciprocal rank fusion
        # (search.concepts.reciprocal_rank_fusion, done here over arrays: a similar= feed ranks a sixth
        # of the window). Each ranking holds only the matches of its own part of the query: BM25 ranks
        # those of the keyword part, a concept those near enough to it. Ties go to the newer paper.
        numbers = _position_array(matches)
        if not numbers.size:
            return []
        rankings = []
        keywords = keyword_part(root)
        if keywords is not None and (by_words := search.matches(keywords) & matches):
            by_bm25 = np.asarray(self._by_bm25(root, by_words, by_words.bit_count()), dtype=np.int64)
            rankings.append(np.searchsorted(numbers, by_bm25))  # positions in ``numbers``, best first
        for concept in concepts:
            scores = search.concept_scores(concept)[numbers]
            near = np.flatnonzero(scores >= _cutoff(concept))
            rankings.append(near[np.lexsort((numbers[near], -scores[near]))])
        fused = np.zeros(numbers.size)
        shares = 1.0 / (RRF_K + np.arange(1, numbers.size + 1))
        for ranking in rankings:
            fused[ranking] += shares[: ranking.size]
        return numbers[np.lexsort((numbers, -fused))[:limit]].tolist()

    def _by_bm25(self, root: Node | None, matches: int, limit: int) -> list[int]:
        # Column by column: str.count mapped over all matches runs in C, which
        # keeps a thousand matches near a millisecond.
        numbers = _position_array(matches).tolist()
        texts = list(map(self._texts.__getitem__, numbers))
        norms = list(map(self._norms.__getitem__, numbers))
        scores = [0.0] * len(numbers)
        for leaf in positive_leaves(root):
            stems = (leaf.stem,) if isinstance(leaf, Term) else leaf.stems
            frequency = _all_of(self.postings(s, leaf.field) for s in stems).bit_count()
            if not frequency:
                continue
            counts = self._occurrences(texts, numbers, self._counted_variants(stems), leaf.field)
            weight = math.log(1 + (len(self.papers) - frequency + 0.5) / (frequency + 0.5)) * (_K1 + 1)
            scores = [s + weight * c / (c + n) if c else s for s, c, n in zip(scores, counts, norms)]
        ranked = heapq.nsmallest(limit, zip([-s for s in scores], numbers))
        return [number for _, number in ranked]

    def _counted_variants(self, stems: Sequence[str]) -> tuple[str, ...]:
        variants = self.phrase_variants(stems)
        if len(stems) > 1 or len(variants) < 2:
            return variants
        # "Agent-S" is agent + s with joined stem "agent": counting that split
        # as well as the part would count one word twice.
        return tuple(v for v in variants if len(v) == 1 or variants[0] not in v)

    def _occurrences(self, texts: list[str], numbers: list[int], variants: tuple[str, ...], field: str | None) -> list[int]:
        """Count ``variants`` in each text, in ``field``, a title occurrence weighing more."""
        if field is None:
            starts: Iterable[int] = itertools.repeat(0)
            ends = list(map(self._ends["title"].__getitem__, numbers))
            any_ends = list(map(self._ends[_ANY_FIELD_END].__getitem__, numbers))
        else:
            ranges = [self._field_range(n, field) for n in numbers]
            starts, ends = [r[0] for r in ranges], [r[1] for r in ranges]
        counts = [0] * len(texts)
        for variant in variants:
            needle = itertools.repeat(variant)
            in_range = map(str.count, texts, needle, starts, ends)
            if field is None:
                # The range is the title: add the fields bare words search once more.
                in_any = map(str.count, texts, needle, itertools.repeat(0), any_ends)
                in_range = (_TITLE_EXTRA * t + a for t, a in zip(in_range, in_any))
            counts = [c + f for c, f in zip(counts, in_range)]
        return counts


class _Levels:
    """One count of every paper (upvotes, stars, comments) as nested bitsets, for comparisons.

    ``masks[i]`` holds the papers whose count is at least ``-keys[i]`` (keys
    ascending, so counts descending and masks growing). A paper whose count is
    unknown (None: stars without a repository) is in no mask and matches no comparison.
    """

    __slots__ = ("keys", "masks", "known")

    def __init__(self, counts: Sequence[int | None]) -> None:
        self.keys: list[int] = []
        self.masks: list[int] = []
        mask = 0
        known = [n for n, c in enumerate(counts) if c is not None]
        for count, group in itertools.groupby(sorted(known, key=lambda n: -counts[n]), key=counts.__getitem__):
            mask |= _bits_from_positions(list(group))
            self.keys.append(-count)
            self.masks.append(mask)
        self.known = mask

    def at_least(self, value: int) -> int:
        level = bisect_right(self.keys, -value) - 1
        return self.masks[level] if level >= 0 else 0

    def compare(self, operator: str, value: int) -> int:
        if operator == ">=":
            return self.at_least(value)
        if operator == ">":
            return self.at_least(value + 1)
        if operator == "<=":
            return self.known & ~self.at_least(value + 1)
        if operator == "<":
            return self.known & ~self.at_least(value)
        assert operator == "=", operator
        return self.at_least(value) & ~self.at_least(value + 1)


class _FieldPostings:
    """For one field, the papers holding each stem.

    Common stems map to a bitset in ``dense``; rare ones to a slice of the
    shared ``positions`` array, packed as start << 24 | count in ``sparse``.
    """

    __slots__ = ("dense", "sparse", "positions")

    def __init__(self, holders: dict[str, array[int]], typecode: str) -> None:
        self.dense: dict[str, int] = {}
        self.sparse: dict[str, int] = {}
        self.positions = array(typecode)
        while holders:
            stem, numbers = holders.popitem()
            if numbers[-1] // 8 + 1 <= _DENSE_RATIO * numbers.itemsize * len(numbers):
                self.dense[stem] = _bits_from_positions(numbers)
            else:
                self.sparse[stem] = len(self.positions) << 24 | len(numbers)
                self.positions.extend(numbers)

    def bits(self, stem: str) -> int:
        found = self.dense.get(stem)
        if found is not None:
            return found
        packed = self.sparse.get(stem)
        if packed is None:
            return 0
        start = packed >> 24
        return _bits_from_positions(self.positions[start : start + (packed & 0xFFFFFF)])


def _cutoff(concept: Concept) -> float:
    """How near a paper must be to match ``concept``, in standard deviations above the window's mean."""
    return DEFAULT_MIN_ZSCORE if concept.min_score is None else concept.min_score


class _Search:
    """One query evaluated within a scope, remembering each node's bitsets.

    ``bounds`` gives two bitsets per node, surely-matching and maybe-matching:
    they differ only where a phrase's stems are present but their order is not
    yet checked. ``holds`` settles one paper exactly.
    """

    def __init__(self, index: PaperIndex, scope: int) -> None:
        self.index = index
        self.scope = scope
        self._bounds: dict[int, tuple[int, int]] = {}
        self._variants: dict[int, tuple[str, ...]] = {}
        self._digits: dict[int, tuple[str, str]] = {}
        self._concept_scores: dict[str, np.ndarray] = {}

    def concept_scores(self, concept: Concept) -> np.ndarray:
        """The papers' closeness to ``concept``, computed once per search."""
        if concept.text not in self._concept_scores:
            self._concept_scores[concept.text] = self.index.concept_scores(concept)
        return self._concept_scores[concept.text]

    def newest(self, root: Node | None, limit: int) -> list[int]:
        """Return the numbers of the ``limit`` newest matches, checking phrases only as needed."""
        sure, maybe = self.bounds(root)
        if sure == maybe:
            return list(itertools.islice(_positions(maybe), limit))
        found = []
        for number in _positions(maybe):
            if self.holds(root, number):
                found.append(number)
                if len(found) == limit:
                    break
        return found

    def matches(self, root: Node | None) -> int:
        """Return every match as a bitset."""
        sure, maybe = self.bounds(root)
        if sure == maybe:
            return sure
        unsure = _positions(maybe & ~sure)
        if isinstance(root, Phrase):
            # A lone phrase, the common case: skip the per-node bookkeeping.
            confirmed = self.index.with_phrase(unsure, self._variants[id(root)], root.field)
        else:
            confirmed = [n for n in unsure if self.holds(root, n)]
        return sure | _bits_from_positions(confirmed)

    def bounds(self, node: Node | None) -> tuple[int, int]:
        if node is None:
            return self.scope, self.scope
        key = id(node)
        if key not in self._bounds:
            self._bounds[key] = self._compute_bounds(node)
        return self._bounds[key]

    def _compute_bounds(self, node: Node) -> tuple[int, int]:
        if isinstance(node, Term):
            found = self.index.postings(node.stem, node.field) & self.scope
            return found, found
        if isinstance(node, Concept):
            found = _bits_from_mask(self.concept_scores(node) >= _cutoff(node)) & self.scope
            return found, found
        if isinstance(node, Phrase):
            self._variants[id(node)] = variants = self.index.phrase_variants(node.stems)
            if not variants:
                return 0, 0
            return 0, self.scope & _all_of(self.index.postings(s, node.field) for s in set(node.stems))
        if isinstance(node, Has):
            found = self.index.has(node.what) & self.scope
            return found, found
        if isinstance(node, Compare):
            found = self.index.compare(node.count, node.operator, node.value) & self.scope
            return found, found
        if isinstance(node, Not):
            sure, maybe = self.bounds(node.operand)
            return self.scope & ~maybe, self.scope & ~sure
        pairs = [self.bounds(op) for op in node.operands]
        if isinstance(node, And):
            return self.scope & _all_of(s for s, _ in pairs), self.scope & _all_of(m for _, m in pairs)
        assert isinstance(node, Or)
        return _any_of(s for s, _ in pairs), _any_of(m for _, m in pairs)

    def holds(self, node: Node, number: int) -> bool:
        """Tell exactly whether paper ``number`` matches ``node`` (bounds computed first)."""
        key = id(node)
        if key not in self._digits:
            sure, maybe = self._bounds[key]
            # Reading one bit of a 10,000-bit int costs a shift of all of it;
            # a digit string costs one conversion, then each read is O(1).
            self._digits[key] = _digits(sure), _digits(maybe)
        sure_digits, maybe_digits = self._digits[key]
        if number >= len(maybe_digits) or maybe_digits[number] == "0":
            return False
        if number < len(sure_digits) and sure_digits[number] == "1":
            return True
        if isinstance(node, Phrase):
            return self.index.has_phrase(number, self._variants[key], node.field)
        if isinstance(node, Not):
            return not self.holds(node.operand, number)
        if isinstance(node, And):
            return all(self.holds(op, number) for op in node.operands)
        assert isinstance(node, Or)
        return any(self.holds(op, number) for op in node.operands)


# The fields of a paper whose strings recur across papers: an author of 10 papers, "large language
# models" as a keyword of 300, an organisation's name. Pickling keeps one object shared, so the
# worker that loads the index holds each once: on the 9,877 papers of the benchmark, 10.6 MB of
# such strings become 4.1 MB.
_SHARED_STRING_FIELDS = ("ai_summary", "organization", "organization_name", "organization_id", "submitter")
_SHARED_TUPLE_FIELDS = ("authors", "ai_keywords", "author_users")


def _sharing_strings(papers: Iterable[Paper]) -> tuple[Paper, ...]:
    """The papers, with each recurring name, keyword and organisation one string object for all of them."""
    known: dict[str, str] = {}
    one = known.setdefault
    shared = []
    for paper in papers:
        changes = {name: one(value, value) for name in _SHARED_STRING_FIELDS if (value := getattr(paper, name))}
        for name in _SHARED_TUPLE_FIELDS:
            if values := getattr(paper, name):
                changes[name] = tuple(one(value, value) for value in values)
        shared.append(replace(paper, **changes))
    return tuple(shared)


def concept_text(paper: Paper) -> str:
    """What a paper's meaning is taken from: its title, abstract and AI keywords."""
    return "\n".join([paper.title, paper.abstract, ", ".join(paper.ai_keywords)])


def _bits_from_mask(mask: np.ndarray) -> int:
    """A bitset of the True rows of a boolean array (bit i for row i)."""
    return int.from_bytes(np.packbits(mask, bitorder="little").tobytes(), "little")


def _field_texts(paper: Paper) -> tuple[Sequence[str], ...]:
    """Return the searchable texts of ``paper`` in ``_LAYOUT`` order.

    author: holds the names and the Hugging Face user names; org: the organisation's name, display
    name and id.
    """
    organization = tuple(dict.fromkeys(t for t in (paper.organization_name, paper.organization,
                                                   paper.organization_id) if t))
    return ((paper.title,), (paper.abstract,), paper.ai_keywords, paper.authors + paper.author_users, organization,
            (paper.submitter,) if paper.submitter else ())


def trending_score(upvotes: int, hours_listed: float) -> float:
    """sort=trending: upvotes per hour since the paper was listed, counting at least TRENDING_MIN_HOURS."""
    return upvotes / max(hours_listed, TRENDING_MIN_HOURS)


def hours_between(earlier: datetime, later: datetime) -> float:
    """Hours from ``earlier`` to ``later``, computed as the index computes them (whole microseconds)."""
    return (_micros(later) - _micros(earlier)) / _MICROS_PER_HOUR


def _stem_char(number: int) -> str:
    """Return the character of the ``number``th stem (from 1), skipping surrogates."""
    code = number if number < 0xD800 else number + 0x800
    if code >= _LAST_STEM_CODE:
        raise InvalidValue("too many distinct words to index")
    return chr(code)


def _joined_char(number: int) -> str:
    """Return the character of the ``number``th joined stem (from 1), from the top down."""
    code = 0x110000 - number
    if code <= _LAST_STEM_CODE:
        raise InvalidValue("too many distinct compounds to index")
    return chr(code)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _bits_from_positions(positions: Sequence[int]) -> int:
    """Return the bitset with the given bits set."""
    if not positions:
        return 0
    flags = bytearray(max(positions) + 1)
    for position in positions:
        flags[position] = 1
    # One byte per bit, then read as a binary numeral: linear and in C.
    return int(flags.translate(_BIT_DIGITS)[::-1], 2)


def _digits(bits: int) -> str:
    """Return the binary digits of ``bits``, lowest first, so digit i is bit i."""
    return bin(bits)[:1:-1]


def _positions(bits: int) -> Iterator[int]:
    """Yield the set bits of ``bits``, lowest first."""
    digits = _digits(bits)
    position = digits.find("1")
    while position >= 0:
        yield position
        position = digits.find("1", position + 1)


def _position_array(bits: int) -> np.ndarray:
    """The set bits of ``bits`` (not negative), lowest first, as an array: what ``_positions`` yields,
    without a Python step per bit (a similar= feed's 1,600 matches took 1.2 ms that way)."""
    raw = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    return np.flatnonzero(np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little"))


def _all_of(bitsets: Iterable[int]) -> int:
    result = -1
    for bits in bitsets:
        result &= bits
    return result


def _any_of(bitsets: Iterable[int]) -> int:
    result = 0
    for bits in bitsets:
        result |= bits
    return result
