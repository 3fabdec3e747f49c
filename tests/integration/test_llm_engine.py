"""The LLM engine in-process on the tiny ONNX model, stepped by hand: continuous batching, preemption,
cancellation, end of sequence, n > 1. No Triton: the sink is a list."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field

import pytest

from tests.integration import llm_tiny
from triton_models.contract import CONTEXT_LENGTH_EXCEEDED, GENERATION_FAILED, UNAVAILABLE, ModelError
from triton_models.llm.decoder import OnnxDecoder
from triton_models.llm.engine import Engine, EngineConfig
from triton_models.llm.params import InvalidRequest, SamplingParams
from triton_models.llm.scheduler import Limits, Overloaded
from triton_models.llm.sequence import RequestOutput
from triton_models.llm.tokenizer import TextTokenizer

GREEDY = {"temperature": 0, "ignore_eos": True}
PROMPTS = ["Hello there", "The quick brown fox jumps over", "One", "Why is the sky blue? Because"]


@dataclass
class Sink:
    cancelled: bool = False
    outputs: list[RequestOutput | None] = field(default_factory=list)
    finals: int = 0
    error: ModelError | None = None

    def is_cancelled(self) -> bool:
        return self.cancelled

    def send(self, output, final):
        self.outputs.append(output)
        self.finals += final

    def fail(self, error):
        self.error = error
        self.finals += 1

    @property
    def text(self) -> str:
        return "".join(o.texts[0] for o in self.outputs if o is not None)

    @property
    def logprobs(self) -> list[dict]:
        """The first sequence's logprob entries, in order (requests submitted with want_logprobs)."""
        return [entry for o in self.outputs if o is not None for entry in o.logprobs[0]]

    @property
    def finish_reason(self) -> str | None:
        last = self.outputs[-1] if self.outputs else None
        return last.finish_reasons[0] if last is not None and last.finish_reasons else None


@pytest.fixture(scope="module")
def parts():
    files = llm_tiny.model_files()
    return OnnxDecoder(files / "model.onnx", threads=1), TextTokenizer(files)


def make_engine(parts, prefill_chunk: int = 512, **limits) -> Engine:
    decoder, tokenizer = parts
    # cancellations checked every step: these tests step by hand, faster than the production time budget
    config = EngineConfig(llm_tiny.CONTEXT_LENGTH, Limits(**limits), prefill_chunk=prefill_chunk, cancel_check_s=0)
    return Engine(decoder, tokenizer, config)


def submit(engine: Engine, prompt: str, **params) -> Sink:
    sink = Sink()
    engine.submit(prompt, SamplingParams.from_dict(params), sink, stream=True)
    return sink


def run(engine: Engine, sinks: list[Sink], max_steps: int = 500) -> None:
    for _ in range(max_steps):
        if all(s.finals for s in sinks):
            return
        engine.step()
    raise AssertionError("requests did not finish")


def alone(parts, prompt: str, **params) -> Sink:
    engine = make_engine(parts)
    sink = submit(engine, prompt, **params)
    run(engine, [sink])
    return sink


def test_requests_joining_mid_decode_get_what_they_get_alone(parts):
    expected = [alone(parts, p, max_tokens=12, **GREEDY).text for p in PROMPTS]
    engine = make_engine(parts)
    sinks = [submit(engine, PROMPTS[0], max_tokens=12, **GREEDY)]
    for prompt in PROMPTS[1:]:  # each joins the running batch a few steps later
        engine.step()
        engine.step()
        sinks.append(submit(engine, prompt, max_tokens=12, **GREEDY))
    run(engine, sinks)
    assert [s.text for s in sinks] == expected
    assert all(s.finish_reason == "length" and s.finals == 1 for s in sinks)
    assert engine.cache.batch == 0 and not engine.running  # everyone left and freed the cache


def test_kv_budget_preempts_and_recomputes_without_changing_the_text(parts):
    expected = [alone(parts, p, max_tokens=20, **GREEDY).text for p in PROMPTS]
    engine = make_engine(parts, max_kv_tokens=60)  # four ~25-token sequences cannot all fit
    sinks = [submit(engine, p, max_tokens=20, **GREEDY) for p in PROMPTS]
    preempted = 0
    for _ in range(500):
        if all(s.finals for s in sinks):
            break
        engine.step()
        preempted += any(seq.generated for seq in engine.scheduler.waiting)
        assert engine.cache.batch * engine.cache.width <= 60
    assert [s.text for s in sinks] == expected
    assert preempted  # some sequence went back to the queue mid-generation


