// Chat: a conversation streamed over SSE from /v1/chat/completions, with the sampling controls.

import {stream} from "./api.js";
import {clearError, defined, messageBubble, numberOf, showError} from "./ui.js";

/** Stream one chat completion into `bubble`'s text as it arrives; resolves to the answer's text. */
export async function streamChat(body, bubble, signal) {
  const text = bubble.querySelector(".text");
  const meta = bubble.querySelector(".meta");
  const started = performance.now();
  let content = "";
  let finish = null;
  let usage = null;
  bubble.dataset.state = "streaming";
  try {
    for await (const chunk of stream("v1/chat/completions", {...body, stream_options: {include_usage: true}},
                                     signal)) {
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      if (choice.delta?.content) {
        content += choice.delta.content;
        text.textContent = content;
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    bubble.dataset.state = signal?.aborted ? "stopped" : "done";
  } catch (e) {
    bubble.dataset.state = e.name === "AbortError" ? "stopped" : "error";
    if (e.name !== "AbortError") throw e;
  } finally {
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const tokens = usage ? ` · ${usage.prompt_tokens} + ${usage.completion_tokens} tokens` : "";
    meta.textContent = `${bubble.dataset.state === "stopped" ? "stopped" : finish || "…"}${tokens} · ${seconds} s`;
  }
  return content;
}

export function setupChat(form) {
  const transcript = form.querySelector(".transcript");
  const send = form.querySelector("button[type=submit]");
  const stop = form.querySelector("[data-action=stop]");
  let history = [];
  let controller = null;

  form.querySelector("[data-action=clear]").addEventListener("click", () => {
    controller?.abort();
    history = [];
    transcript.replaceChildren();
    clearError(form);
  });
  stop.addEventListener("click", () => controller?.abort());
  form.elements.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = form.elements.prompt.value.trim();
    if (!prompt) return;
    clearError(form);
    const system = form.elements.system.value.trim();
    const turn = {role: "user", content: prompt};
    const messages = [...(system ? [{role: "system", content: system}] : []), ...history, turn];
    const answer = messageBubble("assistant");
    transcript.append(messageBubble("user", prompt), answer);
    form.elements.prompt.value = "";
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    try {
      const content = await streamChat(defined({
        model: form.elements.model.value, messages,
        temperature: numberOf(form, "temperature"), top_p: numberOf(form, "top_p"),
        max_tokens: numberOf(form, "max_tokens"), seed: numberOf(form, "seed"),
      }), answer, controller.signal);
      history.push(turn, {role: "assistant", content});
    } catch (e) {
      showError(form, e);
      form.elements.prompt.value = prompt; // to send again
    } finally {
      send.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  });
}
