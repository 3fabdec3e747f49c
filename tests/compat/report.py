"""docs/compatibility.md, rendered from the compatibility tests' results.

A compatibility test carries a `compat` mark (`compat(client, feature, ...)` below): which client, which
feature, and what the test shows of it (works, needs a setting, refused by design, refused by the client, does
not work), with the caveat users meet. Tests outside tests/compat that prove a client (the Agents SDK, LangChain
structured outputs, the Node SDK basics) are named in EXTERNAL instead, so their files need no mark.
tests/compat/plugin.py records each one's outcome in the session, with the client's version (from its env's
lock, the Node lock or the suite's venv), and writes them to build/compat/results.json
(MODELGATE_COMPAT_RESULTS elsewhere), merged over earlier runs.

    python -m tests.compat.report            # docs/compatibility.md from build/compat/results.json
    python -m tests.compat.report --check    # exit 1 when the page differs from what the results render

tests/compat/test_compatibility_page.py, run last in a session, fails when the page differs from what that
session's results render (the rows whose tests ran, or the whole page when every one ran).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "compatibility.md"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements"
NODE_LOCK = ROOT / "tests" / "node" / "package-lock.json"
MARK = "compat"


def results_path() -> Path:
    return Path(os.environ.get("MODELGATE_COMPAT_RESULTS") or ROOT / "build" / "compat" / "results.json")


# ---- where each client's version comes from ----------------------------------------------------------------

def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(dist: str):
    """The version in the suite's venv (the one running pytest)."""
    return lambda: importlib.metadata.version(dist)


def locked(env: str, dist: str):
    """The version pinned by tests/compat/requirements/<env>.txt (what that env runs)."""
    def version() -> str:
        for line in (REQUIREMENTS / f"{env}.txt").read_text().splitlines():
            name, _, pinned = line.partition("==")
            if pinned and _normal(name) == _normal(dist):
                return pinned.strip()
        raise LookupError(f"{dist} is not pinned in tests/compat/requirements/{env}.txt")
    return version


def node_locked(package: str):
    """The version tests/node/package-lock.json installs."""
    return lambda: json.loads(NODE_LOCK.read_text())["packages"][f"node_modules/{package}"]["version"]


@dataclass(frozen=True)
class Client:
    name: str
    version: object  # () -> str


# In the table's order.
CLIENTS = {
    "openai-python": Client("openai-python (`openai`)", installed("openai")),
    "openai-python-2": Client("openai-python 2.x (`openai`)", locked("openai2", "openai")),
    "openai-node": Client("openai-node (`openai` on npm)", node_locked("openai")),
    "langchain": Client("LangChain (`langchain-openai`)", installed("langchain-openai")),
    "llamaindex-llm": Client("LlamaIndex (`llama-index-llms-openai-like`)",
                             locked("llamaindex", "llama-index-llms-openai-like")),
    "llamaindex-embeddings": Client("LlamaIndex (`llama-index-embeddings-openai`)",
                                    locked("llamaindex", "llama-index-embeddings-openai")),
    "llamaindex-core": Client("LlamaIndex (`llama-index-core`)", locked("llamaindex", "llama-index-core")),
    "litellm": Client("LiteLLM (`litellm`)", locked("litellm", "litellm")),
    "instructor": Client("instructor", locked("instructor", "instructor")),
    "openai-agents": Client("OpenAI Agents SDK (`openai-agents`)", installed("openai-agents")),
}

RESULTS = {  # kind -> how the table says it; the detail follows after a colon
    "works": "works",
    "setting": "needs a setting",
    "refused": "refused by design",
    "client": "refused by the client",
    "broken": "does not work",
}


def compat(client: str, feature: str, *, setting: str | None = None, refused: str | None = None,
           client_refuses: str | None = None, broken: str | None = None, caveat: str | None = None):
    """The mark of a compatibility test. `feature` may name the test's parameters (`{prefix}`). At most one of
    `setting` (which one), `refused` (why the server refuses it), `client_refuses` (the client's own check),
    `broken` (what goes wrong); none: it works. `caveat`: what users meet, for the page's caveats."""
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}: add it to tests/compat/report.py CLIENTS")
    given = {k: v for k, v in (("setting", setting), ("refused", refused), ("client", client_refuses),
                               ("broken", broken)) if v}
    if len(given) > 1:
        raise ValueError(f"one result per test, got {sorted(given)}")
    (kind, detail), = given.items() or [("works", "")]
    return getattr(pytest.mark, MARK)(client=client, feature=feature, result=kind, detail=detail,
                                      caveat=caveat or "")


