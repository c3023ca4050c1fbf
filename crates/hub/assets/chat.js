// The hub's chat page: docs/hub-protocol.md spoken from a browser, without a build step.
//
// The page keeps, per joined room, the history's epoch and the next offset it expects, so
// that after a lost connection it joins again with `recover` and shows exactly what it
// missed; when the hub's history no longer reaches back it says so and reloads the room.
// Everything another client sent is shown as text (textContent), never as HTML, and `data`
// without a string `text` is shown as its JSON.
"use strict";

const ROOM_NAME = /^[A-Za-z0-9_.:-]{1,128}$/;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MOST_MS = 5000;
// A socket that opened but got no `connected` this long after is given up and retried
// (the hub itself closes a silent one after its connect_timeout of 10 s).
const CONNECT_WAIT_MS = 10000;
// Entries kept per conversation, so a long-open page does not grow without bound.
const KEPT = 500;
const ERRORS_KEPT = 20;

const $ = (id) => document.getElementById(id);

const state = {
  login: null, // {name} or {token}: what `connect` sends, kept for reconnecting
  ws: null,
  me: null, // {user, name, node} from `connected`
  attempt: 0, // reconnections tried since the last `connected`, for the backoff
  retryTimer: null,
  connectTimer: null,
  refusal: null, // the `unauthorized` error's message, shown when 4001 follows
  nextId: 1,
  pending: new Map(), // request id -> {frame, recovering?}
  rooms: new Map(), // name -> {epoch, next, joined, presence: Map user -> name}
  conversations: new Map(), // "room:NAME" / "user:ID" -> {kind, id, label, entries, unread, historyMark, historyBefore}
  current: null, // key of the conversation shown
};

// --- the connection ---------------------------------------------------------------------

function connect() {
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/ws");
  state.ws = ws;
  state.refusal = null;
  setStatus(state.attempt ? "reconnecting" : "connecting", state.attempt ? "reconnecting…" : "connecting…");
  state.connectTimer = setTimeout(() => ws.close(), CONNECT_WAIT_MS);
  ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "connect", ...state.login })));
  ws.addEventListener("message", (e) => {
    if (ws === state.ws) receive(e.data);
  });
  ws.addEventListener("close", (e) => {
    if (ws === state.ws) closed(e);
  });
}

function closed(e) {
  clearTimeout(state.connectTimer);
  state.ws = null;
  state.pending.clear();
  for (const room of state.rooms.values()) {
    room.joined = false;
    room.presence.clear();
  }
  renderAll();
  if (e.code === 4001) {
    const why = state.refusal || e.reason || "the hub refused the connection";
    setStatus("closed", "not connected: refused");
    showProblem(`The hub refused to connect you: ${why}`);
    state.me = null;
    $("login").hidden = false;
    return;
  }
  const step = Math.min(BACKOFF_MOST_MS, BACKOFF_FIRST_MS * 2 ** state.attempt);
  const delay = step / 2 + Math.random() * (step / 2);
  state.attempt += 1;
  const why = e.code === 1006 ? "connection lost" : `closed ${e.code}${e.reason ? ": " + e.reason : ""}`;
  setStatus("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)} s (${why})`);
  state.retryTimer = setTimeout(connect, delay);
}

function request(frame, meta = {}) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN || !state.me) return false;
  frame.id = state.nextId++;
  state.pending.set(frame.id, { frame, ...meta });
  state.ws.send(JSON.stringify(frame));
  return true;
}

function join(name) {
  const room = state.rooms.get(name);
  const recovering = room.epoch !== null;
  const frame = { type: "join", room: name };
  if (recovering) frame.recover = { epoch: room.epoch, offset: room.next };
  request(frame, { recovering });
}

// --- frames from the hub ----------------------------------------------------------------

function receive(text) {
  let f;
  try {
    f = JSON.parse(text, exactIntegers);
  } catch {
    return;
  }
  if (!f || typeof f !== "object") return;
  const req = typeof f.id === "number" ? state.pending.get(f.id) : undefined;
  if (req) state.pending.delete(f.id);
  if (typeof f.type === "string" && Object.hasOwn(handlers, f.type)) handlers[f.type](f, req);
}

// The hub relays `data` as the exact text sent; an integer beyond a double's precision is
// kept as that text (JSON.rawJSON), so it is shown as sent rather than rounded.
function exactIntegers(key, value, context) {
  if (typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)
      && typeof JSON.rawJSON === "function") {
    return JSON.rawJSON(context.source);
  }
  return value;
}

