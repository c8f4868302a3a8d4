// The ChatMaster 3000 web client: state, what each package does to it, and
// the page. Commands are those of protocol.md; features the server does not
// offer (it answers "unknown command") switch themselves off quietly.

import { Connection, defaultUrl } from "./protocol.js";
import { el, clear, formatTime, safeUrl, byName } from "./view.js";

/** Entries kept per conversation (older ones are dropped, and paged in again on scroll-up). */
const MAX_LOG = 1000;
/** Messages asked for per history page. */
const PAGE = 50;
/** Conversations with a direct-message history kept in the sidebar. */
const MAX_DMS = 200;

const $ = (id) => document.getElementById(id);

const state = {
  me: null,
  account: false,
  /** Name and password to log in with again after a reconnect (memory only). */
  wantedName: null,
  password: null,
  /** The channel the server has us in. */
  channel: "general",
  /** What is shown: { kind: "channel" | "dm", name }. */
  view: { kind: "channel", name: "general" },
  channels: [],
  channelsTotal: 0,
  /** key -> unread count. */
  unread: new Map(),
  members: new Set(),
  membersTotal: 0,
  membersStale: false,
  /** key -> { entries, more, loading, loaded }. */
  logs: new Map(),
  /** Own messages waiting for their message_sent, in the order sent. */
  pending: [],
  dms: new Set(),
  supports: { history: true, search: true, direct: true, dmHistory: true },
  /** A direct-message history request is unanswered (a server without
   * `history {with}` answers it with a protocol error). */
  dmHistoryPending: false,
  /** The command whose unknown-command error switches a feature off. */
  lastCommand: [],
  shuttingDown: false,
};

const keyOf = (view) => (view.kind === "dm" ? "@" : "#") + view.name.toLowerCase();
const fold = (name) => name.toLowerCase();

function log(key) {
  let l = state.logs.get(key);
  if (!l) {
    l = { entries: [], more: true, loading: false, loaded: false };
    state.logs.set(key, l);
  }
  return l;
}

const conn = new Connection(defaultUrl(window.location));

// ---- sending -------------------------------------------------------------

function command(name, parameters) {
  state.lastCommand.push(name);
  if (state.lastCommand.length > 32) state.lastCommand.shift();
  conn.command(name, parameters);
}

function login(name, password) {
  state.wantedName = name;
  state.password = password || null;
  const parameters = { username: name };
  if (password) parameters.password = password;
  command("login", parameters);
}

function requestHistory(view, before) {
  if (!state.supports.history) return;
  if (view.kind === "dm" && !state.supports.dmHistory) return;
  const l = log(keyOf(view));
  if (l.loading) return;
  l.loading = true;
  const parameters = view.kind === "dm" ? { with: view.name, limit: PAGE } : { channel: view.name, limit: PAGE };
  if (before !== undefined) parameters.before = before;
  if (view.kind === "dm") state.dmHistoryPending = true;
  command("history", parameters);
}

