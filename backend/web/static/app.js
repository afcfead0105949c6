/* task-assistant playground: sign in, chat over Server-Sent Events, tasks and conversations
   through the REST API. Plain JavaScript: no build step, no dependencies, no inline script.
   The token is kept in sessionStorage (this tab only), never in localStorage, and so is the
   development login secret the server prints at start (`/?login=...`), which the page takes out
   of the address bar at once. */
"use strict";

const TOKEN_KEY = "task-assistant.token";
const CONVERSATION_KEY = "task-assistant.conversation";
const LOGIN_KEY = "task-assistant.dev-login";
const MAX_PAGES = 100;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  conversationId: null,
  conversationsCursor: null,
  filter: "all",
  /* The message being sent, or the last one that failed: {text, body, key}. Sending the same
     text again reuses its body and Idempotency-Key, so the server answers it at most once. */
  pending: null,
  sending: false,
  retryUntil: 0,
  retryTimer: null,
  tasksRun: 0,
  openRun: 0,
};

/* ---------- the API ---------- */

class ApiError extends Error {
  constructor(status, detail, code, retryAfter) {
    super(detail);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function parseRetryAfter(value) {
  if (!value) return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value);
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

async function errorFrom(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    /* not JSON: a proxy's error page, say */
  }
  const detail = typeof body.detail === "string" ? body.detail : response.statusText;
  return new ApiError(response.status, detail || "", body.code || "",
    parseRetryAfter(response.headers.get("Retry-After")));
}

function headers(extra) {
  const all = { Accept: "application/json", ...extra };
  if (state.token) all.Authorization = `Bearer ${state.token}`;
  return all;
}

async function api(path, { method = "GET", body, expire = true } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) {
    const error = await errorFrom(response);
    if (error.status === 401 && expire) expireSession();
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

/* Follow `next_cursor` until the last page. */
async function allPages(path, params, key) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const query = new URLSearchParams(params);
    if (cursor) query.set("after", cursor);
    const body = await api(`${path}?${query}`);
    items.push(...body[key]);
    cursor = body.next_cursor ?? null;
    if (cursor === null) break;
  }
  return items;
}

function describe(error) {
  if (!(error instanceof ApiError)) {
    return "Could not reach the server (network error). Check your connection, then try again.";
  }
  // A 429's own detail names a number of seconds that the countdown keeps current instead.
  const said = error.message && !([429, 503].includes(error.status) && error.retryAfter) ? ` The server said: “${error.message}”.` : "";
  switch (error.code) {
    case "ai_provider_auth_failed":
      return `The AI provider refused this server's API key, so no message can be answered. Sending again will not help: the server's operator must fix its key setting.${said}`;
    case "ai_model_not_found":
      return `The AI provider does not know the model this server is set to use, so no message can be answered. Sending again will not help: the server's operator must fix its model setting.${said}`;
    case "database_unavailable":
      return `The server's database is unavailable for the moment. Try again in a moment.${said}`;
    default:
      break;
  }
  switch (error.status) {
    case 400: return `The server could not read the request.${said}`;
    case 401: return `Your token is missing, expired or refused. Sign in again.${said}`;
    case 403: return `This is not allowed.${said}`;
    case 404: return `Not found: it may have been deleted.${said}`;
    case 409: return `The conversation is still answering another message. Wait a moment, then send again.${said}`;
    case 413: return `The message is too large for the server. Shorten it, then send again.${said}`;
    case 422: return `The server did not accept the input.${said}`;
    case 429: return `Too many messages in a short time.${said}`;
    case 502: return `The AI provider refused the request. Sending again will not help until the server's operator fixes its configuration.${said}`;
    case 503: if (error.retryAfter) return `The AI service is busy (rate limited).${said}`;
      return `The service is temporarily unavailable (its database or AI provider). Try again in a moment.${said}`;
    case 504: return `The AI service did not answer in time. Send again to retry.${said}`;
    default: return `The request failed (HTTP ${error.status}).${said}`;
  }
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16)); // plain-HTTP pages lack randomUUID
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