const handlers = {
  connected(f) {
    clearTimeout(state.connectTimer);
    state.attempt = 0;
    state.me = { user: f.user, name: f.name, node: f.node };
    setStatus("connected", `connected to node ${f.node} as ${f.name}`, f.node);
    hideProblem();
    $("login").hidden = true;
    $("chat").hidden = false;
    for (const name of state.rooms.keys()) join(name);
    renderAll();
  },

  joined(f, req) {
    const room = state.rooms.get(f.room);
    if (!room) return;
    const conv = conversation("room", f.room);
    room.joined = true;
    room.presence = new Map((f.presence || []).map((p) => [p.user, p.name]));
    if (req && req.recovering && f.recovered) {
      room.epoch = f.epoch;
      const missed = (f.messages || []).filter((m) => m.offset >= room.next);
      addNotice(conv, "recovered", missed.length
        ? `reconnected: recovered ${missed.length} message${missed.length === 1 ? "" : "s"} sent while you were away`
        : "reconnected: nothing was missed");
      for (const m of missed) addRoomMessage(room, conv, m, true);
      room.next = Math.max(room.next, f.offset);
    } else {
      if (req && req.recovering) {
        conv.entries = [];
        addNotice(conv, "history-lost",
          "reconnected, but the room's history did not reach back to what you missed: showing what the hub still keeps");
      }
      room.epoch = f.epoch;
      room.next = f.offset;
      conv.historyMark = conv.entries.length;
      conv.historyBefore = f.offset;
      request({ type: "history", room: f.room });
    }
    renderAll();
  },

  history(f) {
    const conv = state.conversations.get("room:" + f.room);
    const room = state.rooms.get(f.room);
    if (!conv || !room || conv.historyBefore === null) return;
    if (f.epoch === room.epoch) {
      const older = (f.messages || []).filter((m) => m.offset < conv.historyBefore).map((m) => messageEntry(m, false));
      conv.entries.splice(Math.min(conv.historyMark, conv.entries.length), 0, ...older);
    }
    conv.historyBefore = null;
    if (state.current === conv.key) renderMessages();
  },

  message(f) {
    const room = state.rooms.get(f.room);
    if (!room || !room.joined) return;
    addRoomMessage(room, conversation("room", f.room), f, false);
  },

  direct(f) {
    addEntry(conversation("user", f.from, f.name), messageEntry(f, false));
  },

  user_joined(f) {
    presenceChanged(f, true);
  },

  user_left(f) {
    presenceChanged(f, false);
  },

  presence(f) {
    const room = state.rooms.get(f.room);
    if (!room) return;
    room.presence = new Map((f.users || []).map((p) => [p.user, p.name]));
    renderPresence();
  },

  left() {},
  published() {},

  sent(f, req) {
    if (!req) return;
    const conv = conversation("user", req.frame.to);
    addEntry(conv, { kind: "message", from: state.me.user, name: state.me.name, time: Date.now(), data: req.frame.data });
    if (f.connections === 0) addNotice(conv, "undelivered", `${conv.label} is not connected: the message reached nobody`);
  },

  error(f, req) {
    if (f.code === "unauthorized") state.refusal = f.message;
    showError(f, req);
    if (!req) return;
    const frame = req.frame;
    if (frame.type === "join") {
      const room = state.rooms.get(frame.room);
      if (room && !req.recovering) {
        state.rooms.delete(frame.room);
        dropConversation("room:" + frame.room);
      } else if (room) {
        addNotice(conversation("room", frame.room), "error", `could not join again: ${f.message}`);
      }
    } else if ((frame.type === "publish" || frame.type === "send") && !$("text").value) {
      $("text").value = frame.data.text;
    } else if (frame.type === "history") {
      const conv = state.conversations.get("room:" + frame.room);
      if (conv) conv.historyBefore = null;
    }
    renderAll();
  },
};

function addRoomMessage(room, conv, m, recovered) {
  if (m.epoch !== room.epoch) {
    addNotice(conv, "history-lost", "the room's history was restarted on the hub; offsets begin again");
    room.epoch = m.epoch;
    room.next = m.offset;
  }
  if (m.offset < room.next) return;
  if (m.offset > room.next) {
    const n = m.offset - room.next;
    addNotice(conv, "history-lost", `${n} message${n === 1 ? " is" : "s are"} missing here`);
  }
  room.next = m.offset + 1;
  addEntry(conv, messageEntry(m, recovered));
}

