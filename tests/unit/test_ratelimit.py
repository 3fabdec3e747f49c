"""frontend.ratelimit with in-memory storage: requests, tokens, concurrency, headers."""

import asyncio

import pytest
from limits import RateLimitItemPerMinute

from frontend.auth import ApiKey, Limits
from frontend.errors import RateLimited
from frontend.ratelimit import RateLimiter, duration


def key(name="k", **limits) -> ApiKey:
    return ApiKey(name, "0" * 64, frozenset({"inference"}), Limits(**limits))


@pytest.mark.parametrize("seconds, text", [(0.02, "20ms"), (0, "0ms"), (1.5, "1.5s"), (59.96, "60s"),
                                           (60, "1m0s"), (361, "6m1s")])
def test_duration_in_openai_format(seconds, text):
    assert duration(seconds) == text


async def test_requests_per_minute_then_429_with_retry_after_and_headers():
    limiter, k = RateLimiter(), key(requests_per_minute=2)
    first = dict((await limiter.admit(k))[0])
    assert first[b"x-ratelimit-limit-requests"] == b"2" and first[b"x-ratelimit-remaining-requests"] == b"1"
    await limiter.admit(k)
    with pytest.raises(RateLimited) as info:
        await limiter.admit(k)
    assert info.value.status == 429 and info.value.code == "rate_limit_exceeded"
    assert 55 <= int(info.value.headers["retry-after"]) <= 60
    assert info.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert dict((await limiter.admit(key("other", requests_per_minute=2)))[0])[b"x-ratelimit-remaining-requests"] == b"1"


async def test_tokens_are_charged_after_the_fact_down_to_zero():
    limiter, k = RateLimiter(), key(tokens_per_minute=10)
    await limiter.admit(k)
    await limiter.charge_tokens(k, 4)
    assert dict((await limiter.admit(k))[0])[b"x-ratelimit-remaining-tokens"] == b"6"
    await limiter.charge_tokens(k, 50)  # more than is left: the budget is spent, not refused
    with pytest.raises(RateLimited, match="tokens per minute"):
        await limiter.admit(k)


async def test_concurrency_leases_are_taken_and_given_back():
    limiter, k = RateLimiter(), key(max_concurrent=2)
    _, release_first = await limiter.admit(k)
    await limiter.admit(k)
    with pytest.raises(RateLimited, match="concurrent") as info:
        await limiter.admit(k)
    assert info.value.kind == "concurrent"
    await release_first()
    await release_first()  # giving back twice frees one lease, not someone else's
    await limiter.admit(k)  # a slot is free again
    assert await limiter.leases.held(k.name) == 2


async def test_a_refused_request_gives_its_lease_back():
    limiter, k = RateLimiter(), key(max_concurrent=1, requests_per_minute=1)
    _, release = await limiter.admit(k)
    await release()
    with pytest.raises(RateLimited, match="requests per minute"):
        await limiter.admit(k)
    assert await limiter.leases.held(k.name) == 0


async def test_an_expired_lease_frees_its_slot_alone():
    limiter, k = RateLimiter(lease_ttl_s=0.05), key(max_concurrent=1)
    await limiter.admit(k)  # never released: a replica that died mid-request
    with pytest.raises(RateLimited):
        await limiter.admit(k)
    await asyncio.sleep(0.1)
    await limiter.admit(k)


async def test_tokens_over_the_budget_are_all_counted():
    limiter, k = RateLimiter(), key(tokens_per_minute=10)
    await limiter.charge_tokens(k, 25)
    await limiter.charge_tokens(key("other", tokens_per_minute=10), 3)
    stats = await limiter.windows["tokens"].get_window_stats(RateLimitItemPerMinute(10), "modelgate", "tokens", "k")
    assert stats.remaining == 0
    assert await limiter.storage.get(RateLimitItemPerMinute(10).key_for("modelgate", "tokens", "k")) == 25


async def test_unlimited_keys_get_no_headers():
    limiter = RateLimiter()
    headers, _ = await limiter.admit(key())
    assert headers == []
    assert await limiter.headers(key()) == []


async def test_unreachable_redis_admits_unlimited_with_an_error_log(caplog):
    from launcher.triton import free_port

    limiter = RateLimiter(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    k = key(requests_per_minute=1, tokens_per_minute=5, max_concurrent=1)
    assert (await limiter.admit(k))[0] == [] and (await limiter.admit(k))[0] == []
    await limiter.charge_tokens(k, 3)
    assert "rate limit storage failed" in caplog.text
