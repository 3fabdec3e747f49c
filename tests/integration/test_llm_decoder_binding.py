"""The decoder's I/O-binding path (the one CUDA uses), exercised on CPU: the engine behaves exactly as with
plain `session.run`, and the KV cache stays in the decoder's OrtValues between decode steps."""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration import llm_tiny
from tests.integration import test_llm_engine as engine_tests
from triton_models.llm.decoder import DevicePast, OnnxDecoder
from triton_models.llm.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def bound():
    files = llm_tiny.model_files()
    return OnnxDecoder(files / "model.onnx", threads=1, device="cpu"), TextTokenizer(files)


def test_plain_cpu_decoder_does_not_bind(monkeypatch):
    monkeypatch.delenv("MODELGATE_ORT_PROVIDERS", raising=False)
    decoder = OnnxDecoder(llm_tiny.model_files() / "model.onnx", threads=1)
    assert decoder.device is None and decoder.session.get_providers() == ["CPUExecutionProvider"]


def test_bound_steps_match_plain_steps(bound):
    plain = OnnxDecoder(llm_tiny.model_files() / "model.onnx", threads=1)
    decoder = bound[0]
    ids = np.array([[5, 6, 7], [0, 8, 9]])
    mask = np.array([[1, 1, 1], [0, 1, 1]])
    positions = np.array([[0, 1, 2], [0, 0, 1]])
    logits_a, past_a = plain.run(ids, mask, positions, plain.empty_past(2))
    logits_b, past_b = decoder.run(ids, mask, positions, decoder.empty_past(2))
    assert isinstance(past_b, DevicePast) and len(past_b) == len(past_a)
    np.testing.assert_array_equal(logits_a, logits_b)
    step = (np.array([[3], [4]]), np.ones((2, 4), np.int64), np.array([[3], [2]]))
    logits_a, past_a = plain.run(*step, past_a)
    logits_b, past_b = decoder.run(*step, past_b)  # binds the previous OrtValues as they are
    np.testing.assert_array_equal(logits_a, logits_b)
    for a, b in zip(past_a, past_b):
        np.testing.assert_array_equal(a, b)


def test_decode_steps_keep_the_cache_in_ortvalues(bound):
    engine = engine_tests.make_engine(bound)
    sink = engine_tests.submit(engine, "Hello there", max_tokens=6, **engine_tests.GREEDY)
    engine.step()
    engine.step()
    assert isinstance(engine.cache.past, DevicePast)
    engine_tests.run(engine, [sink])
    assert sink.finish_reason == "length"


def test_bound_engine_writes_what_the_plain_engine_writes(bound):
    files = llm_tiny.model_files()
    plain = OnnxDecoder(files / "model.onnx", threads=1), TextTokenizer(files)
    texts = [engine_tests.alone(parts, p, max_tokens=12, **engine_tests.GREEDY).text
             for parts in (plain, bound) for p in engine_tests.PROMPTS]
    assert texts[:len(engine_tests.PROMPTS)] == texts[len(engine_tests.PROMPTS):]


@pytest.mark.parametrize("case", [
    engine_tests.test_requests_joining_mid_decode_get_what_they_get_alone,
    engine_tests.test_kv_budget_preempts_and_recomputes_without_changing_the_text,
    engine_tests.test_long_prompt_is_prefilled_in_chunks_while_the_batch_decodes,
    engine_tests.test_a_known_prompt_prefix_is_not_prefilled_again,
], ids=lambda case: case.__name__.removeprefix("test_"))
def test_engine_cases_on_the_bound_decoder(case, bound):
    case(bound)
