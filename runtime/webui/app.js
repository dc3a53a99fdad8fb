// chatfile web UI: a client of the same /v1/chat/completions endpoint every OpenAI client uses.
// State lives in localStorage (conversations, settings, the API key), so it survives reloads and never
// leaves this browser. Model output is Markdown rendered by marked, sanitized by DOMPurify before it
// touches the DOM (and the server's Content-Security-Policy forbids inline script besides).
import { renderMarkdown } from "./render.js";

const STORE = { conversations: "chatfile.conversations", settings: "chatfile.settings", apiKey: "chatfile.apiKey" };
const DEFAULTS = { system: "", temperature: 0.8, top_p: 0.95, top_k: 40, min_p: 0.05, repeat_penalty: 1.0,
                   max_tokens: "", seed: "" };
// The page's controls, looked up once at start-up before any model output is on the page, so nothing a
// reply renders (an element with the same id, say) can stand in for one of them.
const ui = {};
const $ = (id) => ui[id];
function captureControls() {
  for (const el of document.querySelectorAll("body [id]")) ui[el.id] = el;
}

const state = {
  conversations: load(STORE.conversations, []),   // [{id, title, updated, messages: [{role, content, stats}]}]
  settings: { ...DEFAULTS, ...load(STORE.settings, {}) },
  currentId: null,
  controller: null,                               // AbortController of the reply being streamed
};

function load(key, fallback) {
  try { const v = JSON.parse(localStorage.getItem(key)); return v ?? fallback; } catch { return fallback; }
}
function save() {
  localStorage.setItem(STORE.conversations, JSON.stringify(state.conversations));
  localStorage.setItem(STORE.settings, JSON.stringify(state.settings));
}
function current() { return state.conversations.find((c) => c.id === state.currentId) || null; }
function setStatus(text, isError = false) { $("status").textContent = text; $("status").classList.toggle("error", isError); }

// ---- sidebar ----------------------------------------------------------------------------------------
function renderList() {
  const list = $("conversations");
  list.replaceChildren();
  for (const c of [...state.conversations].sort((a, b) => b.updated - a.updated)) {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    li.classList.toggle("active", c.id === state.currentId);
    const title = document.createElement("span");
    title.className = "title"; title.textContent = c.title || "New chat"; title.title = title.textContent;
    title.addEventListener("click", () => { if (!state.controller) { state.currentId = c.id; renderAll(); } });
    const del = document.createElement("button");
    del.type = "button"; del.className = "delete"; del.textContent = "×"; del.title = "Delete conversation";
    del.addEventListener("click", () => deleteConversation(c.id));
    li.append(title, del);
    list.appendChild(li);
  }
}
function deleteConversation(id) {
  if (state.controller && id === state.currentId) return;
  state.conversations = state.conversations.filter((c) => c.id !== id);
  if (state.currentId === id) state.currentId = null;
  save(); renderAll();
}
function newChat() {
  if (state.controller) return;
  state.currentId = null; renderAll(); $("input").focus();
}

// ---- messages ---------------------------------------------------------------------------------------
function renderAll() { renderList(); renderMessages(); }

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  const conv = current();
  if (!conv) return;
  conv.messages.forEach((m, i) => box.appendChild(messageElement(conv, m, i)));
  box.scrollTop = box.scrollHeight;
}

function messageElement(conv, m, index) {
  const el = document.createElement("div");
  el.className = `message ${m.role}`;
  const role = document.createElement("div");
  role.className = "role"; role.textContent = m.role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  if (m.role === "user") body.textContent = m.content; else renderMarkdown(body, m.content);
  const meta = document.createElement("div");
  meta.className = "meta";
  const last = index === conv.messages.length - 1;
  if (m.role === "assistant") {
    if (m.stats) meta.append(span(m.stats, "stats"));
    if (m.error) meta.append(span(m.error, "error"));
    if (last) meta.append(button("Regenerate", "regenerate", () => regenerate()));
  } else {
    meta.append(button("Edit", "edit", () => startEdit(el, conv, index)));
  }
  el.append(role, body, meta);
  return el;
}
function span(text, cls) { const s = document.createElement("span"); s.className = cls; s.textContent = text; return s; }
function button(text, cls, onclick) {
  const b = document.createElement("button");
  b.type = "button"; b.className = cls; b.textContent = text; b.addEventListener("click", onclick); return b;
}

function startEdit(el, conv, index) {
  if (state.controller) return;
  const body = el.querySelector(".body");
  const box = document.createElement("div");
  box.className = "edit-box";
  const area = document.createElement("textarea");
  area.value = conv.messages[index].content; area.rows = 4;
  const send = button("Save & send", "save-edit", () => {
    const text = area.value.trim();
    if (!text) return;
    conv.messages = conv.messages.slice(0, index);   // everything after the edited message is replaced
    conv.messages.push({ role: "user", content: text });
    save(); renderMessages(); complete(conv);
  });
  const cancel = button("Cancel", "cancel-edit", () => renderMessages());
  box.append(area, send, cancel);
  body.replaceWith(box);
  area.focus();
}

