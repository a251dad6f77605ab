"""Concept search over the real fixture papers, with the network shut: feedproxy.semantic."""

from __future__ import annotations

import gzip
import json
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from feedproxy.search import concepts as semantic
from feedproxy.search.concepts import ConceptIndex, ModelMismatch, ConceptsUnavailable, reciprocal_rank_fusion

DAILY = Path(__file__).parent / "fixtures" / "daily_papers"
ITEMS = [item for path in sorted(DAILY.glob("*.json")) for item in json.loads(path.read_text(encoding="utf-8"))]
ROW = {item["paper"]["id"]: row for row, item in enumerate(ITEMS)}


def paper_text(item: dict) -> str:
    """What the caller would embed: title, abstract and keywords."""
    paper = item["paper"]
    return "\n".join([paper["title"], paper["summary"], ", ".join(paper.get("ai_keywords") or [])])


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"semantic tried to reach the network: {args!r}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def model():
    return semantic.load_model()


@pytest.fixture(scope="module")
def index(model):
    return ConceptIndex.build([paper_text(item) for item in ITEMS], model)


def test_the_model_loads_from_the_wheel_without_the_network(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # and not from a cache in the home folder
    model = semantic.load_model()
    vectors = model.embed(["mixture of experts", ""])
    assert vectors.shape == (2, semantic.MODEL_DIM) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert not vectors[1].any()  # an empty text is a zero row, not NaN
    assert model.fingerprint.startswith("l2_supercat-256-")
    assert not list(tmp_path.iterdir())  # nothing was cached


def test_our_vectors_are_wordllamas_own(model):
    """We read the wheel's files and average token vectors ourselves: the same vectors WordLlama gives."""
    import wordllama

    theirs = wordllama.WordLlama.load(semantic.MODEL_CONFIG, dim=semantic.MODEL_DIM,
                                      cache_dir=semantic._package_dir(), disable_download=True)
    texts = [paper_text(item) for item in ITEMS[:12]] + ["LLMs", "a" * 5000]
    expected = theirs.embed(texts, norm=True)
    assert np.allclose(model.embed(texts), expected, atol=1e-5)


def test_opening_the_model_imports_no_wordllama_code_and_leaves_logging_alone():
    code = ("import logging, sys; from feedproxy.search import concepts; concepts.load_model(); "
            "print('wordllama' in sys.modules, logging.getLogger().handlers)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False []"


def test_the_table_is_memory_mapped_not_copied(model):
    assert isinstance(model.table, np.memmap) and model.table.dtype == np.float16


@pytest.mark.parametrize(("query", "paper_id"), [
    ("training without a learning rate schedule", "2405.15682"),  # The Road Less Scheduled
    ("fixing transcription mistakes made by speech recognizers", "2405.15216"),  # Denoising LM
    ("language models that cover many human languages", "2405.15032"),  # Aya 23
    ("detecting when a robot policy is about to fail", "2506.09937"),  # SAFE
])
def test_a_paraphrase_finds_its_paper_first(index, query, paper_id):
    (row, similarity), *_ = index.nearest(query, k=3, min_similarity=-1)
    assert ITEMS[row]["paper"]["id"] == paper_id
    assert 0 < similarity <= 1


def test_nearest_is_sorted_and_honours_k_and_the_floor(index):
    ranked = index.nearest("video generation", k=5, min_similarity=-1)
    scores = [similarity for _, similarity in ranked]
    assert len(ranked) == 5 and scores == sorted(scores, reverse=True)
    assert index.nearest("video generation", k=5, min_similarity=1.01) == []
    above = index.nearest("video generation", k=len(ITEMS), min_similarity=scores[2])
    assert [row for row, _ in above] == [row for row, _ in ranked[:3]]


def test_similarity_scores_every_row_for_fusion(index):
    scores = index.similarity("video generation")
    assert scores.shape == (len(ITEMS),)
    row, similarity = index.nearest("video generation", k=1, min_similarity=-1)[0]
    assert scores[row] == pytest.approx(similarity) and scores.max() == pytest.approx(similarity)


def test_zscores_standardise_over_a_large_index(index, monkeypatch):
    monkeypatch.setattr(semantic, "OWN_SPREAD_FROM", len(ITEMS))  # this index counts as large
    query = "training without a learning rate schedule"
    zscores = index.zscores(query)
    assert zscores.mean() == pytest.approx(0.0, abs=1e-5) and zscores.std() == pytest.approx(1.0, abs=1e-4)
    assert zscores.argmax() == ROW["2405.15682"]  # The Road Less Scheduled, as nearest() finds
    assert zscores.max() > semantic.DEFAULT_MIN_ZSCORE


def test_zscores_of_identical_papers_are_zero(model, monkeypatch):
    monkeypatch.setattr(semantic, "OWN_SPREAD_FROM", 3)
    index = ConceptIndex.build(["the same abstract"] * 3, model)
    assert index.zscores("anything").tolist() == [0.0, 0.0, 0.0]


def test_a_small_index_measures_against_the_corpus_spread(model):
    """Over 3 papers no z-score can pass sqrt(2) < DEFAULT_MIN_ZSCORE by the index's own spread: the
    corpus's says how far each stands out among Daily Papers, the same whatever else the feed holds."""
    texts = [paper_text(ITEMS[ROW[i]]) for i in ("2405.15682", "2506.09113", "2405.15032")]
    small = ConceptIndex.build(texts, model)
    query = "training without a learning rate schedule"
    zscores = small.zscores(query)
    assert zscores[0] > semantic.DEFAULT_MIN_ZSCORE > zscores[1:].max()
    mean, covariance = semantic.corpus_spread(model.fingerprint)
    vector = model.embed([query])[0]
    expected = (small.embeddings @ vector - vector @ mean) / np.sqrt(vector @ covariance @ vector)
    assert zscores == pytest.approx(expected, abs=1e-4)
    # The same papers among others score the same.
    other = ConceptIndex.build(texts + [paper_text(ITEMS[ROW["2608.19758"]])], model)
    assert other.zscores(query)[:3] == pytest.approx(zscores, abs=1e-5)


def test_the_corpus_spread_is_of_the_installed_model_and_agrees_with_a_large_index(model, monkeypatch):
    """concept_reference.npz was made by this model (else small indexes fall back to their own spread),
    from papers like those of a real window: over the 658 papers of the relevance set (a sample of the
    same corpus) the index's own z-scores and the corpus's nearly agree."""
    assert semantic.corpus_spread(model.fingerprint) is not None
    assert semantic.corpus_spread("another-model") is None
    relevance = Path(__file__).parent / "fixtures" / "relevance" / "papers.json.gz"
    texts = [paper_text(item) for item in json.loads(gzip.decompress(relevance.read_bytes()))]
    large = ConceptIndex.build(texts, model)
    assert len(large) >= semantic.OWN_SPREAD_FROM
    for query in ("reinforcement learning for reasoning", "video generation", "robot manipulation"):
        own = large.zscores(query)
        monkeypatch.setattr(semantic, "OWN_SPREAD_FROM", len(large) + 1)
        by_corpus = large.zscores(query)
        monkeypatch.undo()
        assert np.corrcoef(own, by_corpus)[0, 1] > 0.999
        assert np.abs(own - by_corpus).max() < 0.5, (query, np.abs(own - by_corpus).max())


@pytest.mark.parametrize("paper_id", ["2405.15682", "2506.09113", "2608.19758"])
def test_similar_to_gives_the_paper_itself_first(index, paper_id):
    ranked = index.similar_to(ROW[paper_id], k=4)
    assert ranked[0] == (ROW[paper_id], 1.0)
    assert len(ranked) > 1 and all(similarity < 1.0 for _, similarity in ranked[1:])


def test_similar_to_finds_a_related_paper():
    # Two papers on generating video from the same day: Seedance and adversarial post-training.
    index = ConceptIndex.build([paper_text(item) for item in ITEMS])
    neighbours = [ITEMS[row]["paper"]["id"] for row, _ in index.similar_to(ROW["2506.09113"], k=4)]
    assert "2506.09350" in neighbours


def test_a_pickled_index_is_small_and_answers_the_same(index):
    data = pickle.dumps(index)
    assert len(data) < index.nbytes + 1_000  # the embeddings, not the 16 MB model
    copy = pickle.loads(data)
    assert copy.fingerprint == index.fingerprint
    assert copy.nearest("sparse attention", k=3) == index.nearest("sparse attention", k=3)


def test_save_and_load_keep_the_embeddings_and_the_fingerprint(index, model, tmp_path):
    path = tmp_path / "concepts.npz"
    index.save(path)
    loaded = ConceptIndex.load(path, model)
    assert np.array_equal(loaded.embeddings, index.embeddings) and loaded.embeddings.dtype == np.float32
    assert loaded.fingerprint == model.fingerprint
    assert loaded.nearest("world model", k=2) == index.nearest("world model", k=2)


def test_embeddings_of_another_model_are_refused(index, model, tmp_path):
    path = tmp_path / "concepts.npz"
    ConceptIndex(index.embeddings, "l2_supercat-256-0000000000000000").save(path)
    with pytest.raises(ModelMismatch, match="embeddings were made by model l2_supercat-256-0000000000000000 but"):
        ConceptIndex.load(path, model)
    assert issubclass(ModelMismatch, ConceptsUnavailable)


def test_a_missing_model_file_is_unavailable_with_the_reason(no_network, tmp_path, monkeypatch):
    monkeypatch.setattr(semantic, "_package_dir", lambda: tmp_path)
    with pytest.raises(ConceptsUnavailable, match=r"model file .*l2_supercat_256\.safetensors is missing"):
        semantic.load_model()


def test_a_loader_failure_is_unavailable_with_the_reason(no_network, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("truncated safetensors header")

    monkeypatch.setattr(semantic, "_map_tensor", broken)
    with pytest.raises(ConceptsUnavailable, match="did not load .*truncated safetensors header"):
        semantic.load_model()


def test_missing_wordllama_is_unavailable_with_the_reason(monkeypatch):
    real = semantic.importlib.util.find_spec
    monkeypatch.setattr(semantic.importlib.util, "find_spec", lambda name: None if name == "wordllama" else real(name))
    with pytest.raises(ConceptsUnavailable, match="wordllama is not installed"):
        semantic.load_model()


@pytest.mark.parametrize(("rankings", "k", "fused"), [
    ([[1, 2, 3]], 60, [1, 2, 3]),  # one ranking is kept as it is
    ([[1, 2, 3], [3, 2, 1]], 60, [1, 3, 2]),  # 1/61 + 1/63 > 2/62; 1 and 3 tie: 1 was seen first
    ([[1, 2], [3, 1]], 60, [1, 3, 2]),  # an item in both rankings beats one ranked first once
    ([[7], [], [8, 7]], 60, [7, 8]),  # a missing item gets nothing from that ranking
    ([[5, 5, 6], [6, 5]], 60, [5, 6]),  # only an item's first place in a ranking counts
    ([[1, 2, 3, 4], [4, 3, 2, 1], [4, 1, 2, 3]], 1, [4, 1, 2, 3]),  # a small k trusts the top places
    ([], 60, []),
])
def test_reciprocal_rank_fusion(rankings, k, fused):
    assert reciprocal_rank_fusion(rankings, k=k) == fused


def test_reciprocal_rank_fusion_scores_are_the_standard_ones():
    fused = reciprocal_rank_fusion([[10, 20, 30], [20, 30], [30, 10, 20]])
    # 10: 1/61 + 1/62 = .03252; 20: 1/62 + 1/61 + 1/63 and 30: 1/63 + 1/62 + 1/61 = .04839 exactly
    # alike, whatever the order of summing: the tie goes to 20, seen first.
    assert fused == [20, 30, 10]


def test_reciprocal_rank_fusion_needs_a_positive_k():
    with pytest.raises(ValueError, match="k must be positive"):
        reciprocal_rank_fusion([[1]], k=0)
