"""frontend.usage: exact usage recorded by the services, taken for charging in parts."""

from frontend.usage import Usage


def test_charged_in_parts_never_twice():
    usage = Usage()
    usage.add_prompt(5)
    assert usage.take_uncharged() == (5, 0)
    usage.add_completion(2, now=1.0)
    usage.add_completion(0, now=1.5)  # a response with no new token changes nothing
    usage.add_completion(3, now=2.0)
    assert usage.take_uncharged() == (0, 5)
    assert usage.take_uncharged() == (0, 0)
    usage.add_prompt(4)  # a second prompt of the same request (completions with a list of prompts)
    assert usage.take_uncharged() == (4, 0)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (9, 5, 14)


def test_token_timings():
    usage = Usage()
    usage.add_completion(1, now=10.0)
    usage.add_completion(1, now=10.25)
    usage.add_completion(2, now=11.0)
    assert usage.first_token_at == 10.0
    assert usage.take_gaps() == [0.25, 0.75] and usage.take_gaps() == []


def test_negative_counts_are_ignored():
    usage = Usage()
    usage.add_prompt(-3)
    usage.add_completion(-1)
    assert usage.total_tokens == 0 and usage.first_token_at is None