function parseAttach(text) {
  // /attach URL [TEXT]: an image or video link, by the URL's extension.
  const m = /^\/attach\s+(\S+)\s*([\s\S]*)$/.exec(text);
  if (!m) return null;
  const url = safeUrl(m[1]);
  if (!url) return { error: "Attachments must be http:// or https:// links." };
  const video = /\.(mp4|webm|mov|ogv)(\?|#|$)/i.test(url);
  return { message: m[2], attachments: [{ type: video ? "video" : "image", url }] };
}

function send(text) {
  const view = state.view;
  let data = { message: text };
  if (text.startsWith("/attach")) {
    const a = parseAttach(text);
    if (!a || a.error) return setStatus(a ? a.error : "Usage: /attach URL [text]");
    data = { message: a.message, attachments: a.attachments };
  } else if (text.startsWith("//")) {
    data = { message: text.slice(1) };
  }
  const entry = {
    id: null,
    username: state.me,
    message: data.message,
    attachments: data.attachments,
    timestamp: new Date().toISOString(),
    own: true,
    pending: true,
  };
  if (view.kind === "dm") {
    if (!state.supports.direct) return setStatus("This server has no direct messages.");
    command("direct", { username: view.name, ...data });
  } else {
    conn.send({ type: "message", data });
  }
  state.pending.push({ key: keyOf(view), entry });
  append(keyOf(view), entry);
}

// ---- the log -------------------------------------------------------------

function append(key, entry) {
  const l = log(key);
  l.entries.push(entry);
  if (l.entries.length > MAX_LOG) {
    l.entries.splice(0, l.entries.length - MAX_LOG);
    l.more = true;
  }
  if (key === keyOf(state.view)) {
    const list = $("message-list");
    const atBottom = isAtBottom();
    list.append(renderEntry(entry));
    if (atBottom || entry.own) scrollToBottom();
  } else if (!entry.system) {
    state.unread.set(key, (state.unread.get(key) || 0) + 1);
    renderSide();
  }
}

function notice(key, text) {
  append(key, { system: true, message: text, timestamp: new Date().toISOString() });
}

function findEntry(id) {
  for (const [key, l] of state.logs) {
    const i = l.entries.findIndex((e) => e.id === id);
    if (i >= 0) return { key, l, i, entry: l.entries[i] };
  }
  return null;
}

function fromServer(m) {
  return {
    id: m.id,
    username: m.username,
    message: m.message,
    timestamp: m.timestamp,
    edited: m.edited,
    attachments: m.attachments,
    own: m.username !== undefined && state.me !== null && fold(m.username) === fold(state.me),
  };
}

// ---- rendering -----------------------------------------------------------

function isAtBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
}

function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function renderAttachments(list) {
  if (!Array.isArray(list) || list.length === 0) return null;
  const box = el("div", { class: "attachments" });
  for (const a of list) {
    const url = safeUrl(a && a.url);
    if (!url) continue;
    const size = a.width && a.height ? ` ${a.width}×${a.height}` : "";
    const label = `[${a.type === "video" ? "video" : "image"}${size}] ${url}`;
    const link = el("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow", text: label });
    const item = el("div", { class: "attachment" }, link);
    if (a.type === "image") {
      // Previewed only on request: loading it tells its host who looked.
      const preview = el("button", { type: "button", class: "small preview", text: "preview" });
      preview.addEventListener("click", () => {
        preview.replaceWith(el("img", { src: url, alt: "attachment preview", class: "preview-image", referrerpolicy: "no-referrer" }));
      });
      item.append(" ", preview);
    }
    box.append(item);
  }
  return box;
}

function renderEntry(e) {
  if (e.system) {
    return el("li", { class: "notice" }, el("span", { class: "time", text: formatTime(e.timestamp) }), " ", el("span", { class: "text", text: e.message }));
  }
  const classes = ["msg"];
  if (e.own) classes.push("own");
  if (e.pending) classes.push("pending");
  if (e.failed) classes.push("failed");
  const li = el(
    "li",
    { class: classes.join(" "), data: e.id !== null && e.id !== undefined ? { id: e.id } : {} },
    el("span", { class: "time", text: formatTime(e.timestamp) }),
    " ",
    el("span", { class: "author", text: e.username || "" }),
    " ",
    el("span", { class: "text", text: e.message || "" }),
    e.edited ? el("span", { class: "edited", text: " (edited)", title: formatTime(e.edited) }) : null,
    renderAttachments(e.attachments),
  );
  if (e.own && e.id !== null && e.id !== undefined) {
    const tools = el("span", { class: "tools" });
    tools.append(
      el("button", { type: "button", class: "small edit", text: "edit", on: { click: () => startEdit(e, li) } }),
      el("button", { type: "button", class: "small delete", text: "delete", on: { click: () => remove(e) } }),
    );
    li.append(tools);
  }
  e.node = li;
  return li;
}

function renderLog(keepScroll) {
  const box = $("messages");
  const before = box.scrollHeight - box.scrollTop;
  const list = $("message-list");
  clear(list);
  const l = log(keyOf(state.view));
  for (const e of l.entries) list.append(renderEntry(e));
  $("older").hidden = !(state.supports.history && l.more && l.loaded);
  if (keepScroll) box.scrollTop = box.scrollHeight - before;
  else scrollToBottom();
}

