// The API, as the playground calls it: URLs relative to the page (this origin only), the key in sessionStorage
// (this tab, gone when it closes) and in the Authorization header only, errors from OpenAI's envelope.

const KEY_ITEM = "modelgate.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

/** An error answer of the API: `status` and the envelope's fields; `message` reads as a sentence. */
export class ApiError extends Error {
  constructor(status, error, retryAfter = null) {
    const text = (error && typeof error.message === "string" && error.message) || "the server gave no reason";
    super(status ? `${status} ${reason(status)}: ${text}${retryAfter ? ` (retry after ${retryAfter} s)` : ""}` : text);
    this.status = status;
    this.detail = text; // the envelope's message alone
    this.code = error?.code ?? null;
    this.param = error?.param ?? null;
  }
}

function reason(status) {
  return {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 413: "Too large",
          429: "Too many requests", 503: "Unavailable", 504: "Timed out"}[status] || "Error";
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function failure(response) {
  let error = null;
  try {
    error = (await response.json()).error;
  } catch {
    // not JSON (a proxy's page): the status says enough
  }
  return new ApiError(response.status, error ?? {message: response.statusText}, response.headers.get("retry-after"));
}

async function send(method, path, body, signal) {
  const url = new URL(path, document.baseURI); // relative: the API beside the page, under a proxy's prefix too
  if (url.origin !== location.origin) throw new Error(`not this server: ${path}`);
  let response;
  try {
    response = await fetch(url, {method, headers: headers(body !== undefined), signal, credentials: "omit",
                                  body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, {message: `the server could not be reached (${e.message})`});
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function get(path) {
  return (await send("GET", path)).json();
}

export async function post(path, body, signal) {
  return (await send("POST", path, body, signal)).json();
}

/** POST with `stream: true`: yields each SSE event's JSON; an error event (after the first byte) throws. */
export async function* stream(path, body, signal) {
  const response = await send("POST", path, {...body, stream: true}, signal);
  yield* events(response.body, signal);
}

/** Server-sent events from a byte stream: `data:` lines, events split by a blank line, `[DONE]` ends. */
export async function* events(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue; // a comment or keep-alive
        if (data === "[DONE]") return;
        const event = JSON.parse(data);
        if (event.error) throw new ApiError(0, event.error);
        yield event;
      }
      if (signal?.aborted) return;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