function presenceChanged(f, here) {
  const room = state.rooms.get(f.room);
  if (!room || !room.joined) return;
  if (here) room.presence.set(f.user, f.name);
  else room.presence.delete(f.user);
  if (state.me && f.user !== state.me.user) {
    addNotice(conversation("room", f.room), here ? "joined" : "left", `${f.name || f.user} ${here ? "joined" : "left"}`);
  }
  renderPresence();
}

// --- conversations ----------------------------------------------------------------------

function conversation(kind, id, name) {
  const key = kind + ":" + id;
  let conv = state.conversations.get(key);
  if (!conv) {
    const label = kind === "room" ? "# " + id : name || displayName(id);
    conv = { key, kind, id, label, entries: [], unread: false, historyMark: 0, historyBefore: null };
    state.conversations.set(key, conv);
    renderConversations();
  }
  return conv;
}

function displayName(user) {
  for (const room of state.rooms.values()) {
    const name = room.presence.get(user);
    if (name) return name;
  }
  return user.startsWith("~") ? user.slice(1) : user;
}

function dropConversation(key) {
  state.conversations.delete(key);
  if (state.current === key) state.current = state.conversations.keys().next().value || null;
}

function messageEntry(m, recovered) {
  return { kind: "message", from: m.from, name: m.name, time: m.time, data: m.data, offset: m.offset, recovered };
}

function addNotice(conv, kind, text) {
  addEntry(conv, { kind: "notice", notice: kind, text });
}

function addEntry(conv, entry) {
  conv.entries.push(entry);
  const over = conv.entries.length - KEPT;
  if (over > 0) {
    conv.entries.splice(0, over);
    conv.historyMark = Math.max(0, conv.historyMark - over);
  }
  if (state.current === conv.key) {
    appendEntry(entry);
  } else if (entry.kind === "message") {
    conv.unread = true;
    renderConversations();
  }
}

function show(key) {
  state.current = key;
  const conv = state.conversations.get(key);
  if (conv) conv.unread = false;
  renderAll();
}

// --- rendering --------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "class") node.className = v;
    else node[k] = v;
  }
  node.append(...children);
  return node;
}

function setStatus(stateName, text, node) {
  const status = $("status");
  status.dataset.state = stateName;
  if (node !== undefined) status.dataset.node = node;
  status.textContent = text;
  renderCompose();
}

function showProblem(text) {
  $("problem").textContent = text;
  $("problem").hidden = false;
}

function hideProblem() {
  $("problem").hidden = true;
}

function showError(f, req) {
  const what = req ? ` (${req.frame.type}${req.frame.room ? " " + req.frame.room : ""})` : "";
  const item = el("li", { dataset: { testid: "error", code: String(f.code) } },
    el("span", { class: "code" }, String(f.code)), `${f.message || ""}${what}`);
  const list = $("errors");
  list.prepend(item);
  while (list.children.length > ERRORS_KEPT) list.lastChild.remove();
  $("errors-head").hidden = false;
}

function renderAll() {
  renderConversations();
  renderMessages();
  renderPresence();
  renderCompose();
}

function renderConversations() {
  const rooms = [];
  const directs = [];
  for (const conv of state.conversations.values()) {
    const button = el("button", {
      type: "button",
      textContent: conv.label,
      title: conv.kind === "user" ? conv.id : "",
      class: conv.unread ? "unread" : "",
      dataset: { testid: "conversation", key: conv.key },
    });
    button.setAttribute("aria-current", String(conv.key === state.current));
    button.addEventListener("click", () => show(conv.key));
    (conv.kind === "room" ? rooms : directs).push(el("li", {}, button));
  }
  $("rooms").replaceChildren(...rooms);
  $("directs").replaceChildren(...directs);
}

function renderMessages() {
  const conv = state.conversations.get(state.current);
  $("title").textContent = conv ? conv.label : "No conversation";
  $("title").title = conv && conv.kind === "user" ? conv.id : "";
  $("leave").hidden = !conv || conv.kind !== "room";
  $("messages").replaceChildren(...(conv ? conv.entries.map(entryNode) : []));
  scrollDown(true);
}

function appendEntry(entry) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(entryNode(entry));
  scrollDown(atBottom);
}

function scrollDown(really) {
  const list = $("messages");
  if (really) list.scrollTop = list.scrollHeight;
}

