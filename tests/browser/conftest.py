"""The playground in a real headless Chromium: the system's `chromium` and `chromedriver` (Debian's packages,
installed by the set-up itself when missing, as tests/stack.py installs redis-server), driven by Selenium. No
browser is ever downloaded: Selenium is given both paths, so its driver manager never runs.

MODELGATE_SCREENSHOTS=1 writes docs/playground-<tab>.png from the tests that fill each tab (CI leaves docs alone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from launcher.triton import free_port

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = os.environ.get("MODELGATE_SCREENSHOTS", "").lower() in ("1", "true", "yes")
WAIT_S = 120  # a model answer on two busy CPU cores
WINDOW = (1200, 900)


def chromium_binaries() -> tuple[str, str]:
    """(chromium, chromedriver), installed from Debian's packages when missing (root and apt-get), else a skip."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if all(found):
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium and chromedriver are missing and cannot be installed here (needs root and apt-get: "
                    "apt-get install chromium chromium-driver)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=True, env=env,
                   capture_output=True, timeout=900)
    return shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the session; each test opens the page afresh."""
    binary, driver = chromium_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 # no connection leaves the machine (the network is closed here, and a test needs none)
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--window-size={},{}".format(*WINDOW), "--force-prefers-reduced-motion",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


class Page:
    """The playground open in the browser, with what the tests do to it."""

    def __init__(self, driver: webdriver.Chrome, url: str):
        self.driver = driver
        self.url = url

    def open(self, ready: str = "true") -> Page:
        self.driver.get(self.url + "/")
        self.driver.get_log("browser")  # start each page with an empty console
        self.wait_for(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") in ("true", "error"))
        assert self.body("data-ready") == ready, self.text("#status")
        return self

    def body(self, attribute: str) -> str | None:
        return self.driver.find_element(By.TAG_NAME, "body").get_attribute(attribute)

    def find(self, selector: str):
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def find_all(self, selector: str):
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        return self.driver.execute_script("return document.querySelector(arguments[0]).textContent", selector)

    def tab(self, name: str) -> None:
        self.find(f"#tab-{name}").click()

    def fill(self, selector: str, value) -> None:
        """Set a field's value as a user would leave it (inputs, textareas and selects alike)."""
        self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); e.value = arguments[1];"
            "e.dispatchEvent(new Event('change', {bubbles: true}))", selector, str(value))
        assert self.find(selector).get_attribute("value") == str(value), f"{selector} has no option {value!r}"

    def options(self, selector: str) -> list[str]:
        return [o.get_attribute("value") for o in self.find(selector).find_elements(By.TAG_NAME, "option")]

    def wait_for(self, condition, timeout: float = WAIT_S):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition)
        except TimeoutException:
            raise AssertionError(f"timed out; status: {self.text('#status')!r}; errors: "
                                 f"{[e.text for e in self.find_all('.error') if e.text]}; "
                                 f"console: {self.driver.get_log('browser')}") from None

    def console_errors(self) -> list[str]:
        """What the page logged at SEVERE (a CSP violation, an uncaught error); failed API calls excluded, as
        the page shows those itself."""
        return [e["message"] for e in self.driver.get_log("browser")
                if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]

    def screenshot(self, name: str) -> None:
        if SCREENSHOTS:  # the whole page, at the window's width
            chrome, height = self.driver.execute_script(
                "return [window.outerHeight - window.innerHeight, document.documentElement.scrollHeight]")
            self.driver.set_window_size(self.driver.get_window_size()["width"], chrome + height)
            self.driver.save_screenshot(str(ROOT / "docs" / f"playground-{name}.png"))
            self.driver.set_window_size(*WINDOW)


@pytest.fixture
def page(browser, frontend) -> Page:
    """The session frontend's playground, loaded with its models listed."""
    return Page(browser, frontend.url).open()


@contextmanager
def serve(app) -> Iterator[str]:
    """An app under uvicorn in a thread on a free port (tests/stack.run_frontend, for an app built here)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
