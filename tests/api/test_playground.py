"""The playground's files (frontend/routers/playground.py): served open, under a strict CSP, with their types;
off by setting; a page that runs under that CSP (no inline script, no eval, no HTML sinks) and ships in the wheel.
What it does in a browser: tests/browser/test_playground.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from frontend.app import create_app
from frontend.routers.playground import FOLDER
from frontend.settings import Settings
from tests.api.conftest import assert_error

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(FOLDER.glob("*.js"))
TYPES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
         "icon.svg": "image/svg+xml"}


@pytest.fixture
def settings() -> Settings:
    return Settings(model_index_ttl_s=0, api_keys="sk-web")  # keys on: the page must still load without one


def directives(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return dict((part.strip().split(" ", 1) + [""])[:2] for part in policy.split(";"))


def assert_hardened(response: httpx.Response) -> None:
    csp = directives(response)
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'" and csp["connect-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"
    assert csp["require-trusted-types-for"] == "'script'"
    assert not any("unsafe" in value or "*" in value for value in csp.values())
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_the_page_is_open_and_hardened(client):
    r = await client.get("/")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>modelgate playground</title>" in r.text
    assert_hardened(r)
    assert_error(await client.get("/v1/models"), 401)  # the API behind it still wants a key


@pytest.mark.parametrize("name", sorted(TYPES))
async def test_each_file_has_its_type_and_the_same_headers(client, name):
    r = await client.get(f"/playground/{name}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == TYPES[name]
    assert r.content == (FOLDER / name).read_bytes()
    assert_hardened(r)
    again = await client.get(f"/playground/{name}", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


async def test_every_module_is_served_as_javascript(client):
    for script in SCRIPTS:
        r = await client.get(f"/playground/{script.name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript"), script.name


@pytest.mark.parametrize("path", ["/playground/", "/playground/index.html", "/playground/../settings.py",
                                  "/playground/%2e%2e/settings.py", "/playground/nothing.js", "/index.html"])
async def test_nothing_else_is_served(client, path):
    assert_error(await client.get(path), 404, code="unknown_url")


async def test_the_setting_turns_it_off(backend):
    app = create_app(Settings(model_index_ttl_s=0, playground=False), backend=backend)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client):
        for path in ("/", "/playground/app.js"):
            assert_error(await client.get(path), 404, code="unknown_url")
        assert (await client.get("/v1/models")).status_code == 200


def test_the_setting_reads_the_environment(monkeypatch):
    assert Settings(_env_file=None).playground is True
    monkeypatch.setenv("MODELGATE_PLAYGROUND", "false")
    assert Settings(_env_file=None).playground is False


async def test_the_page_is_not_in_the_api_reference(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/playground")]


class Markup(HTMLParser):
    """What in index.html a strict CSP would block: inline scripts, handlers, styles; and what it loads."""

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._tag: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tag = tag
        self.inline += [f"<{tag} {name}>" for name in attrs if name.startswith("on") or name == "style"]
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script" and not attrs.get("src"):
            self.inline.append("<script> without src")
        self.loads += [attrs[a] for a in ("src", "href") if tag in ("script", "link") and attrs.get(a)]
        if any(str(v).lower().startswith("javascript:") for v in attrs.values()):
            self.inline.append(f"<{tag}> with a javascript: URL")

    def handle_data(self, data):
        if self._tag == "script" and data.strip():
            self.inline.append("script content")


async def test_the_page_has_nothing_inline_and_loads_only_its_own_files(client):
    markup = Markup()
    markup.feed((FOLDER / "index.html").read_text())
    assert markup.inline == []
    # Relative to the page, so that it also works behind a proxy that serves the API under a path prefix.
    assert sorted(markup.loads) == ["playground/app.js", "playground/icon.svg", "playground/style.css"]
    for path in markup.loads:
        assert (await client.get("/" + path)).status_code == 200


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_scripts_use_no_eval_no_html_sink_and_no_other_origin(script):
    source = script.read_text()
    for banned in ("eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                   "localStorage", "setAttribute(\"on", "http://", "https://", "XMLHttpRequest", "WebSocket"):
        assert banned not in source, f"{script.name} uses {banned}"
    assert not re.search(r"set(Timeout|Interval)\(\s*[\"'`]", source)  # strings run as code
    for module in re.findall(r"from \"([^\"]+)\"", source):  # relative modules that exist: no bundler, no CDN
        assert module.startswith("./") and (FOLDER / module[2:]).is_file(), module


def test_the_files_ship_in_the_wheel(tmp_path):
    """`pip install .` (the frontend image) installs the playground: it is package data, not only in the tree."""
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "frontend", tmp_path / "frontend", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", tmp_path / "dist", tmp_path], check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.startswith("frontend/playground/")}
    assert packaged == {f"frontend/playground/{p.name}" for p in FOLDER.iterdir() if p.is_file()}
