"""The playground (frontend/playground/) in headless Chromium: against the session's real tritonserver and
frontend for what the models answer, and against the app over FakeBackend for what only a fake can stage (a
model listed but not loaded, a model that answers with markup)."""

from __future__ import annotations

import json

import httpx
import pytest
from PIL import Image
from selenium.common.exceptions import JavascriptException
from selenium.webdriver.common.by import By

from frontend.app import create_app
from frontend.auth import hash_key
from frontend.settings import Settings
from tests.api.conftest import FakeBackend
from tests.browser.conftest import Page, serve
from tests.conftest import TRITON_API_SECRET
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

CHAT_MODEL = "smollm2-135m-instruct"
VISION_MODEL = "tiny-llava-random"
IMAGES_MODEL = "tiny-sd-random"
EMBEDDINGS_MODEL = "all-minilm-l6-v2"

# Records every text an answer's text element is set to, per MutationObserver callback (a callback sees the
# mutations of one task; each record keeps the text node it added, so nothing between two callbacks is lost).
OBSERVE = """
const target = document.querySelector(arguments[0]);
window.seen = [];
new MutationObserver((records) => {
  const texts = records.filter((r) => r.target.matches?.(".assistant .text")).flatMap((r) => [...r.addedNodes])
    .filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.data).filter((t) => t.length > 0);
  if (texts.length) window.seen.push({at: performance.now(), texts});
}).observe(target, {childList: true, subtree: true});
"""


def answered(page: Page, bubble: str) -> str:
    """Wait for the chat answer in `bubble` to end; its text (the page shows a failure in .error)."""
    page.wait_for(lambda d: page.find(bubble).get_attribute("data-state") in ("done", "error", "stopped"))
    assert page.find(bubble).get_attribute("data-state") == "done", page.text(".error:not([hidden])")
    return page.text(f"{bubble} .text")


def test_the_pickers_offer_the_loaded_models_of_each_kind(page, openai_client):
    by_task: dict[str, list[str]] = {}
    for model in openai_client.models.list().data:
        if (getattr(model, "status", None) or {"value": "loaded"})["value"] == "loaded":
            by_task.setdefault(model.task, []).append(model.id)
    assert page.options("#chat-form [name=model]") == sorted(by_task["chat"])
    assert page.options("#images-form [name=model]") == sorted(by_task["images"])
    assert page.options("#embeddings-form [name=model]") == sorted(by_task["embeddings"])
    assert page.options("#vision-form [name=model]") == [VISION_MODEL]  # the chat model that takes images
    assert CHAT_MODEL in by_task["chat"] and "tiny-reranker-random" in by_task["rerank"]  # no tab serves rerank
    assert page.find_all("nav .unavailable") == []
    assert page.console_errors() == []


def test_a_chat_answer_streams_in_and_equals_the_greedy_completion(page, openai_client):
    prompt = "Name three colors."
    page.fill("#chat-form [name=model]", CHAT_MODEL)
    page.fill("#chat-form [name=temperature]", 0)
    page.fill("#chat-form [name=max_tokens]", 24)
    page.fill("#chat-form [name=seed]", 7)
    page.fill("#chat-form [name=prompt]", prompt)
    page.driver.execute_script(OBSERVE, "#chat-transcript")
    page.find("#chat-form button[type=submit]").click()
    text = answered(page, "#chat-transcript .message.assistant")

    expected = openai_client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": prompt}], temperature=0, top_p=1, max_tokens=24,
        seed=7).choices[0].message.content
    assert text == expected and text
    seen = page.driver.execute_script("return window.seen")
    states = [t for batch in seen for t in batch["texts"]]
    assert states[-1] == text and all(text.startswith(state) for state in states)  # it grew, never rewritten
    assert len(seen) >= 2, f"the answer arrived in one piece: {seen}"
    assert "tokens" in page.text("#chat-transcript .message.assistant .meta")
    page.screenshot("chat")
    assert page.console_errors() == []


