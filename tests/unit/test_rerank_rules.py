"""Rerank and score logic without a server: pairing rules, ranking, cosine, the request models' checks."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from frontend.protocol.rerank import RerankRequest, ScoreRequest
from frontend.services.rerank import cosine, ranked


@pytest.mark.parametrize("text_1, text_2, pairs", [
    ("q", "d", [(0, 0)]),  # 1:1
    (["q"], ["d"], [(0, 0)]),
    ("q", ["a", "b", "c"], [(0, 0), (0, 1), (0, 2)]),  # 1:N: the one text_1 against each of text_2
    (["q"], ["a", "b"], [(0, 0), (0, 1)]),
    (["x", "y", "z"], ["a", "b", "c"], [(0, 0), (1, 1), (2, 2)]),  # N:N, element by element
])
def test_score_pairing(text_1, text_2, pairs):
    request = ScoreRequest(model="m", text_1=text_1, text_2=text_2)
    assert request.pairs == pairs
    assert request.firsts == ([text_1] if isinstance(text_1, str) else text_1)
    assert request.seconds == ([text_2] if isinstance(text_2, str) else text_2)


@pytest.mark.parametrize("text_1, text_2", [
    (["x", "y"], ["a", "b", "c"]),  # N:M
    (["x", "y"], "a"),  # N:1 (vLLM refuses it too: text_1 broadcasts, text_2 does not)
    ([], ["a"]),
    ("x", []),
])
def test_score_refuses_pairings_it_cannot_make(text_1, text_2):
    with pytest.raises(ValidationError):
        ScoreRequest(model="m", text_1=text_1, text_2=text_2)


def test_rerank_documents_as_strings_or_objects():
    request = RerankRequest(model="m", query="q", documents=["a", {"text": "b"}])
    assert request.texts == ["a", "b"]
    assert request.top_n is None and request.return_documents is True
    for bad in ({"documents": []}, {"query": " "}, {"top_n": 0}, {"documents": [{"text": "a", "image": "b"}]},
                {"max_tokens_per_doc": 10}, {"truncate_prompt_tokens": 0}):
        with pytest.raises(ValidationError):
            RerankRequest(**{"model": "m", "query": "q", "documents": ["a"], **bad})


def test_ranked_sorts_by_score_keeping_ties_in_input_order():
    scores = np.array([0.1, 0.9, 0.5, 0.9, -0.3])
    assert ranked(scores) == [1, 3, 2, 0, 4]
    assert ranked(scores, 2) == [1, 3]
    assert ranked(scores, 99) == [1, 3, 2, 0, 4]
    assert ranked(np.array([]), 3) == []


def test_cosine_is_rowwise_and_scale_free():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((4, 8)).astype(np.float32)
    expected = [float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a.astype(float), b.astype(float))]
    np.testing.assert_allclose(cosine(a, b), expected, rtol=1e-12)
    np.testing.assert_allclose(cosine(a.astype(np.float64) * 7, b), expected, rtol=1e-12)  # unnormalised vectors score the same
    assert cosine(np.zeros((1, 3)), np.ones((1, 3)))[0] == 0.0  # no division by zero
