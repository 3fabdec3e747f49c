// Image generation: /v1/images/generations with b64_json answers, shown newest first.

import {post} from "./api.js";
import {imageSizes} from "./models.js";
import {clearError, defined, el, numberOf, showError} from "./ui.js";

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

export function setupImages(form) {
  const gallery = form.querySelector(".gallery");
  const sizes = form.elements.size;
  const button = form.querySelector("button[type=submit]");
  const known = new Map(); // model id -> its sizes

  async function offerSizes() {
    const id = form.elements.model.value;
    if (!id) return;
    try {
      if (!known.has(id)) known.set(id, await imageSizes({id}));
      const listed = known.get(id);
      // Smallest first: quickest to draw. None known: the model's default.
      sizes.replaceChildren(...(listed.length ? listed : ["auto"]).map((s) => el("option", "", s)));
    } catch (e) {
      showError(form, e);
    }
  }
  form.elements.model.addEventListener("change", offerSizes);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(form);
    const prompt = form.elements.prompt.value.trim();
    button.disabled = true;
    form.dataset.state = "busy";
    try {
      const answer = await post("v1/images/generations", defined({
        model: form.elements.model.value, prompt, size: sizes.value || undefined, response_format: "b64_json",
        n: numberOf(form, "n"), steps: numberOf(form, "steps"), seed: numberOf(form, "seed"),
      }));
      for (const item of [...answer.data].reverse()) {
        if (!BASE64.test(item.b64_json || "")) continue;
        const figure = el("figure", "picture");
        const img = el("img");
        img.alt = prompt;
        img.src = `data:image/png;base64,${item.b64_json}`;
        figure.append(img, el("figcaption", "muted", `${answer.size || sizes.value} · ${prompt}`));
        gallery.prepend(figure);
      }
      form.dataset.state = "done";
    } catch (e) {
      form.dataset.state = "error";
      showError(form, e);
    } finally {
      button.disabled = false;
    }
  });
  return {offerSizes};
}