def test_a_generated_image_renders(page):
    page.tab("images")
    page.fill("#images-form [name=model]", IMAGES_MODEL)
    page.wait_for(lambda d: "64x64" in page.options("#images-form [name=size]"))
    assert page.options("#images-form [name=size]") == ["64x64", "128x128", "256x256", "512x512"]
    page.fill("#images-form [name=size]", "64x64")
    page.fill("#images-form [name=n]", 2)
    page.fill("#images-form [name=steps]", 2)
    page.fill("#images-form [name=seed]", 1)
    page.fill("#images-form [name=prompt]", "a red circle on a white background")
    page.find("#images-form button[type=submit]").click()
    page.wait_for(lambda d: page.find("#images-form").get_attribute("data-state") in ("done", "error"))
    images = page.find_all("#images-gallery img")
    assert len(images) == 2, page.text("#images-form .error")
    page.wait_for(lambda d: all(d.execute_script("return arguments[0].complete", img) for img in images))
    for img in images:
        assert page.driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                          img) == [64, 64]
    page.screenshot("images")
    assert page.console_errors() == []


def test_the_embeddings_demo_ranks_the_similar_sentence_first(page):
    page.tab("embeddings")
    page.fill("#embeddings-form [name=model]", EMBEDDINGS_MODEL)
    page.fill("#embeddings-form [name=query]", "How do I bake bread at home?")
    sentences = ["The stock market fell sharply on Monday.", "A simple recipe for baking a loaf of bread.",
                 "The cat is asleep on the sofa.", "Kubernetes schedules pods onto nodes."]
    page.fill("#embeddings-form [name=sentences]", "\n".join(sentences))
    page.find("#embeddings-form button[type=submit]").click()
    page.wait_for(lambda d: page.find("#embeddings-form").get_attribute("data-state") in ("done", "error"))
    ranked = [li.find_element(By.CSS_SELECTOR, ".sentence").text for li in page.find_all("#embeddings-ranking li")]
    assert ranked[0] == sentences[1] and sorted(ranked) == sorted(sentences), page.text("#embeddings-form .error")
    cells = page.find_all("#embeddings-matrix td")
    assert len(cells) == 16 and all(cells[i * 5].text == "1.00" for i in range(4))  # the diagonal
    page.screenshot("embeddings")
    assert page.console_errors() == []


def test_a_question_about_an_uploaded_image_gets_an_answer(page, tmp_path):
    picture = tmp_path / "square.png"
    Image.new("RGB", (48, 48), (200, 30, 30)).save(picture)
    page.tab("vision")
    page.fill("#vision-form [name=model]", VISION_MODEL)
    page.fill("#vision-form [name=max_tokens]", 8)
    page.find("#vision-form [name=image]").send_keys(str(picture))
    page.wait_for(lambda d: page.find("#vision-preview").is_displayed())
    page.fill("#vision-form [name=prompt]", "What color is this square?")
    page.find("#vision-form button[type=submit]").click()
    assert answered(page, "#vision-transcript .message.assistant").strip()  # random weights: any text
    page.screenshot("vision")
    assert page.console_errors() == []


def test_key_failures_read_as_the_apis_messages_and_the_key_stays_in_the_tab(browser, triton, tmp_path):
    keys = [{"name": "web", "key_sha256": hash_key("sk-web"), "scopes": ["inference"]},
            {"name": "ops", "key_sha256": hash_key("sk-ops"), "scopes": ["admin"]},
            {"name": "tight", "key_sha256": hash_key("sk-tight"), "scopes": ["inference"],
             "limits": {"requests_per_minute": 1}}]
    (tmp_path / "keys.json").write_text(json.dumps({"keys": keys}))
    settings = Settings(triton_grpc_url=triton.grpc_url, triton_api_secret=TRITON_API_SECRET,
                        api_keys_file=str(tmp_path / "keys.json"))
    with run_frontend(settings) as frontend:
        page = Page(browser, frontend.url)
        page.open(ready="error")  # the page itself needs no key (a new origin: nothing in sessionStorage)
        assert "401 Unauthorized: Missing API key" in page.text("#status")
        assert "Enter an API key" in page.text("#panel-chat .notice")
        assert page.find("#chat-form").is_displayed() is False

        def use(key: str, ready: str) -> str:
            page.fill("#api-key", key)
            page.find("#key-form button[type=submit]").click()
            page.wait_for(lambda d: page.body("data-ready") in ("true", "error"))
            assert page.body("data-ready") == ready, page.text("#status")
            return page.text("#status")

        assert "401 Unauthorized: Incorrect API key provided" in use("sk-wrong", "error")
        assert "403 Forbidden: This API key (`ops`) lacks the `inference` scope" in use("sk-ops", "error")
        assert use("sk-tight", "true").endswith("loaded.")  # /v1/models takes its one request a minute...
        status = use("sk-tight", "error")  # ...so the page's next look at the models is refused
        assert "429 Too many requests" in status and "retry after" in status
        assert use("sk-web", "true").endswith("loaded.")
        assert page.driver.execute_script("return [sessionStorage.getItem('modelgate.apiKey'), localStorage.length]") \
            == ["sk-web", 0]
        page.open()  # a reload in the same tab keeps the key
        assert page.find("#api-key").get_attribute("value") == "sk-web"
        page.find("#forget-key").click()
        page.wait_for(lambda d: page.body("data-ready") == "error")
        assert page.driver.execute_script("return sessionStorage.length") == 0
        assert page.console_errors() == []


