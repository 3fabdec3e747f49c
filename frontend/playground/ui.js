// Small DOM helpers. Text reaches the page through textContent only: model output may hold markup (a model can
// write <script>), and it must read as text.

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A form field's number, or undefined when left empty (the server's default then applies). */
export function numberOf(form, name) {
  const value = form.elements[name].value.trim();
  return value === "" ? undefined : Number(value);
}

export function showError(form, error) {
  const box = form.querySelector(".error");
  box.textContent = error?.message || String(error);
  box.hidden = false;
}

export function clearError(form) {
  const box = form.querySelector(".error");
  box.textContent = "";
  box.hidden = true;
}

/** Fill a <select> with model ids, keeping the current choice when it is still offered. */
export function fillModels(select, models) {
  const previous = select.value;
  select.replaceChildren(...models.map((m) => el("option", "", m.id)));
  if (models.some((m) => m.id === previous)) select.value = previous;
}

/** A chat message: a role label, its text and a line for what the answer cost. */
export function messageBubble(role, text = "") {
  const bubble = el("div", `message ${role}`);
  bubble.append(el("div", "role", role), el("div", "text", text), el("div", "meta muted"));
  return bubble;
}

/** Drop undefined fields, so the request carries only what the user set. */
export function defined(body) {
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined && !Number.isNaN(v)));
}
