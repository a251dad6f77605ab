"""Concept search: find the papers nearest in meaning to a query, with WordLlama embeddings.

Pure and self-contained: it knows nothing of Flask, snapshots or the query language, and
imports only the standard library, numpy and (lazily) the ``tokenizers`` library. The caller
joins each paper's text (title, abstract, keywords) and keeps the order: papers are rows 0..n-1.

The model is WordLlama's "l2_supercat" at 256 dimensions: a 32,000 x 256 table of token vectors
(16 MB of float16) and a tokenizer, both shipped inside the ``wordllama`` wheel. WordLlama's own
inference is a lookup and an average: tokenize without special tokens, take each token's row,
average them. We do exactly that here, reading the wheel's files directly, so that:

- nothing is downloaded, ever (wordllama's loader would fetch a missing tokenizer from the Hub);
- the table is memory-mapped from the wheel's safetensors file, not copied: a worker embedding
  a query touches only the rows of its tokens, and every process shares the pages (importing
  and loading wordllama itself costs a worker about 90 MB);
- wordllama's own code is not imported (it also reconfigures the root logger at import).

tests/test_semantic.py checks that our vectors equal WordLlama's own.

Errors (in feedproxy.errors): ConceptsUnavailable, the model cannot be loaded (the message
says why); ModelMismatch, saved embeddings were made by another model (rebuild them).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from feedproxy.errors import ConceptsUnavailable, InvalidValue, ModelMismatch
from feedproxy.heap import release_free_memory

MODEL_CONFIG = "l2_supercat"
MODEL_DIM = 256
WEIGHTS_FILE = Path("weights") / f"{MODEL_CONFIG}_{MODEL_DIM}.safetensors"
TOKENIZER_FILE = Path("tokenizers") / f"{MODEL_CONFIG}_tokenizer_config.json"
TENSOR_KEY = "embedding.weight"
_SAFETENSOR_TYPES = {"F16": np.float16, "F32": np.float32}

# A paper is "about" a concept when its similarity stands this many standard deviations above
# the mean over the index (zscores). Raw cosines are not comparable across queries: the mean
# similarity of a descriptive query to all papers ranges from 0.17 to 0.38 on the benchmark
# corpus. At 2.0 about 2-3% of a snapshot matches (200-350 of 9,877 papers per topic), the size of
# a topic there; see tests/fixtures/relevance/README.md for how it was chosen and what it costs:
# a blind sample judged 7-63% of those matches relevant per topic (keyword matches: 23-87%), so
# use it to rank, or to widen a keyword query, rather than alone as a filter.
DEFAULT_MIN_ZSCORE = 2.0

# An index of fewer papers measures similarities against the benchmark corpus's spread (its mean
# embedding and covariance, in REFERENCE_FILE) instead of its own: over n papers none can stand
# more than sqrt(n - 1) deviations above their mean, so a blog of 5 posts could never match, and
# a few dozen give a mean and deviation too noisy for one cut-off. bench/concept_reference.py
# writes the file.
OWN_SPREAD_FROM = 500
REFERENCE_FILE = Path(__file__).with_name("concept_reference.npz")


class ConceptModel:
    """WordLlama's token table (memory-mapped) and tokenizer, and a fingerprint naming them."""

    def __init__(self, table: np.ndarray, tokenizer, fingerprint: str):
        self.table = table
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as rows of unit length (float32): the average of their tokens' vectors.

        An empty text (no tokens) gives a zero row.
        """
        texts = list(texts)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        last = self.table.shape[0] - 1
        if len(texts) == 1:  # a query: encode_batch would hand it to the tokenizer's thread pool and wait
            encodings = [self.tokenizer.encode(texts[0], add_special_tokens=False)]
        else:
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        for row, encoding in enumerate(encodings):
            ids = np.asarray(encoding.ids, dtype=np.intp)
            if ids.size:
                np.clip(ids, 0, last, out=ids)
                vectors[row] = self.table[ids].astype(np.float32).sum(axis=0) / np.float32(ids.size)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.maximum(norms, np.finfo(np.float32).tiny, out=norms)
        return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def load_model() -> ConceptModel:
    """Open the model in the installed wordllama wheel, never downloading; or raise ConceptsUnavailable."""
    folder = _package_dir()
    fingerprint = _files_fingerprint(folder)  # ConceptsUnavailable when a file is missing
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        table = _map_tensor(folder / WEIGHTS_FILE, TENSOR_KEY)
    except Exception as error:  # noqa: BLE001 - any failure means the same to the caller
        raise ConceptsUnavailable(f"concepts: the WordLlama model did not load from {folder}: {error}") from error
    if table.ndim != 2 or table.shape[1] != MODEL_DIM:
        raise ConceptsUnavailable(f"concepts: {folder / WEIGHTS_FILE} holds a {table.shape} table, not (n, {MODEL_DIM})")
    return ConceptModel(table, tokenizer, fingerprint)


# Why the last attempt to open the model in this process failed (a later concept query tries again).
_load_failures: list[str] = []


@functools.cache
def shared_model() -> ConceptModel:
    """The model opened once per process; an index that lost its model (unpickled) uses it."""
    try:
        model = load_model()
    except ConceptsUnavailable as exc:
        _load_failures[:] = [str(exc)]
        raise
    _load_failures.clear()
    release_free_memory()  # reading the tokenizer's JSON leaves about 6 MB of freed heap
    return model


def model_problem(fingerprint: str) -> str | None:
    """Why embeddings made by model ``fingerprint`` cannot be searched in this process, or None.

    Opens no model (a worker loads it on its first concept query, which /healthz must not be): the
    model in use, else the last failure to open it, else the installed wheel's files and fingerprint.
    """
    if shared_model.cache_info().currsize:
        installed = shared_model().fingerprint
    elif _load_failures:
        return _load_failures[0]
    else:
        try:
            installed = _installed_fingerprint()
        except ConceptsUnavailable as exc:
            return str(exc)
    if installed != fingerprint:
        return _mismatch(fingerprint, installed)
    return None


@functools.cache
def _installed_fingerprint() -> str:
    return _files_fingerprint(_package_dir())


def _files_fingerprint(folder: Path) -> str:
    for name in (WEIGHTS_FILE, TOKENIZER_FILE):
        if not (folder / name).is_file():
            raise ConceptsUnavailable(
                f"concepts: model file {folder / name} is missing; reinstall wordllama "
                f"({_version()} is installed) from its wheel")
    return _fingerprint(folder, _version())


def _package_dir() -> Path:
    """The folder of the installed wordllama package (found, not imported)."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise ConceptsUnavailable("concepts: wordllama is not installed (pip install wordllama)")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _version() -> str:
    try:
        return importlib.metadata.version("wordllama")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _map_tensor(path: Path, key: str) -> np.ndarray:
    """Memory-map one tensor of a safetensors file (8-byte header length, JSON header, raw data)."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    entry = header[key]
    start, end = entry["data_offsets"]
    dtype = np.dtype(_SAFETENSOR_TYPES[entry["dtype"]]).newbyteorder("<")
    shape = tuple(entry["shape"])
    if end - start != dtype.itemsize * math.prod(shape):
        raise InvalidValue(f"tensor {key!r} is {end - start} bytes, not {shape} of {dtype}")
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + length + start, shape=shape)


def _fingerprint(folder: Path, version: str) -> str:
    """Name the model by its files' bytes and wordllama's version."""
    digest = hashlib.sha256(f"wordllama {version} {MODEL_CONFIG} {MODEL_DIM}\n".encode())
    for name in (WEIGHTS_FILE, TOKENIZER_FILE):
        with (folder / name).open("rb") as handle:  # in pieces: 16 MB read at once would stay in the heap
            for piece in iter(lambda: handle.read(1 << 20), b""):
                digest.update(piece)
    return f"{MODEL_CONFIG}-{MODEL_DIM}-{digest.hexdigest()[:16]}"


def _mismatch(made_by: str, installed: str) -> str:
    return (f"concepts: embeddings were made by model {made_by} but {installed} is installed; "
            "they are rebuilt when new papers arrive, or at once if you delete index-*.pickle in the "
            "source's data folder and restart")


class ConceptIndex:
    """One unit-length embedding per paper (a float32 array, row i = paper i), and queries over it.

    Similarities are cosines in [-1, 1]. Pickling keeps only the embeddings and the model's
    fingerprint (about 1 KB per paper); the model is re-attached from ``shared_model()`` on
    first use, and a different model raises ModelMismatch.
    """

    def __init__(self, embeddings: np.ndarray, fingerprint: str, model: ConceptModel | None = None):
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise InvalidValue(f"embeddings must be 2-D (papers x dimensions), not {embeddings.shape}")
        self.embeddings = embeddings
        self.fingerprint = fingerprint
        self._model = None
        if model is not None:
            self.attach(model)

    @classmethod
    def build(cls, texts: Sequence[str], model: ConceptModel | None = None) -> ConceptIndex:
        """Embed one text per paper, in the caller's order."""
        model = model or shared_model()
        return cls(model.embed(texts), model.fingerprint, model)

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def nbytes(self) -> int:
        return self.embeddings.nbytes

    @property
    def model(self) -> ConceptModel:
        if self._model is None:
            self.attach(shared_model())
        return self._model

    def attach(self, model: ConceptModel) -> None:
        """Use this model for queries; it must be the one that made the embeddings."""
        if model.fingerprint != self.fingerprint:
            raise ModelMismatch(_mismatch(self.fingerprint, model.fingerprint))
        self._model = model

    def similarity(self, query_text: str) -> np.ndarray:
        """The cosine similarity of the query to every paper, one float32 per row."""
        query = self.model.embed([query_text])[0]
        return self.embeddings @ query

    def zscores(self, query_text: str) -> np.ndarray:
        """Each paper's similarity in standard deviations above the mean over this index (over the
        benchmark corpus for an index of fewer than OWN_SPREAD_FROM papers).

        Comparable across queries, unlike raw cosines, so one cut-off (DEFAULT_MIN_ZSCORE) serves
        every query.
        """
        return self._zscores(self.model.embed([query_text])[0])

    def zscores_of_row(self, row: int) -> np.ndarray:
        """``zscores`` of the text that made row ``row``, from its saved embedding (no model needed)."""
        return self._zscores(self.embeddings[row])

    def _zscores(self, query: np.ndarray) -> np.ndarray:
        scores = self.embeddings @ query
        reference = corpus_spread(self.fingerprint) if len(self) < OWN_SPREAD_FROM else None
        if reference is None:
            return _zscores(scores)
        mean, covariance = reference
        spread = math.sqrt(max(float(query @ covariance @ query), 0.0))
        if spread < 1e-6:
            return np.zeros_like(scores)
        return (scores - np.float32(query @ mean)) / np.float32(spread)

    def nearest(self, query_text: str, k: int = 10, min_similarity: float = 0.0) -> list[tuple[int, float]]:
        """The k papers most similar to the query, as (row, similarity), most similar first."""
        return _top(self.similarity(query_text), k, min_similarity)

    def similar_to(self, row: int, k: int = 10, min_similarity: float = 0.0) -> list[tuple[int, float]]:
        """The k papers most similar to paper ``row``; the paper itself comes first."""
        scores = self.embeddings @ self.embeddings[row]
        scores[row] = np.float32(1.0)  # not 0.99999994: its own row wins every tie
        return _top(scores, k, min_similarity)

    def save(self, path: str | Path) -> None:
        """Write the embeddings and the model's fingerprint to one .npz file (no pickle inside)."""
        with open(path, "wb") as out:  # a file object, so numpy does not append ".npz" to the name
            np.savez(out, embeddings=self.embeddings, fingerprint=np.array(self.fingerprint))

    @classmethod
    def load(cls, path: str | Path, model: ConceptModel | None = None) -> ConceptIndex:
        """Read what ``save`` wrote; with a model, check now that it made these embeddings."""
        with np.load(path, allow_pickle=False) as saved:
            index = cls(saved["embeddings"], str(saved["fingerprint"]))
        if model is not None:
            index.attach(model)
        return index

    def __getstate__(self) -> dict:
        return {"embeddings": self.embeddings, "fingerprint": self.fingerprint}

    def __setstate__(self, state: dict) -> None:
        self.embeddings = state["embeddings"]
        self.fingerprint = state["fingerprint"]
        self._model = None