def _spec(mark) -> dict:
    return mark.kwargs


# Tests elsewhere in the suite that prove a client, by node id (their files carry no mark).
_INTEGRATION = "tests/integration/"
EXTERNAL = {
    f"{_INTEGRATION}test_node_sdk.py::test_models_list_pages_through_the_served_models":
        _spec(compat("openai-node", "`models.list` (paged), extension fields `task`, `max_model_len`")),
    f"{_INTEGRATION}test_node_sdk.py::test_chat_plain_and_streamed_give_the_same_greedy_answer":
        _spec(compat("openai-node", "`chat.completions.create`, plain and `stream: true` with usage")),
    f"{_INTEGRATION}test_node_sdk.py::test_embeddings_decode_to_the_python_sdks_vectors":
        _spec(compat("openai-node", "`embeddings.create` (base64 by default, decoded by the SDK; `float`)")),
    f"{_INTEGRATION}test_node_sdk.py::test_errors_reach_the_sdk_as_its_typed_errors":
        _spec(compat("openai-node", "errors as the SDK's typed errors (`NotFoundError`, code, param, request id)")),
    f"{_INTEGRATION}test_node_sdk.py::test_a_browser_page_can_use_the_sdk":
        _spec(compat("openai-node", "in a browser page (`dangerouslyAllowBrowser`): CORS preflight and headers",
                     setting="`MODELGATE_CORS_ORIGINS` on the server (off by default; docs/api-extras.md)")),
    f"{_INTEGRATION}test_clients_structured.py::test_with_structured_output_returns_the_pydantic_object":
        _spec(compat("langchain", "`ChatOpenAI.with_structured_output(PydanticModel)`")),
    f"{_INTEGRATION}test_clients_structured.py::test_bind_tools_agent_loop_with_a_calculator":
        _spec(compat("langchain", "`ChatOpenAI.bind_tools` agent loop (forced tool, `ToolMessage`, final answer)")),
    f"{_INTEGRATION}test_responses.py::test_the_agents_sdk_runs_with_its_default_model_class":
        _spec(compat("openai-agents", "`Agent` + `Runner` on the default model (Responses API): text, "
                     "`output_type`, function tools, `run_streamed`")),
    f"{_INTEGRATION}test_clients_structured.py::test_the_agents_sdk_on_chat_completions_with_a_tool_and_an_output_type":
        _spec(compat("openai-agents", "`OpenAIChatCompletionsModel`: function tool, `output_type`")),
}


# ---- rows ----------------------------------------------------------------------------------------------------

@dataclass
class Row:
    test: str  # pytest node id
    client: str
    version: str
    feature: str
    result: str
    detail: str
    caveat: str
    outcome: str  # passed, failed, skipped
    order: list  # the test's line in its file, then its parameters' indices: rows keep the source order

    @classmethod
    def of(cls, test: str, spec: dict, order: list, params: dict | None = None, outcome: str = "") -> Row:
        feature = spec["feature"].format(**params) if params else spec["feature"]
        return cls(test=test, client=spec["client"], version=str(CLIENTS[spec["client"]].version()),
                   feature=feature, result=spec["result"], detail=spec["detail"], caveat=spec["caveat"],
                   outcome=outcome, order=list(order))

    def key(self) -> tuple:
        return list(CLIENTS).index(self.client), self.test.split("::")[0], self.order, self.test


def sort(rows) -> list[Row]:
    return sorted(rows, key=Row.key)


SCHEMA = 1  # of the results file; another one (an older checkout's) is read as no results


def load(path: Path | None = None) -> list[Row]:
    path = path or results_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return []
    return [Row(**row) for row in data["rows"]]


def dump(rows, path: Path, **about) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"schema": SCHEMA, "about": about, "rows": [asdict(r) for r in sort(rows)]}, indent=1)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text + "\n")
    temporary.replace(path)


# ---- the page ------------------------------------------------------------------------------------------------

