"""Stop strings across token boundaries: never emitted, held back while they may be starting."""

from __future__ import annotations

from triton_models.llm.stops import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> list[str]:
    return [matcher.feed(p) for p in pieces]


def test_without_stops_text_passes_through():
    assert feed_all(StopMatcher([]), ["a", "b"]) == ["a", "b"]


def test_stop_inside_one_piece_cuts_before_it():
    m = StopMatcher(["STOP"])
    assert m.feed("hello STOP world") == "hello "
    assert m.stopped and m.feed("more") == "" and m.flush() == ""


def test_stop_split_over_pieces_is_held_then_dropped():
    m = StopMatcher(["STOP"])
    assert feed_all(m, ["ab", "cS", "TO"]) == ["ab", "c", ""]
    assert not m.stopped
    assert m.feed("Pxyz") == ""
    assert m.stopped


def test_false_start_is_released():
    m = StopMatcher(["STOP"])
    assert feed_all(m, ["S", "T", "unny"]) == ["", "", "STunny"]


def test_flush_releases_held_text_at_the_end():
    m = StopMatcher(["</s>"])
    assert m.feed("done <") == "done "
    assert m.flush() == "<"


def test_earliest_of_several_stops_wins():
    m = StopMatcher(["world", "lo"])
    assert m.feed("hello world") == "hel"


def test_held_suffix_is_the_longest_possible_prefix():
    m = StopMatcher(["abcd", "cx"])
    assert m.feed("zabc") == "z"  # "abc" may start "abcd" ("c" alone may start "cx")
    assert m.feed("x") == "ab"  # "abcx" contains "cx": emit up to it
    assert m.stopped