@functools.cache
def corpus_spread(fingerprint: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The benchmark corpus's mean embedding and covariance (REFERENCE_FILE), if model ``fingerprint``
    made them; None otherwise (a small index then measures against its own papers)."""
    try:
        with np.load(REFERENCE_FILE, allow_pickle=False) as saved:
            if str(saved["fingerprint"]) != fingerprint:
                return None
            return saved["mean"].astype(np.float32), saved["covariance"].astype(np.float32)
    except (OSError, KeyError, ValueError):
        return None


def _zscores(scores: np.ndarray) -> np.ndarray:
    """Cosine similarities as standard deviations above their mean."""
    spread = scores.std()
    if spread < 1e-6:  # all papers alike: float32 rounding is not a signal
        return np.zeros_like(scores)
    return (scores - scores.mean()) / spread


def _top(scores: np.ndarray, k: int, min_similarity: float) -> list[tuple[int, float]]:
    """The k highest scores at or above min_similarity, as (row, score); ties go to the lower row."""
    rows = np.flatnonzero(scores >= min_similarity)
    if k <= 0 or rows.size == 0:
        return []
    if rows.size > k:
        # Keep every row tied with the k-th score, so the tie-break below sees all of them.
        kth = np.partition(scores[rows], rows.size - k)[rows.size - k]
        rows = rows[scores[rows] >= kth]
    order = np.lexsort((rows, -scores[rows]))[:k]
    return [(int(rows[i]), float(scores[rows[i]])) for i in order]


RRF_K = 60  # reciprocal rank fusion's constant (Cormack, Clarke and Buettcher)


def reciprocal_rank_fusion(rankings: list[list[int]], k: int = RRF_K) -> list[int]:
    """Merge rankings of the same items into one, by reciprocal rank fusion.

    Each item scores the sum, over the rankings that hold it, of 1 / (k + rank), with ranks
    counted from 1 (Cormack, Clarke and Buettcher, SIGIR 2009; k = 60 is their constant). An
    item missing from a ranking gets nothing from it, so items that several rankings agree on
    rise, and no ranking's raw scores need to be comparable with another's. Only an item's
    first place in a ranking counts. Equal scores keep the order in which items were first seen
    (ranking by ranking, best first). Scores are summed exactly rounded, so the result does not
    depend on the order of the rankings beyond that tie-break.
    """
    if k <= 0:
        raise InvalidValue(f"k must be positive, not {k}")
    shares: dict[int, list[float]] = {}
    for ranking in rankings:
        seen = set()
        for rank, item in enumerate(ranking, start=1):
            if item not in seen:
                seen.add(item)
                shares.setdefault(item, []).append(1.0 / (k + rank))
    scores = {item: math.fsum(parts) for item, parts in shares.items()}
    return sorted(scores, key=lambda item: -scores[item])
