// Which loaded models fit which tab. GET /v1/models gives each model's task; what it does not publish (image
// sizes, whether a chat model takes images) is read from the API's own validation answer to a request that
// fails before any model work: a probe costs one request against the key's rate limit, and no tokens.

import {ApiError, post} from "./api.js";

const PROBE_IMAGE = "data:,"; // no image at all: a vision model refuses it as such, a text model refuses the part

/** Loaded models by task. `status` is absent on servers that list loaded models only. */
export function loadedByTask(list) {
  const byTask = {};
  for (const model of list.data || []) {
    if ((model.status?.value ?? "loaded") !== "loaded") continue;
    (byTask[model.task] ??= []).push(model);
  }
  for (const models of Object.values(byTask)) models.sort((a, b) => a.id.localeCompare(b.id));
  return byTask;
}

async function refusal(path, body) {
  try {
    await post(path, body);
  } catch (e) {
    if (e instanceof ApiError) return e;
    throw e;
  }
  return null;
}

/** Whether a chat model takes image_url parts (the model's `supports_images`). */
export async function takesImages(model) {
  if (typeof model.supports_images === "boolean") return model.supports_images;
  const error = await refusal("v1/chat/completions", {
    model: model.id, max_tokens: 1,
    messages: [{role: "user", content: [{type: "image_url", image_url: {url: PROBE_IMAGE}}]}],
  });
  if (error && error.status !== 400) throw error; // 401, 403, 429: the caller shows it
  return error !== null && error.param === "messages[0].content[0].image_url";
}

/** The sizes an images model draws ("64x64", ...), from its refusal of a size it cannot draw. */
export async function imageSizes(model) {
  if (Array.isArray(model.sizes)) return model.sizes;
  const error = await refusal("v1/images/generations", {
    model: model.id, prompt: "size probe", size: "0x0", response_format: "b64_json",
  });
  if (error && error.status !== 400) throw error;
  const listed = error?.param === "size" && /use one of (.+)$/.exec(error.detail);
  return listed ? listed[1].split(",").map((s) => s.trim()).filter((s) => /^\d+x\d+$/.test(s)) : [];
}