function setStatus(id, text) {
  $(id).textContent = text;
}

/* ---------- signing in ---------- */

function userFromToken(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return String(claims.name || claims.email || claims.sub || "unknown");
  } catch {
    return "unknown";
  }
}

function showSigninError(text) {
  $("signin-error").textContent = text;
  $("signin-error").hidden = !text;
}

async function signIn(token) {
  state.token = token;
  try {
    await api("/api/conversations?limit=1", { expire: false }); // check the token before keeping it
  } catch (error) {
    state.token = null;
    showSigninError(describe(error));
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  showSigninError("");
  enterApp();
}

async function devSignIn(event) {
  event.preventDefault();
  const user = $("dev-user").value.trim();
  if (!user) {
    showSigninError("Type a user name first.");
    $("dev-user").focus();
    return;
  }
  const login = sessionStorage.getItem(LOGIN_KEY);
  if (!login) {
    showSigninError("Development sign-in needs the secret the server printed when it started: " +
      "open the address from its start log (http://127.0.0.1:8000/?login=…), or paste a bearer " +
      "token below.");
    return;
  }
  try {
    const response = await fetch("/api/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-Dev-Login": login },
      body: JSON.stringify({ user }),
    });
    if (response.status === 404 || response.status === 403) {
      const error = await errorFrom(response);
      showSigninError("Development sign-in is not available here: it works only in development " +
        "auth mode, on a server listening on a loopback address, reached without a proxy, " +
        "from the address with the secret the server printed at this start (a restart prints " +
        "a new one). Paste a bearer token instead. " +
        `(HTTP ${error.status}: ${error.message})`);
      return;
    }
    if (!response.ok) throw await errorFrom(response);
    await signIn((await response.json()).token);
  } catch (error) {
    showSigninError(describe(error));
  }
}

async function tokenSignIn(event) {
  event.preventDefault();
  const token = $("token-input").value.trim().replace(/^Bearer\s+/i, "");
  if (!token) {
    showSigninError("Paste a token first.");
    $("token-input").focus();
    return;
  }
  await signIn(token);
}

function resetApp() {
  clearInterval(state.retryTimer);
  Object.assign(state, { conversationId: null, conversationsCursor: null, pending: null, retryUntil: 0 });
  $("conversation-list").replaceChildren();
  $("task-list").replaceChildren();
  clearChat();
  hideChatError();
}

function showSignin() {
  $("app").hidden = true;
  $("whoami").hidden = true;
  $("sign-out").hidden = true;
  $("signin").hidden = false;
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(CONVERSATION_KEY);
  state.token = null;
  resetApp();
  $("message").value = "";
  $("token-input").value = "";
  showSignin();
  $("dev-user").focus();
}

/* The server refused the token mid-session: sign in again; the typed message stays. */
function expireSession() {
  if (!state.token) return;
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  resetApp();
  showSignin();
  showSigninError("Your token expired or was refused. Sign in again; your message is kept.");
}

function enterApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("whoami-name").textContent = userFromToken(state.token);
  $("whoami").hidden = false;
  $("sign-out").hidden = false;
  showPanel("chat");
  loadConversations(false);
  loadTasks();
  const stored = sessionStorage.getItem(CONVERSATION_KEY);
  if (stored) openConversation(stored);
  $("message").focus();
}

/* ---------- chat ---------- */

function clearChat() {
  $("messages").replaceChildren();
  $("chat-heading").textContent = "New conversation";
  $("chat-empty").hidden = false;
}

function addMessage(role, text, scroll = true) {
  const body = el("div", { class: "text", text });
  const chips = el("ul", { class: "chips" });
  const item = el("article", { class: `message ${role}` },
    el("p", { class: "who", text: role === "user" ? "You" : "Assistant" }), chips, body);
  $("messages").append(item);
  $("chat-empty").hidden = true;
  if (scroll) showEnd(item);
  return { item, body, chips, open: [] };
}

