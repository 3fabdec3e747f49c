"""The pytest plugin behind docs/compatibility.md: records each compatibility test's outcome with its `compat`
mark (or its EXTERNAL entry) and the client's version, runs the page check last, and writes the results.

tests/compat/conftest.py registers it as a plain plugin, not as conftest hooks, so that it sees the tests it
names elsewhere in the suite too (a conftest's test hooks only see the tests below it). It is active whenever
tests/compat is collected: `make test`, or any run that names a file in it.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

import pytest

from tests.compat import report

NAME = "modelgate-compat"
PAGE_MARK = "compat_page"  # the page check: runs after every other test of the session


class Recorder:
    def __init__(self, config: pytest.Config):
        self.root = Path(config.rootpath)
        self.specs: dict[str, tuple[dict, list, dict]] = {}  # node id -> (mark kwargs, order, params)
        self.outcomes: dict[str, str] = {}
        self.collected: set[str] = set()  # every node id collected, deselected ones included
        self.files: set[str] = set()  # the files they came from

    # -- collection --
    def pytest_deselected(self, items) -> None:
        self._saw(items)

    @pytest.hookimpl(trylast=True)  # after -k/-m deselection and other plugins' reordering
    def pytest_collection_modifyitems(self, items) -> None:
        self._saw(items)
        for item in items:
            mark = item.get_closest_marker(report.MARK)
            spec = mark.kwargs if mark else report.EXTERNAL.get(item.nodeid)
            if spec is not None:
                callspec = getattr(item, "callspec", None)  # parametrized: its parameters, in their order
                order = [item.location[1] + 1, *(callspec.indices.values() if callspec else ())]
                self.specs[item.nodeid] = (spec, order, dict(callspec.params) if callspec else {})
        last = [item for item in items if item.get_closest_marker(PAGE_MARK)]
        items[:] = [item for item in items if not item.get_closest_marker(PAGE_MARK)] + last

    def _saw(self, items) -> None:
        for item in items:
            self.collected.add(item.nodeid)
            self.files.add(item.nodeid.split("::")[0])

    # -- outcomes --
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid not in self.specs:
            return
        if report.failed:
            self.outcomes[report.nodeid] = "failed"
        elif report.skipped and self.outcomes.get(report.nodeid) != "failed":
            self.outcomes[report.nodeid] = "skipped"
        elif report.when == "call" and report.passed:
            self.outcomes.setdefault(report.nodeid, "passed")

    def rows(self) -> list[report.Row]:
        """This session's rows so far: the compatibility tests that ran, with their outcomes."""
        return report.sort(report.Row.of(test, spec, order, params, self.outcomes[test])
                           for test, (spec, order, params) in self.specs.items() if test in self.outcomes)

    # -- results --
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        rows = self.rows()
        if not rows:
            return
        path = report.results_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "w") as held:  # parallel sessions merge in turn
            fcntl.flock(held, fcntl.LOCK_EX)
            ran = {row.test for row in rows}
            kept = [row for row in report.load(path)
                    if row.test not in ran and self._may_still_exist(row.test) and row.client in report.CLIENTS]
            report.dump(kept + rows, path, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        this_run=len(rows), kept_from_earlier_runs=len(kept))

    def _may_still_exist(self, test: str) -> bool:
        """False for a test whose file is gone, or whose file this session collected without it."""
        file = test.split("::")[0]
        if not (self.root / file).exists():
            return False
        return file not in self.files or test in self.collected


def register(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(NAME):
        config.pluginmanager.register(Recorder(config), NAME)


def recorder(config: pytest.Config) -> Recorder:
    return config.pluginmanager.get_plugin(NAME)
