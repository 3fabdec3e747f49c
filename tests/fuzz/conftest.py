"""The fuzzing run's totals in pytest's summary: how many requests schemathesis sent, and how many 5xx."""

from tests.fuzz.hooks import ANSWERS


def pytest_terminal_summary(terminalreporter):
    if ANSWERS:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(ANSWERS.items()))
        terminalreporter.write_line(f"schemathesis: {sum(ANSWERS.values())} requests ({counts}); "
                                    f"5xx: {ANSWERS.get('5xx', 0)}")