/* Scroll the log (and the page) so that `item`'s end is in view. Called again whenever the item
   grows, as when its tool-call chips, which sit above its text, are added. */
function showEnd(item) {
  item.scrollIntoView({ block: "end" });
}

function summarize(result) {
  if (!result || typeof result !== "object") return "done";
  if (result.error) return `failed: ${result.error}`;
  if (Array.isArray(result.tasks)) return `${result.tasks.length} task${result.tasks.length === 1 ? "" : "s"}`;
  const what = [result.status, result.title && `“${result.title}”`].filter(Boolean).join(" ");
  return what || "done";
}

function addChip(reply, tool, args) {
  const summary = el("span", { class: "chip-summary", text: "running…" });
  const result = el("pre", { text: "…" });
  const chip = el("li", { class: "chip running" },
    el("details", {},
      el("summary", {}, el("span", { class: "chip-tool", text: tool }), " ", summary),
      el("p", { class: "chip-label", text: "Arguments" }),
      el("pre", { text: JSON.stringify(args ?? {}, null, 2) }),
      el("p", { class: "chip-label", text: "Result" }),
      result));
  reply.chips.append(chip);
  const entry = { tool, chip, summary, result };
  reply.open.push(entry);
  return entry;
}

function finishChip(entry, value) {
  entry.summary.textContent = summarize(value);
  entry.result.textContent = JSON.stringify(value ?? null, null, 2);
  entry.chip.classList.remove("running");
  entry.chip.classList.add(value && value.error ? "failed" : "ok");
}

function renderToolCalls(reply, calls) {
  for (const call of calls || []) finishChip(addChip(reply, call.tool, call.arguments), call.result);
}

/* Apply one stream event; true when the turn is done. */
function handleEvent(event, reply) {
  switch (event.type) {
    case "conversation":
      if (state.conversationId !== event.conversation_id) {
        rememberConversation(event.conversation_id);
        loadConversations(false);
      }
      return false;
    case "text.delta":
      reply.body.append(event.delta);
      reply.item.scrollIntoView({ block: "end" });
      return false;
    case "tool_call":
      addChip(reply, event.tool, event.arguments);
      showEnd(reply.item);
      return false;
    case "tool_result": {
      const entry = reply.open.find((e) => e.tool === event.tool && e.chip.classList.contains("running"));
      finishChip(entry || addChip(reply, event.tool, {}), event.result);
      loadTasks();
      return false;
    }
    case "done":
      if (!reply.body.textContent) reply.body.textContent = event.response;
      if (!reply.open.length && event.tool_calls && event.tool_calls.length) {
        renderToolCalls(reply, event.tool_calls); // a replayed answer carries its tool calls here
        loadTasks();
      }
      showEnd(reply.item);
      loadConversations(false); // the title may have been set by this turn
      return true;
    case "error":
      throw new ApiError(event.status || 500, event.detail || "", event.code || "", event.retry_after ?? null);
    default:
      return false;
  }
}

async function readEvents(response, reply) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let finished = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (data && handleEvent(JSON.parse(data), reply)) finished = true;
    }
  }
  return finished;
}

function retryBlocked() {
  return Date.now() < state.retryUntil;
}

function updateSend() {
  $("send").disabled = state.sending || retryBlocked();
}

function startCountdown(seconds) {
  clearInterval(state.retryTimer);
  state.retryUntil = Date.now() + seconds * 1000;
  const countdown = $("countdown");
  countdown.hidden = false;
  const tick = () => {
    const left = Math.ceil((state.retryUntil - Date.now()) / 1000);
    if (left <= 0) {
      clearInterval(state.retryTimer);
      countdown.textContent = "You can send again now.";
      updateSend();
      return;
    }
    countdown.textContent = `You can send again in ${left} s.`;
  };
  tick();
  state.retryTimer = setInterval(tick, 1000);
  updateSend();
}

function showChatText(text) {
  $("chat-error").textContent = text;
  $("chat-error").hidden = false;
}