def test_long_prompt_is_prefilled_in_chunks_while_the_batch_decodes(parts):
    long_prompt = "Tell me everything about " + "the sea and the sky, " * 12
    expected = alone(parts, long_prompt, max_tokens=8, **GREEDY).text
    engine = make_engine(parts, prefill_chunk=16)
    short = submit(engine, "Hello", max_tokens=40, **GREEDY)
    engine.step()
    long = submit(engine, long_prompt, max_tokens=8, **GREEDY)
    chunks = -(-len(parts[1].encode(long_prompt)) // 16)
    assert chunks >= 4
    for _ in range(chunks - 1):
        before = len(short.outputs)
        engine.step()
        assert engine.prefilling and not long.outputs  # still prefilling ...
        assert len(short.outputs) == before + 1  # ... while the running sequence keeps decoding
    engine.step()
    assert not engine.prefilling and len(long.outputs) == 2  # joined: first token, then a decode step
    run(engine, [short, long])
    assert long.text == expected


def test_cancelled_while_prefilling_never_joins(parts):
    engine = make_engine(parts, prefill_chunk=8, max_num_seqs=1)
    sink = submit(engine, "word " * 40, max_tokens=4, **GREEDY)
    engine.step()
    assert engine.prefilling
    waiting = submit(engine, "Hi", max_tokens=2, **GREEDY)
    engine.step()
    assert not waiting.outputs and engine.scheduler.waiting  # the prefilling prompt holds the only slot
    sink.cancelled = True
    engine.step()
    assert not engine.prefilling and sink.outputs == [None]
    run(engine, [waiting], max_steps=5)
    assert waiting.finish_reason == "length"


def test_a_known_prompt_prefix_is_not_prefilled_again(parts):
    engine = make_engine(parts)
    runs = []
    real_run = engine.decoder.run

    def recording_run(input_ids, *args, **kwargs):
        runs.append(input_ids.shape)
        return real_run(input_ids, *args, **kwargs)

    engine.decoder = _Recording(engine.decoder, recording_run)
    prompt = "You are a helpful assistant. Answer briefly. Question: why?"
    first = submit(engine, prompt, max_tokens=6, **GREEDY)
    run(engine, [first])
    prompt_tokens = len(parts[1].encode(prompt))
    assert runs[0] == (1, prompt_tokens)
    runs.clear()
    again = submit(engine, prompt, max_tokens=6, **GREEDY)
    longer = submit(engine, prompt + " And how?", max_tokens=6, **GREEDY)
    run(engine, [again, longer])
    assert again.text == first.text
    # `again` joins the batch at once (its last prompt token runs in the decode step); `longer` runs only
    # its new words, then both decode together
    assert runs[:2] == [(1, len(parts[1].encode(prompt + " And how?")) - prompt_tokens), (2, 1)]
    assert engine.stats.reused == 2 * prompt_tokens - 1 and engine.stats.generated == 18
    # the rest of a known prompt ends at its first token: it must not decode further
    one = Sink()
    request = engine.submit(prompt + " Or else?", SamplingParams.from_dict({"max_tokens": 1, **GREEDY}), one)
    run(engine, [one])
    engine.step()
    assert [o.num_output_tokens for o in one.outputs] == [[1]] and one.finish_reason == "length"
    assert request.sequences[0].generated == 1 and not engine.running
    # a finished sequence leaves its prompt and answer (all but the last token, never cached) for a next turn
    sink = Sink()
    request = engine.submit(prompt + " Why not?", SamplingParams.from_dict({"max_tokens": 5, **GREEDY}), sink)
    run(engine, [sink])
    tokens = request.sequences[0].tokens
    length, _past = engine.prefix_cache.lookup([*tokens, 0])
    assert length == len(tokens) - 1 and len(tokens) == len(parts[1].encode(prompt + " Why not?")) + 5
    off = make_engine(parts)
    off.prefix_cache.capacity = 0
    alone_longer = submit(off, prompt + " And how?", max_tokens=6, **GREEDY)
    run(off, [alone_longer])
    assert longer.text == alone_longer.text


class _Recording:
    """The decoder with its `run` swapped for a recording one."""

    def __init__(self, decoder, run):
        self._decoder = decoder
        self.run = run

    def __getattr__(self, name):
        return getattr(self._decoder, name)


def test_a_failing_step_fails_its_requests_and_the_engine_goes_on(parts):
    engine = make_engine(parts).start()
    real_run = engine.decoder.run
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return real_run(*args, **kwargs)

    engine.decoder = _Recording(engine.decoder, failing_once)
    try:
        victim = submit(engine, "Hello there", max_tokens=50, **GREEDY)
        _wait(victim)
        assert victim.error.code == GENERATION_FAILED and victim.finals == 1
        assert "out of memory" not in victim.error.message  # the cause is logged, not sent
        assert engine.cache.batch == 0 and not engine.running
        after = submit(engine, "Hello there", max_tokens=3, **GREEDY)
        _wait(after)
        assert after.finish_reason == "length"
    finally:
        engine.stop()


def test_stop_fails_what_is_in_flight(parts):
    engine = make_engine(parts, max_num_seqs=1)
    running = submit(engine, "Go on", max_tokens=200, **GREEDY)
    engine.step()
    waiting = submit(engine, "Wait", max_tokens=2, **GREEDY)
    engine.start()
    engine.stop()
    assert running.finals == 1 and waiting.finals == 1
    assert waiting.error.code == running.error.code == UNAVAILABLE


def _wait(sink: Sink, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not sink.finals and time.monotonic() < deadline:
        time.sleep(0.01)


def test_stats_are_logged_and_reset(parts, caplog):
    engine = make_engine(parts)
    run(engine, [submit(engine, "Hello there", max_tokens=3, **GREEDY)])
    with caplog.at_level(logging.INFO, logger="triton_models.llm.engine"):
        engine._log_stats()
    assert "tokens/s generated, 2 prompt tokens prefilled, 0 reused" in caplog.text
    assert engine.stats.generated == 0


def test_end_of_sequence_stops_without_emitting_it(parts):
    _decoder, tokenizer = parts
    free = alone(parts, "Hello there", max_tokens=6, **GREEDY)
    engine = make_engine(parts)
    tokens = tokenizer.encode(free.text)
    eos_like = tokens[2]
    sink = submit(engine, "Hello there", max_tokens=6, temperature=0, stop_token_ids=[eos_like])
    run(engine, [sink])
    assert sink.finish_reason == "stop"
    assert sink.text == tokenizer.tokenizer.decode(tokens[:2])


def test_n_sequences_with_a_seed_are_distinct_and_reproducible(parts):
    params = {"max_tokens": 8, "temperature": 1.0, "seed": 5, "n": 2, "ignore_eos": True}
    first, second = alone(parts, "Tell me", **params), alone(parts, "Tell me", **params)

    def texts(sink):
        return ["".join(o.texts[i] for o in sink.outputs) for i in range(2)]

    assert texts(first) == texts(second)
    assert texts(first)[0] != texts(first)[1]
    assert first.outputs[-1].finish_reasons == ["length", "length"]
    assert sum(sum(o.num_output_tokens) for o in first.outputs) == 16


def test_cancelled_request_leaves_at_once_and_its_slot_serves_the_next(parts):
    engine = make_engine(parts, max_num_seqs=1, max_queue=1)
    first = submit(engine, "Go on", max_tokens=200, **GREEDY)
    engine.step()
    assert engine.cache.batch == 1 and len(first.outputs) == 2  # prefill token + one decode token
    second = submit(engine, "Next", max_tokens=3, **GREEDY)
    engine.step()
    assert engine.cache.batch == 1 and not second.outputs  # waits: the only slot is taken
    with pytest.raises(Overloaded):
        submit(engine, "Third", max_tokens=3)
    first.cancelled = True
    engine.step()
    assert first.finals == 1 and first.outputs[-1] is None  # only the FINAL flag
    run(engine, [second], max_steps=10)
    assert second.finish_reason == "length"


def test_a_sink_that_fails_drops_its_request_not_the_engine(parts):
    engine = make_engine(parts)
    broken = submit(engine, "Hello", max_tokens=50, **GREEDY)
    broken.send = lambda output, final: (_ for _ in ()).throw(RuntimeError("client gone"))
    healthy = submit(engine, "Hello", max_tokens=5, **GREEDY)
    run(engine, [healthy])
    assert healthy.finish_reason == "length"
    assert engine.cache.batch == 0 and not engine.running


def test_budget_exhausted_by_one_sequence_ends_it_with_length(parts):
    engine = make_engine(parts, max_kv_tokens=12)
    sink = submit(engine, "Hello there", **GREEDY)  # 2 prompt tokens
    run(engine, [sink])
    assert sink.finish_reason == "length"
    # the cache fills its 12 slots with the prompt and 10 tokens; the 11th is sampled but never cached
    assert sum(o.num_output_tokens[0] for o in sink.outputs) == 11
    assert engine.cache.batch == 0


def test_non_streaming_sends_one_response(parts):
    engine = make_engine(parts)
    sink = Sink()
    engine.submit("Hi", SamplingParams.from_dict(dict(max_tokens=5, **GREEDY)), sink, stream=False)
    run(engine, [sink])
    assert len(sink.outputs) == 1 and sink.outputs[0].num_output_tokens == [5]


def test_context_length_is_checked_and_enforced(parts):
    engine = make_engine(parts)
    with pytest.raises(ModelError, match="maximum context length is 256") as caught:
        submit(engine, "word " * 300)
    assert caught.value.code == CONTEXT_LENGTH_EXCEEDED and caught.value.param is None
    with pytest.raises(ModelError, match="maximum context length") as caught:
        submit(engine, "Hi", max_tokens=300)
    assert caught.value.code == CONTEXT_LENGTH_EXCEEDED
    with pytest.raises(InvalidRequest, match="the prompt is empty"):
        submit(engine, "")
    prompt = "word " * 250
    sink = submit(engine, prompt, **GREEDY)  # no max_tokens: runs to the context length
    run(engine, [sink])
    assert sink.finish_reason == "length"
    prompt_tokens = len(parts[1].encode(prompt))
    assert sum(o.num_output_tokens[0] for o in sink.outputs) == llm_tiny.CONTEXT_LENGTH - prompt_tokens


def test_engine_thread_serves_and_stops(parts):
    engine = make_engine(parts).start()
    try:
        sink = submit(engine, "Hi", max_tokens=4, **GREEDY)
        for _ in range(200):
            if sink.finals:
                break
            time.sleep(0.02)
        assert sink.finish_reason == "length"
        waiting = Sink()
    finally:
        engine.stop()
    with pytest.raises(ModelError, match="shutting down") as caught:
        engine.submit("Hi", SamplingParams(), waiting)
    assert caught.value.code == UNAVAILABLE


class _Failing:
    """Wraps a sequence's part (sampler, detokenizer, stop matcher): `method` raises on its `after`+1-th call."""

    def __init__(self, part, method: str, after: int):
        self._part, self._method, self._left = part, method, after

    def __getattr__(self, name):
        attr = getattr(self._part, name)
        if name != self._method:
            return attr

        def call(*args):
            self._left -= 1
            if self._left < 0:
                raise RuntimeError("injected fault")
            return attr(*args)
        return call


@pytest.mark.parametrize("part, method, after", [
    ("sampler", "sample", 3),  # sampling (penalties, top-p, ...)
    ("_detok", "step", 3),  # incremental detokenisation
    ("_stops", "feed", 3),  # stop strings
    ("_detok", "flush", 0),  # the final flush, as the sequence ends at max_tokens
])
def test_a_failing_sequence_fails_its_request_alone(parts, part, method, after):
    expected = [alone(parts, p, max_tokens=8, **GREEDY).text for p in PROMPTS]
    engine = make_engine(parts)
    sinks = [submit(engine, p, max_tokens=8, **GREEDY) for p in PROMPTS[:2]]
    victim = Sink()
    params = SamplingParams.from_dict({"max_tokens": 5, "n": 2, "stop": ["zzz"], **GREEDY})
    request = engine.submit("Poisoned", params, victim, stream=True)
    seq = request.sequences[1]
    setattr(seq, part, _Failing(getattr(seq, part), method, after))
    sinks += [submit(engine, p, max_tokens=8, **GREEDY) for p in PROMPTS[2:]]
    run(engine, [*sinks, victim])
    assert [s.text for s in sinks] == expected and all(s.finish_reason == "length" for s in sinks)
    assert victim.finals == 1 and victim.error.code == GENERATION_FAILED
    assert all(seq.finished for seq in request.sequences)  # its other choice stopped with it
    assert engine.cache.batch == 0 and not engine.running


def test_a_failing_prefill_fails_its_group_not_the_batch(parts):
    expected = alone(parts, "Hello there", max_tokens=6, **GREEDY).text
    engine = make_engine(parts)
    running = submit(engine, "Hello there", max_tokens=6, **GREEDY)
    engine.step()
    real_run = engine.decoder.run

    def failing_prefill(input_ids, *args, **kwargs):
        if input_ids.shape[1] > 1:  # a prefill; decode steps run one token per row
            raise RuntimeError("injected fault")
        return real_run(input_ids, *args, **kwargs)

    engine.decoder = _Recording(engine.decoder, failing_prefill)
    victim = submit(engine, "A longer prompt that fails", max_tokens=4, **GREEDY)
    waiting = submit(engine, "Waits", max_tokens=2, **GREEDY)
    engine.step()
    assert victim.error.code == GENERATION_FAILED and waiting.error.code == GENERATION_FAILED  # one group
    engine.decoder = engine.decoder._decoder
    later = submit(engine, "Later", max_tokens=2, **GREEDY)
    run(engine, [running, later])
    assert running.text == expected and later.finish_reason == "length"


def test_one_bad_sequence_in_a_prefill_group_fails_alone(parts):
    expected = alone(parts, "Good prompt here", max_tokens=4, **GREEDY).text
    poison = parts[1].encode("Poison prompt here")
    engine = make_engine(parts)
    real_run = engine.decoder.run

    prefill_rows = []

    def fails_on_poison(input_ids, *args, **kwargs):  # as a broken image embedding would
        if input_ids.shape[1] > 1:
            prefill_rows.append(input_ids.shape[0])
        if any(list(row[-len(poison):]) == poison for row in input_ids.tolist()):
            raise RuntimeError("injected fault")
        return real_run(input_ids, *args, **kwargs)

    engine.decoder = _Recording(engine.decoder, fails_on_poison)
    good = submit(engine, "Good prompt here", max_tokens=4, **GREEDY)
    bad = submit(engine, "Poison prompt here", max_tokens=4, **GREEDY)
    run(engine, [good, bad])
    assert prefill_rows[0] == 2  # the two prompts were prefilled as one group first
    assert bad.error.code == GENERATION_FAILED
    assert good.error is None and good.text == expected  # its group failed; alone it ran


def test_stop_is_prompt_and_fails_the_queue_unavailable(parts):
    engine = make_engine(parts, max_num_seqs=1).start()
    running = submit(engine, "Go on", max_tokens=200, **GREEDY)
    waiting = [submit(engine, f"Wait {i}", max_tokens=2, **GREEDY) for i in range(5)]
    started = time.monotonic()
    engine.stop()
    assert time.monotonic() - started < 2.0 and not engine._thread.is_alive()
    assert running.finals == 1 and all(w.finals == 1 for w in waiting)
    assert {s.error.code for s in [running, *waiting] if s.error} == {UNAVAILABLE}


def test_logprobs_are_bit_for_bit_those_of_the_request_alone(parts):
    """Issue 13: whatever ran before or beside a request (prompts of other lengths in its prefill group and its
    decode batch, requests joining mid-decode, its prefix already cached, its prompt split into chunks), every
    logprob it gets equals, exactly, what it gets alone on a fresh engine."""
    params = SamplingParams.from_dict({"max_tokens": 10, "logprobs": 5, **GREEDY})

    def start(engine: Engine, prompt: str) -> Sink:
        sink = Sink()
        engine.submit(prompt, params, sink, stream=True, want_logprobs=True)
        return sink

    prompts = [*PROMPTS, "Tell me everything about " + "the sea and the sky, " * 6]
    expected = []
    for prompt in prompts:
        engine = make_engine(parts)
        sink = start(engine, prompt)
        run(engine, [sink])
        expected.append(sink.logprobs)
    engine = make_engine(parts, prefill_chunk=16)
    hits = []
    for _ in range(2):  # cold, then again with the longer prompts in the prefix cache
        sinks = [start(engine, p) for p in prompts[:3]]  # one prefill group of mixed lengths
        engine.step()
        sinks += [start(engine, p) for p in prompts[3:]]  # joining mid-decode; the long one in chunks
        run(engine, sinks)
        assert [s.logprobs for s in sinks] == expected
        hits.append(engine.prefix_cache.hit_tokens)
    assert hits[1] - hits[0] >= len(parts[1].encode(prompts[-1])) - 1  # the long prompt came from the cache
    engine = make_engine(parts, max_kv_tokens=60)  # too few slots: sequences are preempted and prefilled again
    sinks = [start(engine, p) for p in prompts]
    run(engine, sinks)
    assert [s.logprobs for s in sinks] == expected and engine.stats.preempted


def test_the_exports_batch_invariance_check_passes_here_and_catches_a_batch_dependent_decoder(monkeypatch):
    from transformers import AutoTokenizer

    from export_scripts import llm_check
    from export_scripts.common import ExportError

    files = llm_tiny.model_files()
    tokenizer = AutoTokenizer.from_pretrained(str(files))
    result = llm_check.check_batch_invariance(files / "model.onnx", files, tokenizer, threads=1)
    assert result["batch_invariant_prompts"] == 8 and result["batch_invariant_prefix_hits"] >= 4

    run_decoder = OnnxDecoder.run

    def batch_dependent(self, input_ids, *args, **kwargs):  # a row's logits depend on how many rows run
        logits, present = run_decoder(self, input_ids, *args, **kwargs)
        logits[:, 42] += 1e6 * (len(input_ids) > 1)
        return logits, present

    monkeypatch.setattr(OnnxDecoder, "run", batch_dependent)
    with pytest.raises(ExportError, match="batch invariance: prompt 0"):
        llm_check.check_batch_invariance(files / "model.onnx", files, tokenizer, threads=1)


@pytest.mark.parametrize("constraint, check", [
    ({"json": {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "enum": [1, 2]}},
               "required": ["ok", "n"], "additionalProperties": False}},
     lambda text: set(json.loads(text)) == {"ok", "n"} and json.loads(text)["n"] in (1, 2)),
    ({"regex": "[0-9]{3}-[a-c]{2}"}, lambda text: re.fullmatch("[0-9]{3}-[a-c]{2}", text) is not None),
    ({"choice": ["red", "green", "blue"]}, lambda text: text in ("red", "green", "blue")),
])
def test_structured_outputs_always_parse_even_from_random_weights(parts, constraint, check):
    """The tiny model's weights are random: without the grammar its text is noise; with it, the text matches
    the constraint and ends as soon as the grammar is complete (finish_reason stop), also with n > 1. (Any JSON
    object is left to the real model: random weights fill an unbounded string until max_tokens.)"""
    engine = make_engine(parts)
    sink = submit(engine, "Answer:", max_tokens=200, temperature=1.0, seed=3, n=2,
                  structured_outputs=constraint)
    run(engine, [sink])
    texts = ["".join(o.texts[i] for o in sink.outputs if o is not None) for i in range(2)]
    assert all(check(text) for text in texts), texts
    assert sink.outputs[-1].finish_reasons == ["stop", "stop"]


