"""report.py on its own (no stack): versions from the locks, the page's rows read back, and what the page check
finds in a whole or a partial run."""

from __future__ import annotations

import json
import re

import pytest

from tests.compat import report

FILE = "tests/compat/test_x.py"


def row(name: str, outcome: str = "passed", **fields) -> report.Row:
    values = {"client": "litellm", "version": "1.0", "feature": f"`{name}`", "result": "works", "detail": "",
              "caveat": "", "order": [int(name[-1])]} | fields
    return report.Row(test=f"{FILE}::{name}", outcome=outcome, **values)


def check(page: str, rows, compat_tests: int | None = None, collected=None) -> list[str]:
    collected = {r.test for r in rows} if collected is None else collected
    count = len(rows) if compat_tests is None else compat_tests
    return report.page_problems(page, rows, count, collected, {FILE})


def test_every_client_has_a_version_from_its_lock_or_venv():
    for key, client in report.CLIENTS.items():
        assert re.fullmatch(r"\d+(\.\d+)+\S*", client.version()), key
    pinned = [line for line in (report.REQUIREMENTS / "openai2.txt").read_text().splitlines()
              if line.startswith("openai==")]
    assert {f"openai=={report.CLIENTS['openai-python-2'].version()}"} == set(pinned)
    node = json.loads(report.NODE_LOCK.read_text())["packages"]["node_modules/openai"]["version"]
    assert report.CLIENTS["openai-node"].version() == node
    with pytest.raises(LookupError):
        report.locked("openai2", "no-such-package")()


def test_the_page_reads_back_the_rows_it_renders():
    rows = [row("test_a1", feature="a | b", caveat="mind the pipe"), row("test_b2", result="setting", detail="`x=1`")]
    page = report.render(rows)
    assert report.documented(page) == {r.test: report.row_line(r) for r in rows}
    assert "a \\| b" in page and "needs a setting: `x=1`" in page
    assert report.caveat_line(rows[0]) in page.splitlines()
    assert check(page, rows) == []


def test_a_whole_run_compares_the_whole_page():
    rows = [row("test_a1", caveat="one"), row("test_b2")]
    page = report.render(rows)
    assert check(page.replace("`test_b2` | works", "`test_b2` | refused"), rows)  # a changed row
    assert check(page + "- **LiteLLM (`litellm`)**: stale\n", rows)  # an extra caveat: only the whole page shows
    assert check(report.render(rows[:1]), rows)  # a missing row
    assert check(page.replace("# Client compatibility", "# Clients"), rows)


def test_a_partial_run_checks_only_its_own_rows():
    rows = [row("test_a1"), row("test_b2")]
    page = report.render(rows) + "- **LiteLLM (`litellm`)**: a caveat of a test that did not run\n"
    assert check(page, rows[:1], compat_tests=1, collected={rows[0].test}) == [
        f"{rows[1].test}: on the page, but there is no such test any more"]  # its file ran without it
    assert check(page, rows[:1], compat_tests=1, collected={r.test for r in rows}) == []  # deselected
    failed = [rows[0], row("test_b2", outcome="failed", result="broken", detail="now")]
    assert check(report.render(rows), failed) == []  # a failing test reports itself, not the page


def test_an_older_results_file_reads_as_no_results(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"rows": [{"test": "x", "line": 3}]}))
    assert report.load(path) == []
    report.dump([row("test_a1")], path)
    assert report.load(path) == [row("test_a1")]
