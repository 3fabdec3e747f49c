// The playground's entry module: the API key, the tabs, and which loaded models each tab offers.

import {apiKey, get, setApiKey} from "./api.js";
import {setupChat} from "./chat.js";
import {setupEmbeddings} from "./embeddings.js";
import {setupImages} from "./images.js";
import {loadedByTask, takesImages} from "./models.js";
import {fillModels} from "./ui.js";
import {setupVision} from "./vision.js";

const HOW_TO_LOAD = "Load one with POST /admin/models/load, or start the server with it.";
const MISSING = {
  chat: `No chat model is loaded. ${HOW_TO_LOAD}`,
  images: `No image generation model is loaded. ${HOW_TO_LOAD}`,
  embeddings: `No embeddings model is loaded. ${HOW_TO_LOAD}`,
  vision: `No loaded chat model takes images (a model whose config says supports_images). ${HOW_TO_LOAD}`,
};
const TABS = Object.keys(MISSING);

const $ = (selector) => document.querySelector(selector);
const status = $("#status");
let images = null;
let loads = 0; // the latest loadModels() wins when a new key is entered while one is still running

function showTab(name) {
  for (const tab of TABS) {
    $(`#tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`#panel-${tab}`).hidden = tab !== name;
  }
}

/** Offer `models` in a tab, or explain why the tab has nothing to offer. */
function offer(tab, models, why = MISSING[tab]) {
  const panel = $(`#panel-${tab}`);
  const usable = models.length > 0;
  fillModels(panel.querySelector("select[name=model]"), models);
  panel.querySelector("form").hidden = !usable;
  const notice = panel.querySelector(".notice");
  notice.textContent = usable ? "" : why;
  notice.hidden = usable;
  const button = $(`#tab-${tab}`);
  button.classList.toggle("unavailable", !usable);
  button.setAttribute("aria-disabled", String(!usable));
  button.title = usable ? "" : why;
}

async function loadModels() {
  const run = ++loads;
  document.body.dataset.ready = "loading";
  status.textContent = "Loading models…";
  status.classList.remove("failed");
  try {
    const byTask = loadedByTask(await get("v1/models"));
    const chat = byTask.chat || [];
    const seeing = await Promise.all(chat.map(takesImages));
    if (run !== loads) return;
    offer("chat", chat);
    offer("images", byTask.images || []);
    offer("embeddings", byTask.embeddings || []);
    offer("vision", chat.filter((_, i) => seeing[i]));
    await images.offerSizes();
    const count = Object.values(byTask).reduce((n, models) => n + models.length, 0);
    status.textContent = `${count} model${count === 1 ? "" : "s"} loaded.`;
    document.body.dataset.ready = "true";
  } catch (e) {
    if (run !== loads) return;
    const why = `Could not list the models: ${e.message.replace(/[.\s]*$/, ".")}` +
      (e.status === 401 || e.status === 403 ? " Enter an API key with the inference scope above." : "");
    for (const tab of TABS) offer(tab, [], why);
    status.textContent = why;
    status.classList.add("failed");
    document.body.dataset.ready = "error";
  }
}

function setupKey() {
  const form = $("#key-form");
  const input = $("#api-key");
  input.value = apiKey();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    loadModels();
  });
  $("#forget-key").addEventListener("click", () => {
    input.value = "";
    setApiKey("");
    loadModels();
  });
}

for (const tab of TABS) $(`#tab-${tab}`).addEventListener("click", () => showTab(tab));
setupKey();
setupChat($("#chat-form"));
images = setupImages($("#images-form"));
setupEmbeddings($("#embeddings-form"));
setupVision($("#vision-form"));
loadModels();