function showChatError(error, sameKey) {
  let kept = " Your message is kept: press Send to resend it.";
  if (error instanceof ApiError && error.status === 401) kept = "";
  if (error instanceof ApiError && error.status === 502) kept = " Your message is kept.";
  if (!(error instanceof ApiError) && sameKey) {
    kept += " It goes with the same Idempotency-Key, so the server runs it at most once.";
  }
  showChatText(describe(error) + kept);
  if (error instanceof ApiError && [429, 503].includes(error.status) && error.retryAfter) startCountdown(error.retryAfter);
}

function hideChatError() {
  $("chat-error").hidden = true;
  $("chat-error").textContent = "";
  if (!retryBlocked()) $("countdown").hidden = true;
}

function rememberConversation(id) {
  state.conversationId = id;
  if (id) sessionStorage.setItem(CONVERSATION_KEY, id);
  else sessionStorage.removeItem(CONVERSATION_KEY);
  markCurrentConversation();
}

async function send(event) {
  event.preventDefault();
  if (state.sending || retryBlocked()) return;
  const text = $("message").value;
  if (!text.trim()) {
    showChatText("Type a message first.");
    $("message").focus();
    return;
  }
  if (!state.pending || state.pending.text !== text) {
    state.pending = {
      text,
      key: newKey(),
      body: { message: text, conversation_id: state.conversationId, stream: true },
    };
  }
  const pending = state.pending;
  hideChatError();
  state.sending = true;
  updateSend();
  const question = addMessage("user", text);
  const reply = addMessage("assistant", "");
  reply.item.classList.add("streaming");
  $("messages").setAttribute("aria-busy", "true");
  let streamed = false;
  try {
    const response = await fetch("/api/chat", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream", "Idempotency-Key": pending.key }),
      body: JSON.stringify(pending.body),
    });
    if (!response.ok) throw await errorFrom(response);
    streamed = true;
    if (!(await readEvents(response, reply))) {
      throw new TypeError("the stream ended before the reply finished");
    }
    state.pending = null;
    $("message").value = "";
  } catch (error) {
    if (streamed) {
      reply.item.classList.add("failed");
      reply.item.append(el("p", { class: "note", text: "This reply did not finish." }));
      loadTasks(); // tools may have run before it stopped
    } else {
      question.item.remove();
      reply.item.remove();
      $("chat-empty").hidden = $("messages").children.length > 0;
    }
    // The server said the turn failed and released its key: a resend is a new request, to the
    // conversation now shown. Otherwise (no answer, or a cut stream) the outcome is unknown, so a
    // resend repeats the same request with the same key and the server answers it at most once.
    if (streamed && error instanceof ApiError) state.pending = null;
    showChatError(error, state.pending !== null);
    if (error instanceof ApiError && error.status === 401) expireSession();
  } finally {
    state.sending = false;
    reply.item.classList.remove("streaming");
    $("messages").removeAttribute("aria-busy");
    updateSend();
  }
}

function onMessageKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
}

/* ---------- conversations ---------- */

function conversationTitle(conversation) {
  if (conversation.title) return conversation.title;
  return `Untitled, ${new Date(conversation.created_at).toLocaleString()}`;
}

function markCurrentConversation() {
  for (const item of $("conversation-list").children) {
    const open = item.querySelector(".conversation-open");
    if (open) open.setAttribute("aria-current", item.dataset.id === state.conversationId ? "true" : "false");
  }
}