HEADER = """\
# Client compatibility

Which OpenAI clients and frameworks work against modelgate, at which version, and what they need. **Generated**:
every row is a test in the suite (last column) run against the real stack (tritonserver and the frontend, with
`smollm2-135m-instruct`, `all-minilm-l6-v2` and `tiny-sd-random`); `make test` runs them all. Each checks values,
not only status codes: greedy answers equal the openai-python SDK's, streamed text equals the plain answer,
vectors and image bytes (same seed) equal the SDK's, retrieval finds the right passage.
Clients whose pins clash with the suite's run in their own venvs, built from the locks in
`tests/compat/requirements/` (`tests/compat/envs.py`); the Node SDK from `tests/node/package-lock.json`.
The page is rendered from the results (`python -m tests.compat.report`, after a test run) and a test fails when
it says something else than the tests found (`tests/compat/test_compatibility_page.py`).

Results: **works**; **needs a setting** (which: without it, see the caveats); **refused by design** (the
server answers 400 naming the field, and why); **refused by the client** (the client's own check, before any
request; the workaround is in the caveats); **does not work** (what goes wrong).
"""

TABLE_HEAD = "| client | version | feature | result | test |\n|---|---|---|---|---|\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def result_text(row: Row) -> str:
    text = RESULTS[row.result] + (f": {row.detail}" if row.detail else "")
    if row.outcome != "passed":
        text = f"**{row.outcome} in the last run** ({text})"
    return text


def test_label(test: str) -> str:
    return test.removeprefix("tests/")


def row_line(row: Row) -> str:
    cells = (CLIENTS[row.client].name, row.version, row.feature, result_text(row), f"`{test_label(row.test)}`")
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def caveat_line(row: Row) -> str:
    return f"- **{CLIENTS[row.client].name}**: {row.caveat}"


def render(rows) -> str:
    rows = sort(rows)
    lines = [row_line(r) for r in rows]
    caveats = list(dict.fromkeys(caveat_line(r) for r in rows if r.caveat))
    return (f"{HEADER}\n{TABLE_HEAD}" + "\n".join(lines) + "\n\n## Caveats\n\n" + "\n".join(caveats) + "\n")


_LABEL = re.compile(r"\| `([^`]+)` \|$")


def documented(page: str) -> dict[str, str]:
    """The page's rows by test node id."""
    rows = {}
    for line in page.splitlines():
        found = _LABEL.search(line) if line.startswith("| ") else None
        if found:
            rows[f"tests/{found.group(1)}"] = line
    return rows


def page_problems(page: str, rows, compat_tests: int, collected: set[str], files: set[str]) -> list[str]:
    """How `page` differs from what a session's results render. `rows`: the session's rows; `compat_tests`: how
    many compatibility tests it ran; `collected`: every test id it collected (deselected ones too); `files`:
    their files. Rows that did not pass are left out (their own failure says more); the whole page is compared
    only when every test on it and every compatibility test of the session passed."""
    passed = [row for row in rows if row.outcome == "passed"]
    on_page = documented(page)
    problems = []
    for row in passed:
        line = row_line(row)
        if on_page.get(row.test) != line:
            problems.append(f"{row.test}:\n  page:     {on_page.get(row.test, '(no row)')}\n  rendered: {line}")
        if row.caveat and caveat_line(row) not in page.splitlines():
            problems.append(f"{row.test}: caveat missing: {caveat_line(row)}")
    for test in on_page:
        if test.split("::")[0] in files and test not in collected:
            problems.append(f"{test}: on the page, but there is no such test any more")
    complete = len(passed) == compat_tests and set(on_page) <= {row.test for row in passed}
    if not problems and complete and page != render(passed):
        problems.append("every row matches, but the page is not what they render: another order, an extra "
                        "caveat or row, or another header")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.compat.report", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=None, help=f"default: {results_path()}")
    parser.add_argument("--output", type=Path, default=PAGE)
    parser.add_argument("--check", action="store_true", help="exit 1 when the page differs; write nothing")
    args = parser.parse_args(argv)
    path = args.results or results_path()
    if not path.exists():
        print(f"no results at {path}: run the compatibility tests first (make test, or pytest tests/compat)",
              file=sys.stderr)
        return 2
    rows = load(path)
    if not rows:
        print(f"{path} holds no results this version can read: run the compatibility tests again",
              file=sys.stderr)
        return 2
    text = render(rows)
    old = args.output.read_text() if args.output.exists() else ""
    dropped = sorted(set(documented(old)) - {r.test for r in rows})
    for test in dropped:
        print(f"note: {test} is on the page but has no result in {path}; its row goes", file=sys.stderr)
    failed = [r.test for r in rows if r.outcome != "passed"]
    for test in failed:
        print(f"note: {test} did not pass in its last run", file=sys.stderr)
    if args.check:
        if text != old:
            print(f"{args.output} differs from what {path} renders: run python -m tests.compat.report",
                  file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"{args.output}: {len(rows)} rows from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