function rerender(entry) {
  if (entry.node && entry.node.isConnected) entry.node.replaceWith(renderEntry(entry));
}

function renderSide() {
  const list = $("channel-list");
  clear(list);
  const names = [...state.channels];
  if (!names.some((n) => fold(n) === fold(state.channel))) names.push(state.channel);
  for (const [key] of state.unread) {
    if (key.startsWith("#") && !names.some((n) => "#" + fold(n) === key)) names.push(key.slice(1));
  }
  names.sort(byName);
  for (const name of names) {
    const key = "#" + fold(name);
    const active = state.view.kind === "channel" && fold(state.view.name) === fold(name);
    const count = state.unread.get(key) || 0;
    const li = el(
      "li",
      { class: active ? "active" : "", data: { channel: name } },
      el("button", { type: "button", class: "link", text: "#" + name, on: { click: () => openChannel(name) } }),
      count ? el("span", { class: "badge", text: String(count), title: `${count} unread` }) : null,
    );
    list.append(li);
  }
  const dms = $("dm-list");
  clear(dms);
  for (const name of [...state.dms].sort(byName)) {
    const key = "@" + fold(name);
    const active = state.view.kind === "dm" && fold(state.view.name) === fold(name);
    const count = state.unread.get(key) || 0;
    dms.append(
      el(
        "li",
        { class: active ? "active" : "", data: { user: name } },
        el("button", { type: "button", class: "link", text: "@" + name, on: { click: () => openDirect(name) } }),
        count ? el("span", { class: "badge", text: String(count) }) : null,
      ),
    );
  }
}

function renderMembers() {
  const list = $("members");
  clear(list);
  const names = [...state.members].sort(byName);
  for (const name of names) {
    const me = state.me && fold(name) === fold(state.me);
    const button = el("button", { type: "button", class: "link", text: name, title: me ? "you" : `Message ${name}` });
    if (!me) button.addEventListener("click", () => openDirect(name));
    list.append(el("li", { class: me ? "self" : "", data: { user: name } }, button));
  }
  const total = Math.max(state.membersTotal, names.length);
  $("member-count").textContent = state.membersStale ? `(${total}, list not kept)` : `(${total})`;
}

function renderTitle() {
  const v = state.view;
  $("title").textContent = v.kind === "dm" ? `@${v.name}` : `#${v.name}`;
  $("me").textContent = state.me ? `${state.me}${state.account ? "" : " (guest)"}` : "";
  $("register-button").hidden = state.account;
  document.title = `${v.kind === "dm" ? "@" : "#"}${v.name} · ChatMaster 3000`;
}

function show(view) {
  state.view = view;
  const key = keyOf(view);
  state.unread.delete(key);
  renderTitle();
  renderSide();
  renderLog(false);
  const l = log(key);
  if (!l.loaded) requestHistory(view);
  document.body.classList.remove("side-open", "members-open");
  $("composer").focus();
}

function openChannel(name) {
  if (fold(name) === fold(state.channel)) return show({ kind: "channel", name: state.channel });
  command("join", { channel: name });
}

function openDirect(name) {
  if (state.dms.size >= MAX_DMS && !state.dms.has(name)) state.dms.delete(state.dms.values().next().value);
  state.dms.add(name);
  show({ kind: "dm", name });
}

function startEdit(entry, li) {
  const input = el("input", { class: "edit-input", value: entry.message, maxlength: 4096, "aria-label": "Edit message" });
  input.value = entry.message;
  const text = li.querySelector(".text");
  text.replaceWith(input);
  input.focus();
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      const value = input.value.trim();
      if (value && value !== entry.message) {
        command("edit", { id: entry.id, message: value });
        entry.message = value;
        entry.edited = new Date().toISOString();
      }
      rerender(entry);
    } else if (ev.key === "Escape") {
      rerender(entry);
    }
  });
}

function remove(entry) {
  if (!window.confirm("Delete this message?")) return;
  command("delete", { id: entry.id });
}

function setStatus(text) {
  $("status").textContent = text || "";
}