function conversationItem(conversation) {
  const title = conversationTitle(conversation);
  const item = el("li", { "data-id": conversation.id });
  const show = () => {
    item.replaceChildren(
      el("button", { type: "button", class: "conversation-open", text: title, onclick: () => { openConversation(conversation.id); showPanel("chat"); } }),
      el("div", { class: "row-actions" },
        el("button", { type: "button", class: "secondary small", text: "Rename", "aria-label": `Rename conversation: ${title}`, onclick: rename }),
        el("button", { type: "button", class: "danger small", text: "Delete", "aria-label": `Delete conversation: ${title}`, onclick: remove })));
    markCurrentConversation();
  };
  const rename = () => {
    const input = el("input", { id: `rename-${conversation.id}`, value: conversation.title || "", maxlength: "200" });
    const cancel = () => { show(); item.querySelector(".conversation-open").focus(); };
    input.addEventListener("keydown", (e) => { if (e.key === "Escape") cancel(); });
    const form = el("form", { class: "rename", onsubmit: async (e) => {
      e.preventDefault();
      try {
        const updated = await api(`/api/conversations/${conversation.id}`, { method: "PATCH", body: { title: input.value } });
        conversation.title = updated.title;
        if (conversation.id === state.conversationId) $("chat-heading").textContent = updated.title;
        await loadConversations(false);
        const again = $("conversation-list").querySelector(`[data-id="${conversation.id}"] .conversation-open`);
        if (again) again.focus();
        setStatus("conversations-status", "Conversation renamed.");
      } catch (error) {
        setStatus("conversations-status", describe(error));
      }
    } },
    el("label", { for: input.id, text: "New title" }), input,
    el("div", { class: "row-actions" },
      el("button", { type: "submit", class: "small", text: "Save" }),
      el("button", { type: "button", class: "secondary small", text: "Cancel", onclick: cancel })));
    item.replaceChildren(form);
    input.focus();
    input.select();
  };
  const remove = async () => {
    if (!window.confirm(`Delete the conversation “${title}”? Its messages are deleted too.`)) return;
    try {
      await api(`/api/conversations/${conversation.id}`, { method: "DELETE" });
      if (conversation.id === state.conversationId) newConversation(false);
      await loadConversations(false);
      setStatus("conversations-status", "Conversation deleted.");
      $("new-conversation").focus();
    } catch (error) {
      setStatus("conversations-status", describe(error));
    }
  };
  show();
  return item;
}

async function loadConversations(more) {
  const query = new URLSearchParams({ limit: "20" });
  if (more && state.conversationsCursor) query.set("after", state.conversationsCursor);
  try {
    const page = await api(`/api/conversations?${query}`);
    const items = page.conversations.map(conversationItem);
    if (more) $("conversation-list").append(...items);
    else $("conversation-list").replaceChildren(...items);
    state.conversationsCursor = page.next_cursor;
    $("more-conversations").hidden = !page.next_cursor;
    markCurrentConversation();
    const current = page.conversations.find((c) => c.id === state.conversationId);
    if (current) $("chat-heading").textContent = conversationTitle(current);
    setStatus("conversations-status", $("conversation-list").children.length ? "" : "No conversations yet.");
  } catch (error) {
    setStatus("conversations-status", describe(error));
  }
}

function newConversation(focus = true) {
  state.openRun += 1;
  state.pending = null;
  rememberConversation(null);
  clearChat();
  hideChatError();
  showPanel("chat");
  if (focus) $("message").focus();
}

/* Open a conversation with its whole history, page after page (oldest first). */
async function openConversation(id) {
  const run = ++state.openRun;
  state.pending = null;
  rememberConversation(id);
  clearChat();
  hideChatError();
  $("chat-heading").textContent = "Loading…";
  let after = null;
  try {
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const query = new URLSearchParams({ limit: "50" });
      if (after !== null) query.set("after", after);
      const body = await api(`/api/conversations/${id}?${query}`);
      if (run !== state.openRun) return;
      $("chat-heading").textContent = conversationTitle(body);
      let last = null;
      for (const message of body.messages) {
        if (message.role !== "user" && message.role !== "assistant") continue;
        last = addMessage(message.role, message.content, false);
        renderToolCalls(last, message.tool_calls);
      }
      // To the end once the page's messages are in, chips and all; once more after the browser
      // has laid them out, in case anything still grew.
      if (last) {
        showEnd(last.item);
        requestAnimationFrame(() => { if (run === state.openRun) showEnd(last.item); });
      }
      after = body.next_cursor ?? null;
      if (after === null) break;
    }
  } catch (error) {
    if (run !== state.openRun) return;
    if (error instanceof ApiError && error.status === 404) {
      newConversation(false);
      setStatus("conversations-status", "That conversation no longer exists.");
    } else {
      $("chat-heading").textContent = "Conversation";
      showChatText(describe(error));
    }
  }
}

