"""Client compatibility against the session's real stack, and docs/compatibility.md generated from it.

Clients whose pins clash with the suite's venv (openai-python 2.x, instructor, LlamaIndex, LiteLLM) run in a venv
of their own (envs.py) as scripts (clients/); LangChain, the Agents SDK and the latest openai-python run in the
suite's venv; the Node SDK from tests/node. Each test carries a `compat` mark (report.py), plugin.py records the
outcomes, `python -m tests.compat.report` renders the page, test_compatibility_page.py keeps it true."""