@pytest.fixture
def fake(browser):
    """The app over FakeBackend (chat model `llm`, embeddings model `emb`) in the browser."""
    backend = FakeBackend()
    with serve(create_app(Settings(model_index_ttl_s=0, load_on_demand=True), backend=backend)) as url:
        yield backend, Page(browser, url)


def test_models_listed_but_not_loaded_are_not_offered_and_empty_tabs_say_why(fake):
    backend, page = fake
    httpx.get(page.url + "/v1/models").raise_for_status()  # seen loaded once: then listed when unloaded
    backend.states["emb"] = "UNAVAILABLE"
    listed = {m["id"]: m["status"]["value"] for m in httpx.get(page.url + "/v1/models").json()["data"]}
    assert listed == {"llm": "loaded", "emb": "unloaded"}
    page.open()
    assert page.options("#chat-form [name=model]") == ["llm"]
    for tab, why in [("embeddings", "No embeddings model is loaded"), ("images", "No image generation model"),
                     ("vision", "No loaded chat model takes images")]:
        assert page.find(f"#tab-{tab}").get_attribute("aria-disabled") == "true"
        page.tab(tab)
        assert page.find(f"#panel-{tab} .notice").text.startswith(why)
        assert page.find(f"#{tab}-form").is_displayed() is False


def test_model_output_is_shown_as_text_never_as_markup(fake):
    backend, page = fake
    backend.llm.script = ['<img src="x" id="injected">', "<script>window.injected = 1</script>", " **bold**"]
    backend.llm.delay_s = 0.05
    page.open()
    page.fill("#chat-form [name=max_tokens]", 8)
    page.fill("#chat-form [name=prompt]", "<b id=\"bold\">hello</b>")
    page.find("#chat-form button[type=submit]").click()
    assert answered(page, "#chat-transcript .message.assistant") == "".join(backend.llm.script)
    assert page.text("#chat-transcript .message.user .text") == "<b id=\"bold\">hello</b>"
    assert page.find_all("#injected, #bold, #chat-transcript script") == []
    assert page.driver.execute_script("return window.injected") is None
    assert page.console_errors() == []  # no CSP or Trusted Types violation on the way
    with pytest.raises(JavascriptException, match="TrustedHTML"):  # the CSP itself refuses any HTML sink
        page.driver.execute_script("document.querySelector('#status').innerHTML = '<b>x</b>'")


def test_a_stream_can_be_stopped_and_an_error_mid_stream_reads_as_its_message(fake):
    backend, page = fake
    backend.llm.script = [" one", " two", " three", " four"]
    backend.llm.delay_s = 0.5
    page.open()
    page.fill("#chat-form [name=max_tokens]", 8)
    page.fill("#chat-form [name=prompt]", "count")
    page.find("#chat-form button[type=submit]").click()
    page.wait_for(lambda d: page.text("#chat-transcript .assistant .text"))
    page.find("#chat-form [data-action=stop]").click()
    page.wait_for(lambda d: page.find("#chat-transcript .assistant").get_attribute("data-state") == "stopped")
    page.wait_for(lambda d: backend.llm.closed_early == 1, timeout=10)  # the server cancelled the generation

    backend.llm.delay_s, backend.llm.fail_after = 0.0, 1
    page.find("#chat-form [data-action=clear]").click()
    page.fill("#chat-form [name=prompt]", "count again")
    page.find("#chat-form button[type=submit]").click()
    page.wait_for(lambda d: page.find("#chat-transcript .assistant").get_attribute("data-state") == "error")
    assert page.text("#chat-form .error") == "generation failed for this request; please retry"
    assert page.find("#chat-form [name=prompt]").get_attribute("value") == "count again"  # to send again
    assert page.console_errors() == []