/* ---------- tasks ---------- */

function taskItem(task) {
  const id = `task-${task.id}`;
  const box = el("input", { type: "checkbox", id, checked: task.completed });
  box.addEventListener("change", async () => {
    box.disabled = true;
    try {
      await api(`/api/tasks/${task.id}`, { method: "PATCH", body: { completed: box.checked } });
      setStatus("tasks-status", box.checked ? `Completed “${task.title}”.` : `Reopened “${task.title}”.`);
      await loadTasks();
    } catch (error) {
      box.checked = !box.checked;
      setStatus("tasks-status", describe(error));
    } finally {
      box.disabled = false;
    }
  });
  const remove = async () => {
    try {
      await api(`/api/tasks/${task.id}`, { method: "DELETE" });
      setStatus("tasks-status", `Deleted “${task.title}”.`);
      await loadTasks();
      $("task-filter").focus();
    } catch (error) {
      setStatus("tasks-status", describe(error));
    }
  };
  const item = el("li", { class: task.completed ? "task done" : "task", "data-id": String(task.id) },
    box,
    el("div", { class: "task-text" },
      el("label", { for: id, text: task.title }),
      task.description ? el("p", { class: "task-description", text: task.description }) : ""),
    el("button", { type: "button", class: "danger small", text: "Delete", "aria-label": `Delete task: ${task.title}`, onclick: remove }));
  return item;
}

async function loadTasks() {
  const run = ++state.tasksRun;
  const focused = document.activeElement && document.activeElement.id;
  try {
    const tasks = await allPages("/api/tasks", { status: state.filter }, "tasks");
    if (run !== state.tasksRun) return; // a newer refresh is on its way
    $("task-list").replaceChildren(...tasks.map(taskItem));
    const empty = { all: "No tasks yet. Ask the assistant to add one.", pending: "Nothing pending.", completed: "Nothing completed yet." };
    if (!tasks.length) setStatus("tasks-status", empty[state.filter]);
    else if (Object.values(empty).includes($("tasks-status").textContent)) setStatus("tasks-status", "");
    if (focused && focused.startsWith("task-") && $(focused)) $(focused).focus();
  } catch (error) {
    if (run === state.tasksRun) setStatus("tasks-status", describe(error));
  }
}

/* ---------- layout ---------- */

function showPanel(name) {
  $("app").dataset.panel = name;
  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.setAttribute("aria-pressed", tab.dataset.panel === name ? "true" : "false");
  }
}

/* `/?login=<secret>`, as the server prints it at start: keep the secret for this tab and take it
   out of the address bar (and so out of the history and of anything copied from there). */
function takeLoginSecret() {
  const url = new URL(window.location.href);
  const login = url.searchParams.get("login");
  if (login === null) return;
  if (login) sessionStorage.setItem(LOGIN_KEY, login);
  url.searchParams.delete("login");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
}

function start() {
  takeLoginSecret();
  $("dev-form").addEventListener("submit", devSignIn);
  $("token-form").addEventListener("submit", tokenSignIn);
  $("sign-out").addEventListener("click", signOut);
  $("composer").addEventListener("submit", send);
  $("message").addEventListener("keydown", onMessageKey);
  $("new-conversation").addEventListener("click", () => newConversation(true));
  $("more-conversations").addEventListener("click", () => loadConversations(true));
  $("refresh-tasks").addEventListener("click", loadTasks);
  $("task-filter").addEventListener("change", (e) => {
    state.filter = e.target.value;
    setStatus("tasks-status", "");
    loadTasks();
  });
  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.addEventListener("click", () => showPanel(tab.dataset.panel));
  }
  state.token = sessionStorage.getItem(TOKEN_KEY);
  if (state.token) {
    enterApp();
  } else {
    showSignin();
    $("dev-user").focus();
  }
}

start();
