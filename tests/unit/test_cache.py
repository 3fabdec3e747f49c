"""frontend.cache: keys, determinism policy, TTL + LRU in bytes, what a recorder keeps."""

import pytest

from frontend.cache import CachedResponse, ResponseCache, ResponseRecorder, cacheable

BODY = {"model": "m", "input": "x"}


def response(model="m", body=b"x" * 100) -> CachedResponse:
    return CachedResponse(model, 200, ((b"content-type", b"application/json"),), (body,))


@pytest.mark.parametrize("path, body, expected", [
    ("/v1/embeddings", BODY, True),
    ("/v1/chat/completions", {"temperature": 0}, True),
    ("/v1/chat/completions", {"seed": 1, "temperature": 1.0}, True),
    ("/v1/chat/completions", {"temperature": 0.7}, False),
    ("/v1/chat/completions", {}, False),  # OpenAI's default temperature is 1
    ("/v1/completions", {"temperature": 0.0}, True),
    ("/v1/images/generations", {"prompt": "x"}, False),
    ("/v1/images/generations", {"prompt": "x", "seed": 3}, False),  # url (the default) names a host, expires
    ("/v1/images/generations", {"prompt": "x", "seed": 3, "response_format": "url"}, False),
    ("/v1/images/generations", {"prompt": "x", "seed": 3, "response_format": "b64_json"}, True),
    ("/v1/models", {}, False),
    ("/v1/embeddings", ["not", "a", "dict"], False),
])
def test_only_deterministic_requests_are_cacheable(path, body, expected):
    assert cacheable(path, body) is expected


def test_key_covers_output_fields_but_not_user_and_scopes_by_tenant():
    cache = ResponseCache(10_000, 60)
    base = cache.key("alice", "m", "1", "/v1/embeddings", BODY)
    assert base == cache.key("alice", "m", "1", "/v1/embeddings", {"input": "x", "model": "m", "user": "u"})
    assert base != cache.key("alice", "m", "1", "/v1/embeddings", {**BODY, "dimensions": 3})
    assert base != cache.key("alice", "m", "2", "/v1/embeddings", BODY)  # another model version
    assert base != cache.key("alice", "n", "1", "/v1/embeddings", BODY)
    assert base != cache.key("bob", "m", "1", "/v1/embeddings", BODY)
    shared = ResponseCache(10_000, 60, scope="global")
    assert shared.key("alice", "m", "1", "/v1/embeddings", BODY) == shared.key("bob", "m", "1", "/v1/embeddings", BODY)
    with pytest.raises(ValueError):
        ResponseCache(1, 1, scope="tenant")


def test_entries_expire_after_the_ttl():
    now = [0.0]
    cache = ResponseCache(10_000, ttl_s=5, timer=lambda: now[0])
    cache.put("k", response())
    now[0] = 4.9
    assert cache.get("k") is not None
    now[0] = 5.1
    assert cache.get("k") is None


def test_size_is_bounded_in_bytes_least_recently_used_first():
    cache = ResponseCache(max_bytes=3 * 356, ttl_s=60)  # three entries of 100 bytes + 256 bookkeeping
    for key in "abc":
        assert cache.put(key, response())
    cache.get("a")  # now b is the least recently used
    cache.put("d", response())
    assert cache.get("b") is None and all(cache.get(k) for k in "acd")
    assert cache.bytes == 3 * 356
    assert not cache.put("huge", response(body=b"x" * 5000))


def test_clear_one_model_keeps_the_others():
    cache = ResponseCache(10_000, 60)
    cache.put("a", response("m"))
    cache.put("b", response("n"))
    cache.clear("m")
    assert cache.get("a") is None and cache.get("b") is not None
    cache.clear()
    assert len(cache) == 0


def record(messages, model="m") -> CachedResponse | None:
    recorder = ResponseRecorder(model)
    for message in messages:
        recorder.observe(message)
    return recorder.result()


def start(status=200, content_type=b"text/event-stream"):
    return {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]}


def body(data: bytes, more=True):
    return {"type": "http.response.body", "body": data, "more_body": more}


def test_recorder_keeps_whole_streams_event_by_event():
    kept = record([start(), body(b'data: {"a":1}\n\n'), body(b"data: [DONE]\n\n"), body(b"", more=False)])
    assert kept.chunks == (b'data: {"a":1}\n\n', b"data: [DONE]\n\n") and kept.streamed


@pytest.mark.parametrize("messages", [
    [start(), body(b'data: {"a":1}\n\n')],  # the client left: never finished
    [start(), body(b'data: {"error":{"message":"x"}}\n\ndata: [DONE]\n\n', more=False)],
    [start(), body(b'data: {"a":1}\n\n', more=False)],  # no [DONE]
    [start(500, b"application/json"), body(b"{}", more=False)],
])
def test_recorder_drops_unfinished_failed_or_non_200_responses(messages):
    assert record(messages) is None
