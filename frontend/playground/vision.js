// Vision: a question about an uploaded image, sent as an image_url data: URL to a chat model that takes images.

import {streamChat} from "./chat.js";
import {clearError, defined, messageBubble, numberOf, showError} from "./ui.js";

const TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"];

function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export function setupVision(form) {
  const preview = form.querySelector(".preview");
  const transcript = form.querySelector(".transcript");
  const button = form.querySelector("button[type=submit]");
  let image = null; // the chosen file as a data: URL

  form.elements.image.addEventListener("change", async () => {
    clearError(form);
    image = null;
    preview.hidden = true;
    const file = form.elements.image.files[0];
    if (!file) return;
    if (!TYPES.includes(file.type)) {
      const what = file.type || "this file";
      showError(form, new Error(`${what} is not an image the API takes (PNG, JPEG, WebP, GIF, BMP)`));
      return;
    }
    image = await dataUrl(file);
    preview.src = image;
    preview.hidden = false;
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(form);
    if (!image) {
      showError(form, new Error("choose an image first"));
      return;
    }
    const question = form.elements.prompt.value.trim();
    const answer = messageBubble("assistant");
    transcript.replaceChildren(messageBubble("user", question), answer);
    button.disabled = true;
    try {
      await streamChat(defined({
        model: form.elements.model.value, max_tokens: numberOf(form, "max_tokens"),
        messages: [{role: "user", content: [{type: "text", text: question},
                                            {type: "image_url", image_url: {url: image}}]}],
      }), answer);
    } catch (e) {
      showError(form, e);
    } finally {
      button.disabled = false;
    }
  });
}
