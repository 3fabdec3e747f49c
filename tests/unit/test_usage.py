"""frontend.usage: token usage read off JSON bodies and SSE streams."""

import orjson

from frontend.usage import UsageMeter

SSE = [(b"content-type", b"text/event-stream")]
JSON = [(b"content-type", b"application/json")]


def event(obj) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def delta(text: str, index: int = 0) -> dict:
    return {"choices": [{"index": index, "delta": {"content": text}}]}


def test_json_usage_is_read_from_the_tail_of_a_large_body():
    meter = UsageMeter(0.0)
    meter.start(JSON)
    body = orjson.dumps({"data": [{"embedding": [0.5] * 5000}], "usage": {"prompt_tokens": 7, "total_tokens": 7}})
    for i in range(0, len(body), 1000):
        assert meter.feed(body[i:i + 1000], 1.0).tokens == 0
    tally = meter.finish()
    assert (tally.prompt_tokens, tally.completion_tokens) == (7, 0)


def test_json_without_usage_counts_nothing():
    meter = UsageMeter(0.0)
    meter.start(JSON)
    meter.feed(b'{"created": 1, "data": []}', 1.0)
    assert meter.finish().tokens == 0


def test_stream_counts_tokens_as_produced_with_latencies():
    meter = UsageMeter(10.0)
    meter.start(SSE)
    first = meter.feed(event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}), 10.5)
    assert first.tokens == 0 and first.first_token_s is None  # a role-only delta is not a token
    tally = meter.feed(event(delta("Hel")), 11.0)
    assert tally.completion_tokens == 1 and tally.first_token_s == 1.0
    split = event(delta("lo"))  # one event split over two chunks, then two events in one chunk
    assert meter.feed(split[:7], 11.2).tokens == 0
    tally = meter.feed(split[7:] + event(delta("!", 0)), 11.25)
    assert tally.completion_tokens == 2 and tally.inter_token_s == [0.25, 0.0]


def test_final_usage_event_adds_prompt_and_corrects_completion():
    meter = UsageMeter(0.0)
    meter.start(SSE)
    meter.feed(event(delta("a")) + event(delta("b")), 1.0)
    tally = meter.feed(event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}})
                       + b"data: [DONE]\n\n", 2.0)
    assert (tally.prompt_tokens, tally.completion_tokens) == (5, 2)
    assert meter.finish().tokens == 0


def test_error_events_and_garbage_are_ignored():
    meter = UsageMeter(0.0)
    meter.start(SSE)
    tally = meter.feed(event({"error": {"message": "x"}}) + b"data: {not json\n\n" + b": comment\n\n", 1.0)
    assert tally.tokens == 0


def test_completions_text_choices_count():
    meter = UsageMeter(0.0)
    meter.start(SSE)
    assert meter.feed(event({"choices": [{"index": 0, "text": "x"}, {"index": 1, "text": "y"}]}), 1.0).tokens == 2