function entryNode(entry) {
  if (entry.kind === "notice") {
    return el("li", { class: "notice", textContent: entry.text, dataset: { testid: "notice", kind: entry.notice } });
  }
  const data = entry.data;
  const text = data && typeof data === "object" && typeof data.text === "string";
  const when = new Date(entry.time);
  const dataset = { testid: "message", from: entry.from, recovered: String(entry.recovered === true) };
  if (entry.offset !== undefined) dataset.offset = String(entry.offset);
  return el("li", { dataset },
    el("time", { class: "time", dateTime: when.toISOString(), textContent: when.toLocaleTimeString() }),
    el("span", { class: "name", textContent: entry.name || entry.from || "(the hub's API)", title: entry.from }),
    el("span", { class: text ? "text" : "text json", textContent: text ? data.text : JSON.stringify(data) }));
}

function renderPresence() {
  const conv = state.conversations.get(state.current);
  const room = conv && conv.kind === "room" ? state.rooms.get(conv.id) : null;
  const people = room ? [...room.presence].sort((a, b) => a[1].localeCompare(b[1])) : [];
  $("presence").replaceChildren(...people.map(([user, name]) => {
    const item = el("li", { dataset: { testid: "person", user } });
    if (state.me && user === state.me.user) {
      item.append(el("span", { class: "me", textContent: `${name} (you)` }));
    } else {
      const button = el("button", { type: "button", textContent: name, title: `message ${user} directly` });
      button.addEventListener("click", () => show(conversation("user", user, name).key));
      item.append(button);
    }
    return item;
  }));
}

function renderCompose() {
  const conv = state.conversations.get(state.current);
  const online = Boolean(state.me && state.ws && state.ws.readyState === WebSocket.OPEN);
  const ready = online && conv && (conv.kind === "user" || (state.rooms.get(conv.id) || {}).joined);
  $("text").disabled = !ready;
  $("send").disabled = !ready;
}

// --- what the user does -----------------------------------------------------------------

function onLogin(e) {
  e.preventDefault();
  const token = $("token").value.trim();
  const name = $("name").value.trim();
  if (!token && !name) {
    showProblem("Pick a name, or sign in with a token.");
    return;
  }
  state.login = token ? { token } : { name };
  if (name) remember(name);
  hideProblem();
  state.attempt = 0;
  if (state.ws) {
    const old = state.ws;
    state.ws = null;
    old.close();
  }
  connect();
}

function onJoin(e) {
  e.preventDefault();
  const name = $("room").value.trim();
  if (!ROOM_NAME.test(name)) {
    showError({ code: "bad_request", message: "a room name is 1 to 128 characters from A-Z a-z 0-9 - _ . :" });
    return;
  }
  if (!state.rooms.has(name)) {
    state.rooms.set(name, { epoch: null, next: 0, joined: false, presence: new Map() });
    conversation("room", name);
    join(name);
  }
  show("room:" + name);
}

function onLeave() {
  const conv = state.conversations.get(state.current);
  if (!conv || conv.kind !== "room") return;
  request({ type: "leave", room: conv.id });
  state.rooms.delete(conv.id);
  dropConversation(conv.key);
  renderAll();
}

function onSend(e) {
  e.preventDefault();
  const conv = state.conversations.get(state.current);
  const text = $("text").value.trim();
  if (!conv || !text) return;
  const data = { text };
  const sent = conv.kind === "room"
    ? request({ type: "publish", room: conv.id, data })
    : request({ type: "send", to: conv.id, data });
  if (sent) $("text").value = "";
}

function remember(name) {
  try {
    localStorage.setItem("lintas-chat-name", name);
  } catch {
    // Storage refused (private mode, policy): the name is simply not prefilled next time.
  }
}

function remembered() {
  try {
    return localStorage.getItem("lintas-chat-name") || "";
  } catch {
    return "";
  }
}

function start() {
  $("login").addEventListener("submit", onLogin);
  $("join-form").addEventListener("submit", onJoin);
  $("leave").addEventListener("click", onLeave);
  $("compose").addEventListener("submit", onSend);
  // Back on the network: no reason to sit out the rest of the backoff.
  window.addEventListener("online", () => {
    if (state.retryTimer) connect();
  });
  $("name").value = remembered();
  const token = new URLSearchParams(location.search).get("token");
  if (token) {
    $("token").value = token;
    $("token").closest("details").open = true;
    $("login").requestSubmit();
  }
}

start();
