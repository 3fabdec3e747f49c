"""Per-sequence sampling: greedy, top-k, top-p, temperature, seeds, penalties, logprobs."""

from __future__ import annotations

import numpy as np
import pytest

from triton_models.llm.params import InvalidRequest, SamplingParams
from triton_models.llm.sampler import BLOCK, Sampler, SamplingError, _cut, _index_at_fraction


def draws(params: SamplingParams, logits: np.ndarray, count: int = 400) -> list[int]:
    sampler = Sampler(params)
    return [sampler.sample(logits.copy())[0] for _ in range(count)]


def probs_logits(*probs: float) -> np.ndarray:
    return np.log(np.asarray(probs, np.float32))


def test_greedy_takes_the_argmax():
    logits = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    assert set(draws(SamplingParams(temperature=0), logits, 5)) == {1}
    assert set(draws(SamplingParams(temperature=1.0, top_k=1), logits, 5)) == {1}


def test_top_k_limits_the_candidates():
    logits = np.zeros(50, np.float32)
    logits[[3, 17, 42]] = 2.0
    assert set(draws(SamplingParams(top_k=3), logits)) == {3, 17, 42}


@pytest.mark.parametrize("top_p, allowed", [(0.7, {0, 1}), (0.9, {0, 1, 2}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_nucleus(top_p, allowed):
    logits = probs_logits(0.5, 0.3, 0.15, 0.05)
    assert set(draws(SamplingParams(top_p=top_p), logits, 1000)) == allowed


def test_top_p_over_a_large_flat_vocabulary_keeps_most_of_it():
    vocab = 4 * BLOCK + 100
    seen = set(draws(SamplingParams(top_p=0.5, seed=0), np.zeros(vocab, np.float32), 6000))
    assert len(seen) > BLOCK and max(seen) >= 3 * BLOCK  # drawn from every block, not only the first


def test_top_p_over_a_large_peaked_vocabulary_stays_exact():
    logits = np.full(4 * BLOCK, -20.0, np.float32)
    logits[[5, 4000]] = [1.0, 0.0]  # 73% and 27% of the mass
    assert set(draws(SamplingParams(top_p=0.5), logits, 200)) == {5}
    assert set(draws(SamplingParams(top_p=0.99), logits, 400)) == {5, 4000}
    assert set(draws(SamplingParams(top_k=2), logits, 400)) == {5, 4000}


def test_cut_value_whether_or_not_the_likely_head_suffices():
    probs = np.full(20000, np.exp(-9.5), np.float32)  # a long tail, each below the head threshold
    probs[7], probs[8] = 1.0, np.exp(-16.0)
    assert _cut(probs, 1, 1.0) == 1.0  # top-1 from the head
    assert _cut(probs, 2, 1.0) == pytest.approx(np.exp(-9.5))  # the second best lies outside the head
    assert _cut(probs, 20000, 0.3) == 1.0  # the best token alone holds 40% of the mass
    assert _cut(probs, 20000, 0.9) == pytest.approx(np.exp(-9.5))  # the nucleus reaches into the tail
    assert _cut(probs, 5, 0.99999) == pytest.approx(np.exp(-9.5))  # all but 1e-5 of the top-5: tail tokens too
    assert _cut(probs, 5, 0.5) == 1.0  # the best holds nearly all of the top-5


def test_inverse_cdf_over_blocks():
    values = np.zeros(3 * BLOCK + 7, np.float32)
    values[[2, BLOCK + 1, 3 * BLOCK + 6]] = [1.0, 2.0, 1.0]  # cumulative 1, 3, 4 of 4
    assert _index_at_fraction(values, 0.0, strict=True) == 2
    assert _index_at_fraction(values, 0.25, strict=True) == BLOCK + 1  # exactly 1/4: the next token
    assert _index_at_fraction(values, 0.25, strict=False) == 2  # reaches 1/4
    assert _index_at_fraction(values, 0.8, strict=True) == 3 * BLOCK + 6
    assert _index_at_fraction(values, 0.9999999, strict=True) == 3 * BLOCK + 6
    assert _index_at_fraction(values, 1.0, strict=True) == 3 * BLOCK + 6  # rounding past the end


def test_sampling_follows_the_distribution_and_temperature():
    logits = probs_logits(0.8, 0.2)
    share = np.mean(np.asarray(draws(SamplingParams(seed=1), logits, 4000)) == 0)
    assert share == pytest.approx(0.8, abs=0.03)
    cold = np.mean(np.asarray(draws(SamplingParams(seed=1, temperature=0.25), logits, 4000)) == 0)
    assert cold > 0.98  # 0.8^4 / (0.8^4 + 0.2^4)


def test_same_seed_same_tokens_other_seed_other_tokens():
    logits = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    params = SamplingParams(seed=42, top_p=0.95)
    assert draws(params, logits, 50) == draws(params, logits, 50)
    assert draws(params, logits, 50) != draws(SamplingParams(seed=43, top_p=0.95), logits, 50)


def test_presence_and_frequency_penalties_count_generated_tokens():
    logits = np.array([0.0, 1.0, 0.6], np.float32)
    presence = Sampler(SamplingParams(temperature=0, presence_penalty=0.5))
    presence.observe(1)
    presence.observe(1)
    assert presence.sample(logits.copy())[0] == 2  # 1.0 - 0.5 < 0.6
    frequency = Sampler(SamplingParams(temperature=0, frequency_penalty=0.3))
    frequency.observe(1)
    assert frequency.sample(logits.copy())[0] == 1  # 1.0 - 0.3 > 0.6
    frequency.observe(1)
    assert frequency.sample(logits.copy())[0] == 2  # 1.0 - 0.6 < 0.6
    negative = Sampler(SamplingParams(temperature=0, presence_penalty=-1.0))
    negative.observe(0)
    assert negative.sample(logits.copy())[0] == 0


def test_logprobs_are_the_raw_distribution_with_ranks():
    logits = np.array([2.0, 0.5, 3.0, -1.0], np.float32)
    expected = logits - np.log(np.exp(logits).sum())
    sampler = Sampler(SamplingParams(temperature=0, logprobs=2, frequency_penalty=2.0))
    sampler.observe(2)  # the penalty changes the choice, not the reported logprobs
    token, info = sampler.sample(logits.copy())
    assert token == 0 and info.token_id == 0 and info.rank == 2
    assert info.logprob == pytest.approx(expected[0], abs=1e-5)
    assert [t for t, _ in info.top] == [2, 0]
    assert [lp for _, lp in info.top] == pytest.approx([expected[2], expected[0]], abs=1e-5)
    assert Sampler(SamplingParams()).sample(logits.copy())[1] is None
    peaked = np.array([-30.0, 0.0, -20.0], np.float32)  # one likely token; the second best is far below
    _, info = Sampler(SamplingParams(temperature=0, logprobs=2)).sample(peaked)
    assert [t for t, _ in info.top] == [1, 2] and info.rank == 1


@pytest.mark.parametrize("temperature", [1e-50, 1e-300, 5e-324, 9.9e-6])
@pytest.mark.parametrize("cut", [{"top_p": 0.5}, {"top_k": 5}, {"top_p": 0.9, "top_k": 40}, {}])
def test_temperatures_below_the_epsilon_are_greedy(temperature, cut):
    # vocabulary-sized logits, as the model gives them; 1e-50 with top_p crashed ("index -1 is out of bounds")
    logits = np.random.default_rng(0).normal(0, 3, 49152).astype(np.float32)
    params = SamplingParams(temperature=temperature, **cut)
    assert params.greedy
    assert set(draws(params, logits, 5)) == {int(np.argmax(logits))}


@pytest.mark.parametrize("cut", [{"top_p": 0.9}, {"top_k": 3}, {}])
def test_small_temperatures_above_the_epsilon_sample_the_best_tokens(cut):
    logits = np.random.default_rng(1).normal(0, 3, 49152).astype(np.float32)
    logits[[7, 9]] = 30.0, 30.0 - 1e-4  # nearly tied at the top: a small temperature keeps both
    assert not SamplingParams(temperature=1e-4).greedy
    assert set(draws(SamplingParams(temperature=1e-4, seed=3, **cut), logits, 200)) == {7, 9}


def test_nan_logits_are_never_chosen():
    logits = np.array([np.nan, 1.0, np.nan, 2.0, np.nan], np.float32)
    assert set(draws(SamplingParams(temperature=0), logits, 3)) == {3}
    assert set(draws(SamplingParams(top_p=0.99, seed=0), logits, 300)) == {1, 3}


def test_positive_infinity_takes_the_choice():
    logits = np.array([1.0, np.inf, 0.0, np.inf, np.nan], np.float32)
    assert set(draws(SamplingParams(temperature=0), logits, 3)) == {1}
    assert set(draws(SamplingParams(top_k=2, seed=0), logits, 300)) == {1, 3}


def test_logprobs_of_a_row_with_nan_stay_finite():
    row = np.array([np.nan, 0.0, np.log(3.0)], np.float32)
    _token, info = Sampler(SamplingParams(temperature=0, logprobs=1)).sample(row)
    assert info.token_id == 2 and info.logprob == pytest.approx(np.log(0.75))


@pytest.mark.parametrize("row", [[-np.inf] * 4, [np.nan] * 4, [np.nan, -np.inf, np.nan, -np.inf]])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_a_row_with_nothing_finite_is_refused(row, temperature):
    with pytest.raises(SamplingError, match="no finite logits"):
        Sampler(SamplingParams(temperature=temperature)).sample(np.array(row, np.float32))


def test_logit_bias_moves_the_choice_but_not_the_reported_logprobs():
    logits = np.array([3.0, 2.0, 1.0, 0.0], np.float32)
    params = SamplingParams.from_dict({"temperature": 0, "logprobs": 1, "logit_bias": {"3": 100, "0": -100}})
    token, info = Sampler(params).sample(logits.copy())
    assert token == 3 and info.token_id == 3
    raw = logits - np.log(np.exp(logits).sum())
    assert abs(info.logprob - raw[3]) < 1e-5 and info.top[0][0] == 0  # the model's own distribution


def test_logit_bias_is_bounded_like_openai():
    for bad, message in (({"1": 101}, "outside"), ({"x": 1}, "not a token id"), ({"-1": 1}, "outside"),
                         ({str(i): 1 for i in range(301)}, "at most 300")):
        with pytest.raises(InvalidRequest, match=message):
            SamplingParams.from_dict({"logit_bias": bad})