function banner(text, kind) {
  const b = $("banner");
  if (!text) {
    b.hidden = true;
    b.textContent = "";
    return;
  }
  b.hidden = false;
  b.className = `banner ${kind || ""}`;
  b.textContent = text;
}

// ---- what packages do ----------------------------------------------------

function onSession(d) {
  if (!d.status) {
    state.me = null;
    $("login-view").hidden = false;
    $("chat-view").hidden = true;
    $("login-error").textContent = d.reason || "Login refused.";
    if (d.password_required) {
      $("password-row").classList.add("needed");
      $("login-password").focus();
    }
    // Ask the user before trying again.
    state.wantedName = null;
    return;
  }
  state.me = d.username;
  state.account = !!d.account;
  state.wantedName = d.username;
  state.channels = Array.isArray(d.channels) ? d.channels : [];
  state.channelsTotal = d.channels_total || state.channels.length;
  if (Array.isArray(d.unread)) {
    for (const u of d.unread) if (u && u.channel) state.unread.set("#" + fold(u.channel), u.count || 0);
  }
  $("login-error").textContent = "";
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  banner(null);
  renderTitle();
  renderSide();
}

function onOwnJoin(d) {
  const rejoining = state.rejoin;
  state.rejoin = null;
  state.channel = d.channel;
  state.members = new Set(Array.isArray(d.users) ? d.users : [d.username]);
  state.membersTotal = d.users_total || state.members.size;
  state.membersStale = false;
  // History is asked for afresh on every join: what was said meanwhile.
  const l = log("#" + fold(d.channel));
  l.entries = [];
  l.loaded = false;
  l.more = true;
  l.loading = false;
  renderMembers();
  if (rejoining && fold(rejoining) !== fold(d.channel)) {
    command("join", { channel: rejoining });
    return;
  }
  show({ kind: "channel", name: d.channel });
}

function onNotification(d) {
  const here = "#" + fold(state.channel);
  switch (d.event_type) {
    case "user_joined":
      if (state.me && fold(d.username) === fold(state.me) && d.users !== undefined) return onOwnJoin(d);
      state.members.add(d.username);
      state.membersTotal = Math.max(state.membersTotal + 1, state.members.size);
      renderMembers();
      return notice(here, `${d.username} joined #${d.channel}`);
    case "user_left":
      state.members.delete(d.username);
      state.membersTotal = Math.max(state.membersTotal - 1, state.members.size);
      renderMembers();
      return notice(here, d.kicked ? `${d.username} was removed from #${d.channel}` : `${d.username} left #${d.channel}`);
    case "user_rename":
      if (state.members.delete(d.old_username)) state.members.add(d.new_username);
      if (state.me && fold(d.old_username) === fold(state.me)) {
        state.me = d.new_username;
        state.wantedName = d.new_username;
        renderTitle();
      }
      renderMembers();
      return notice(here, `${d.old_username} is now ${d.new_username}`);
    case "channel_stats":
      state.membersTotal = d.users_total;
      state.membersStale = true;
      return renderMembers();
    case "channel_list":
      state.channels = d.channels || [];
      return renderSide();
    case "channel_update": {
      const parts = [];
      if (d.private !== undefined) parts.push(d.private ? "is private" : "is public");
      if (d.owner) parts.push(`is owned by ${d.owner}`);
      if (d.topic !== undefined) parts.push(d.topic ? `has the topic “${d.topic}”` : "has no topic");
      return notice(here, `#${d.channel} ${parts.join(", ")}`);
    }
    case "invited":
      return setStatus(`${d.by} invited you to #${d.channel}: click it in the channel list, or type its name under Join.`);
    case "invite_sent":
      return setStatus(`Invitation to #${d.channel} sent to ${d.username}.`);
    case "message_sent": {
      const p = state.pending.shift();
      if (!p) return;
      p.entry.id = d.id;
      p.entry.pending = false;
      if (d.timestamp) p.entry.timestamp = d.timestamp;
      if (d.queued) notice(p.key, `${d.to} is offline: the message waits for them.`);
      if (d.away) notice(p.key, `${d.to} is away: ${d.away}`);
      return rerender(p.entry);
    }
    case "history":
      return onHistory(d);
    case "search_results":
      return onSearch(d);
    case "message_edited": {
      const f = findEntry(d.id);
      if (!f) return;
      f.entry.message = d.message;
      f.entry.edited = d.edited;
      return rerender(f.entry);
    }
    case "message_deleted": {
      const f = findEntry(d.id);
      if (!f) return;
      f.l.entries.splice(f.i, 1);
      if (f.entry.node) f.entry.node.remove();
      return;
    }
    case "kicked":
      return setStatus(`You were removed from #${d.channel} by ${d.by}${d.reason ? `: ${d.reason}` : ""}.`);
    case "channel_deleted":
      return setStatus(`#${d.channel} was deleted by ${d.by}.`);
    case "server_notice":
      return notice(here, `Notice from ${d.by}: ${d.message}`);
    case "server_shutdown":
      state.shuttingDown = true;
      return banner("The server is shutting down. Reconnecting when it is back…", "down");
    case "registered":
      state.account = true;
      renderTitle();
      return setStatus(`${d.username} is registered: logging in as it now needs the password.`);
    case "password_changed":
      return setStatus("Password changed.");
    default:
      return undefined; // pong, who, whois, ...: nothing to show
  }
}