function regenerate() {
  const conv = current();
  if (!conv || state.controller) return;
  if (conv.messages.length && conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
  save(); renderMessages(); complete(conv);
}

function send(text) {
  let conv = current();
  if (!conv) {
    conv = { id: crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random(),
             title: text.slice(0, 60), updated: Date.now(), messages: [] };
    state.conversations.push(conv);
    state.currentId = conv.id;
  }
  conv.messages.push({ role: "user", content: text });
  conv.updated = Date.now();
  save(); renderAll(); complete(conv);
}

// ---- the request ------------------------------------------------------------------------------------
function requestBody(conv) {
  const s = state.settings;
  const messages = [];
  if (s.system.trim()) messages.push({ role: "system", content: s.system });
  for (const m of conv.messages) messages.push({ role: m.role, content: m.content });
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  for (const k of ["temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed"]) {
    if (s[k] !== "" && s[k] !== null && !Number.isNaN(Number(s[k]))) body[k] = Number(s[k]);
  }
  return body;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem(STORE.apiKey);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function complete(conv) {
  const request = JSON.stringify(requestBody(conv));     // the conversation so far, before the reply slot
  const reply = { role: "assistant", content: "" };
  conv.messages.push(reply);
  renderMessages();
  const el = $("messages").lastElementChild;
  const body = el.querySelector(".body");
  el.classList.add("streaming");
  setBusy(true);
  const controller = new AbortController();
  state.controller = controller;
  const started = performance.now();
  let firstToken = null, nChunks = 0, timings = null, usage = null, pending = false;
  const paint = () => {
    pending = false; renderMarkdown(body, reply.content);
    $("messages").scrollTop = $("messages").scrollHeight;
  };
  try {
    const res = await fetch("v1/chat/completions", { method: "POST", headers: headers(),
                                                     body: request, signal: controller.signal });
    if (res.status === 401) { askForKey(); throw new Error("this server needs an API key"); }
    if (!res.ok) throw new Error((await res.json().catch(() => null))?.error?.message || `HTTP ${res.status}`);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {           // one SSE event per blank-line-terminated block
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          if (chunk.timings) timings = chunk.timings;
          const delta = chunk.choices?.[0]?.delta?.content;
          if (delta) {
            if (firstToken === null) firstToken = performance.now();
            nChunks += 1;
            reply.content += delta;
            if (!pending) { pending = true; requestAnimationFrame(paint); }
          }
        }
      }
    }
    reply.stats = stats(timings, usage, nChunks, firstToken, started);
  } catch (err) {
    if (err.name === "AbortError") reply.stats = "stopped" + (nChunks ? ` · ${stats(null, null, nChunks, firstToken, started)}` : "");
    else { reply.error = String(err.message || err); setStatus(reply.error, true); }
  } finally {
    state.controller = null;
    setBusy(false);
    conv.updated = Date.now();
    save(); renderAll();
  }
}

function stats(timings, usage, nChunks, firstToken, started) {
  const n = timings?.predicted_n ?? usage?.completion_tokens ?? nChunks;
  let tps = timings?.predicted_per_second;
  if (tps == null && firstToken !== null) tps = nChunks / Math.max(1e-3, (performance.now() - firstToken) / 1000);
  const parts = [`${n} tokens`];
  if (tps != null) parts.push(`${tps.toFixed(1)} tokens/s`);
  if (timings?.cache_n) parts.push(`${timings.cache_n} prompt tokens reused`);
  else if (firstToken !== null && !timings) parts.push(`first token ${((firstToken - started) / 1000).toFixed(2)} s`);
  return parts.join(" · ");
}

function setBusy(busy) {
  $("send").hidden = busy; $("stop").hidden = !busy;
  if (!busy) setStatus("");
  else setStatus("generating…");
}

// ---- settings, API key, model name --------------------------------------------------------------------
const FIELDS = { "system-prompt": "system", temperature: "temperature", top_p: "top_p", top_k: "top_k",
                 min_p: "min_p", repeat_penalty: "repeat_penalty", max_tokens: "max_tokens", seed: "seed" };
function renderSettings() { for (const [id, k] of Object.entries(FIELDS)) $(id).value = state.settings[k]; }
function askForKey() { $("api-key-box").hidden = false; $("api-key").focus(); }

async function loadModel() {
  try {
    const res = await fetch("v1/models", { headers: headers() });
    if (res.status === 401) { askForKey(); $("model-name").textContent = "API key needed"; return; }
    const data = await res.json();
    const name = data.data?.[0]?.id || "model";
    $("model-name").textContent = name; document.title = `${name} · chatfile`;
  } catch (err) { setStatus(`server unreachable: ${err.message}`, true); }
}

function init() {
  captureControls();
  renderSettings(); renderAll(); loadModel();
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || state.controller) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("new-chat").addEventListener("click", newChat);
  $("settings-toggle").addEventListener("click", () => {
    const open = $("settings").hidden; $("settings").hidden = !open; $("settings-toggle").setAttribute("aria-expanded", open);
  });
  for (const [id, k] of Object.entries(FIELDS)) {
    $(id).addEventListener("change", () => { state.settings[k] = $(id).value; save(); });
  }
  $("settings-reset").addEventListener("click", () => { state.settings = { ...DEFAULTS }; save(); renderSettings(); });
  $("api-key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem(STORE.apiKey, $("api-key").value.trim());
    $("api-key-box").hidden = true; setStatus(""); loadModel();
  });
}

document.addEventListener("DOMContentLoaded", init);