@pytest.mark.parametrize("constraint, message", [
    ({"json": {"type": "object", "if": {"type": "object"}}}, 'Unimplemented keys: ["if"]'),
    ({"json": {"type": "string", "format": "no-such-format"}}, "Unknown format"),
    ({"regex": "("}, "regex"),
    ({"json": {}, "regex": "a"}, "exactly one"),
    ({"lark": "start: a"}, "unknown key 'lark'"),
])
def test_a_constraint_that_cannot_be_enforced_is_refused_by_name(parts, constraint, message):
    engine = make_engine(parts)
    with pytest.raises(InvalidRequest, match=re.escape(message)) as caught:
        submit(engine, "Answer:", max_tokens=5, structured_outputs=constraint)
    assert caught.value.param in ("response_format", "guided_regex", "structured_outputs")


def test_a_constraint_its_own_tokens_cannot_follow_fails_that_request_as_a_400(parts):
    """A regex of astral characters: llguidance 1.9 masks a byte token in and then refuses it. The request fails
    alone with a 400 naming its field (not a 500 "retry", which would fail again); the others go on."""
    engine = make_engine(parts)
    broken = submit(engine, "Answer:", max_tokens=8, structured_outputs={"regex": "\U000bd3c2\x11t\u00eb"})
    fine = submit(engine, "Answer:", max_tokens=4, **GREEDY)
    run(engine, [broken, fine])
    assert broken.error is not None and broken.error.code == "invalid_request" and broken.error.status == 400
    assert broken.error.param == "guided_regex"
    assert fine.error is None and fine.finish_reason == "length"
