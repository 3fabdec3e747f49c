"""docs/compatibility.md says what the compatibility tests found: run after every other test of the session
(plugin.py moves it last), it compares the page with what this session's results render
(report.py `page_problems`):

- Every compatibility test that passed in this session has its row on the page, exactly as rendered (client,
  version from the lock, feature, result, test), and its caveat among the caveats.
- No row on the page names a test that this session collected the file of, but not the test (renamed, gone).
- When every test on the page and every compatibility test of the session passed (`make test`), the whole page
  equals the rendering, byte for byte (order, header, no extra rows or caveats).

A test that failed or was skipped is left out: its own failure says more. To bring the page up to date:
`python -m tests.compat.report` (it renders build/compat/results.json, which the session writes at its end)."""

from __future__ import annotations

import pytest

from tests.compat import plugin, report


@pytest.mark.compat_page
def test_the_compatibility_page_says_what_the_tests_found(request):
    recorder = plugin.recorder(request.config)
    rows = recorder.rows()
    if not any(row.outcome == "passed" for row in rows):
        pytest.skip("no compatibility test passed in this session")
    page = report.PAGE.read_text() if report.PAGE.exists() else ""
    problems = report.page_problems(page, rows, len(recorder.specs), recorder.collected, recorder.files)
    assert not problems, ("docs/compatibility.md is out of date: run `python -m tests.compat.report` after this "
                          "run to render it from its results (build/compat/results.json):\n" + "\n".join(problems))
