// Embeddings: sentences ranked by cosine similarity to a query, and the sentences' cosine matrix.

import {post} from "./api.js";
import {clearError, el, showError} from "./ui.js";

const MAX_SENTENCES = 32;

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / (Math.sqrt(na * nb) || 1);
}

function ranking(list, query, sentences, vectors) {
  const scored = sentences.map((text, i) => ({text, score: cosine(query, vectors[i])}))
    .sort((a, b) => b.score - a.score);
  list.replaceChildren(...scored.map(({text, score}) => {
    const item = el("li");
    const meter = el("meter");
    meter.min = -1;
    meter.max = 1;
    meter.value = score;
    item.append(el("span", "score", score.toFixed(3)), meter, el("span", "sentence", text));
    return item;
  }));
}

function matrix(table, sentences, vectors) {
  const head = el("tr");
  head.append(el("th"), ...sentences.map((_, j) => el("th", "", `#${j + 1}`)));
  const rows = vectors.map((a, i) => {
    const row = el("tr");
    const label = el("th", "", `#${i + 1}`);
    label.title = sentences[i];
    row.append(label, ...vectors.map((b) => {
      const value = cosine(a, b);
      return el("td", `c${Math.max(0, Math.min(4, Math.floor(value * 5)))}`, value.toFixed(2));
    }));
    return row;
  });
  table.replaceChildren(el("caption", "muted", "cosine similarity between the sentences"), head, ...rows);
}

export function setupEmbeddings(form) {
  const button = form.querySelector("button[type=submit]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(form);
    const query = form.elements.query.value.trim();
    const sentences = form.elements.sentences.value.split("\n").map((s) => s.trim()).filter(Boolean)
      .slice(0, MAX_SENTENCES);
    if (!query || !sentences.length) return;
    button.disabled = true;
    form.dataset.state = "busy";
    try {
      const answer = await post("v1/embeddings", {model: form.elements.model.value, input: [query, ...sentences],
                                                   encoding_format: "float"});
      const vectors = [...answer.data].sort((a, b) => a.index - b.index).map((d) => d.embedding);
      ranking(form.querySelector(".ranking"), vectors[0], sentences, vectors.slice(1));
      matrix(form.querySelector(".matrix"), sentences, vectors.slice(1));
      form.dataset.state = "done";
    } catch (e) {
      form.dataset.state = "error";
      showError(form, e);
    } finally {
      button.disabled = false;
    }
  });
}