function onHistory(d) {
  const view = d.with !== undefined ? { kind: "dm", name: d.with } : { kind: "channel", name: d.channel };
  const key = keyOf(view);
  const l = log(key);
  l.loading = false;
  if (view.kind === "dm") state.dmHistoryPending = false;
  // A first page scrolls to the end; an older one keeps the reader's place.
  const older = l.loaded;
  l.loaded = true;
  l.more = !!d.more;
  const have = new Set(l.entries.filter((e) => e.id !== null && e.id !== undefined).map((e) => e.id));
  const fresh = (d.messages || []).filter((m) => !have.has(m.id)).map(fromServer);
  l.entries = [...fresh, ...l.entries];
  if (key === keyOf(state.view)) renderLog(older);
}

function onSearch(d) {
  const list = $("search-results");
  clear(list);
  $("search-title").textContent = `“${d.query}”: ${d.total} found`;
  for (const m of d.messages || []) {
    const where = m.to !== undefined ? `@${m.username === state.me ? m.to : m.username}` : `#${m.channel}`;
    list.append(
      el(
        "li",
        { class: "msg" },
        el("span", { class: "where", text: where }),
        " ",
        el("span", { class: "time", text: formatTime(m.timestamp) }),
        " ",
        el("span", { class: "author", text: m.username }),
        " ",
        el("span", { class: "text", text: m.message }),
        renderAttachments(m.attachments),
      ),
    );
  }
  $("search-pane").hidden = false;
}

function onMessage(d) {
  const m = fromServer(d);
  if (d.to !== undefined && d.channel === undefined) {
    const other = m.own ? d.to : d.username;
    if (!state.dms.has(other)) state.dms.add(other);
    if (d.offline) m.offline = true;
    append("@" + fold(other), m);
    return renderSide();
  }
  append("#" + fold(d.channel || state.channel), m);
}

