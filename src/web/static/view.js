// DOM helpers. Text from the server (other people's names, messages,
// reasons) only ever reaches the page through textContent or attribute
// values set with setAttribute/properties, never as HTML.

/**
 * A new element: `el("li", {class: "x", text: "y", title: "z"}, child...)`.
 * `text` sets textContent; `on` is a map of event listeners; other keys
 * become properties (dataset and attributes are set as text).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
    else node.setAttribute(key, String(value));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

/** Removes every child of `node`. */
export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

/** `10:02`, or `21 Nov 10:02` when not today. */
export function formatTime(timestamp) {
  const d = new Date(timestamp);
  if (Number.isNaN(d.getTime())) return "";
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return hm;
  return `${d.toLocaleDateString([], { day: "numeric", month: "short" })} ${hm}`;
}

/** Whether `url` is an http(s) URL (the only kind an attachment may link to). */
export function safeUrl(url) {
  try {
    const u = new URL(url);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch {
    return null;
  }
}

/** Case-insensitive compare, as the server sorts names. */
export function byName(a, b) {
  return a.toLowerCase().localeCompare(b.toLowerCase());
}