function onError(d) {
  // "unknown command `history`; known commands: ...": a feature this
  // server does not have, switched off without further noise.
  const unknown = d.error_type === "protocol" ? /unknown command `([^`]+)`/i.exec(d.message || "") : null;
  if (unknown && Object.prototype.hasOwnProperty.call(state.supports, unknown[1])) {
    const feature = unknown[1];
    state.supports[feature] = false;
    if (feature === "history") for (const l of state.logs.values()) l.loading = false;
    if (feature === "search") setStatus("This server has no search.");
    if (feature === "direct") {
      setStatus("This server has no direct messages.");
      const p = state.pending.shift();
      if (p) {
        p.entry.pending = false;
        p.entry.failed = true;
        rerender(p.entry);
      }
    }
    renderLog(true);
    return;
  }
  if (d.error_type === "protocol" && state.dmHistoryPending && /\bwith\b/.test(d.message || "")) {
    // This server pages channels only: direct conversations start empty.
    state.dmHistoryPending = false;
    state.supports.dmHistory = false;
    for (const [key, l] of state.logs) if (key.startsWith("@")) l.loading = false;
    return;
  }
  if (["message", "direct", "random"].includes(d.error_type) && state.pending.length) {
    const p = state.pending.shift();
    p.entry.pending = false;
    p.entry.failed = true;
    rerender(p.entry);
  }
  if (d.error_type === "history") for (const l of state.logs.values()) l.loading = false;
  setStatus(d.message || d.error_type);
}

conn.addEventListener("package", (ev) => {
  const p = ev.detail;
  if (!p || typeof p !== "object") return;
  const d = p.data || {};
  switch (p.type) {
    case "request":
      if (d.request === "login" && state.wantedName) login(state.wantedName, state.password);
      return;
    case "session":
      return onSession(d);
    case "notification":
      return onNotification(d);
    case "message":
      return onMessage(d);
    case "error":
      return onError(d);
    default:
      return undefined;
  }
});

conn.addEventListener("open", () => {
  if (state.me) banner("Connected again. Logging in…", "up");
  // Where we were, to go back after the new login.
  if (state.channel && fold(state.channel) !== "general") state.rejoin = state.channel;
  state.pending = [];
});

conn.addEventListener("down", (ev) => {
  const secs = Math.round(ev.detail.retryIn / 1000);
  const why = state.shuttingDown ? "The server shut down." : "Connection to the server lost.";
  banner(`${why} Reconnecting in ${secs} s…`, "down");
  state.shuttingDown = false;
  for (const p of state.pending) {
    p.entry.pending = false;
    p.entry.failed = true;
    rerender(p.entry);
  }
  state.pending = [];
});

conn.addEventListener("error", (ev) => setStatus(ev.detail));

// ---- the page's controls -------------------------------------------------

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("login-name").value.trim();
  if (!name) return;
  $("login-error").textContent = "";
  login(name, $("login-password").value);
});

$("composer").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $("composer-form").requestSubmit();
  }
});

$("composer-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const box = $("composer");
  const text = box.value;
  if (!text.trim()) return;
  if (!conn.isOpen || !state.me) return setStatus("Not connected: the message was not sent.");
  box.value = "";
  setStatus("");
  send(text);
});

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("join-name").value.trim().replace(/^#/, "");
  if (!name) return;
  $("join-name").value = "";
  openChannel(name);
});

$("messages").addEventListener("scroll", () => {
  const box = $("messages");
  const l = log(keyOf(state.view));
  if (box.scrollTop < 40 && l.more && l.loaded && !l.loading) {
    const first = l.entries.find((e) => e.id !== null && e.id !== undefined);
    if (first) requestHistory(state.view, first.id);
  }
});

$("older").addEventListener("click", () => {
  const l = log(keyOf(state.view));
  const first = l.entries.find((e) => e.id !== null && e.id !== undefined);
  if (first) requestHistory(state.view, first.id);
});

$("search-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const query = $("search-input").value.trim();
  if (!query) return;
  if (!state.supports.search) return setStatus("This server has no search.");
  command("search", { query });
});

$("search-close").addEventListener("click", () => {
  $("search-pane").hidden = true;
});

$("register-button").addEventListener("click", () => {
  $("register-error").textContent = "";
  $("register-dialog").showModal();
});

$("register-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (ev.submitter && ev.submitter.value === "cancel") {
    $("register-dialog").close();
    return;
  }
  const a = $("register-password").value;
  const b = $("register-again").value;
  if (a.length < 8) {
    $("register-error").textContent = "At least 8 characters.";
    return;
  }
  if (a !== b) {
    $("register-error").textContent = "The two passwords differ.";
    return;
  }
  state.password = a;
  command("register", { password: a });
  $("register-password").value = "";
  $("register-again").value = "";
  $("register-dialog").close();
});

$("toggle-side").addEventListener("click", () => document.body.classList.toggle("side-open"));
$("toggle-members").addEventListener("click", () => document.body.classList.toggle("members-open"));

conn.connect();
