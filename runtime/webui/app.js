// chatfile web UI: a client of the same /v1/chat/completions endpoint every OpenAI client uses.
//
// Conversations are trees (store.js) kept in this browser's IndexedDB; the visible path of the open one
// is what the model is sent. Settings, theme and the API key live in localStorage. Model output goes
// through render.js, the only place where a reply becomes markup. Modules:
//   app.js      start-up, the conversation view, sending and streaming, settings, shortcuts
//   sidebar.js  the conversation list: search, open, delete, export, import
//   store.js    the conversation tree, storage, export/import shapes     files.js    text attachments
//   render.js   Markdown + math -> sanitized DOM                          api.js      HTTP
//   request.js  settings and what a request carries
"use strict";

import { getJSON, streamChat, apiKey, Unauthorized } from "./api.js";
import { readTextFile, formatBytes, FileRefused, MAX_FILE_BYTES } from "./files.js";
import { renderMarkdown, copyText } from "./render.js";
import { FIELD_IDS, SAMPLING, SETTINGS, loadOverrides, parseCustom, requestBody, serverDefaults, toolCalls } from "./request.js";
import { Sidebar } from "./sidebar.js";
import { Conversation, openStore, titleFrom } from "./store.js";

// The page's controls by id (camelCased), looked up once at start-up before any model output is on the
// page, so nothing a reply renders (an element with the same id, say) can stand in for one of them.
const ui = {};
function captureControls() {
  for (const el of document.querySelectorAll("body [id], head link[id]")) {
    ui[el.id.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = el;
  }
}

const state = {
  store: null,                   // store.js: IndexedDB (or localStorage) conversation store
  ready: null,                   // resolves once `store` is open and its conversations are listed
  convs: new Map(),              // id -> Conversation
  currentId: null,
  controller: null,              // AbortController of the reply being streamed
  saveDraft: null,               // while a reply streams: saves it as it stands
  overrides: {},                 // settings the user set: {system, temperature, ...} as typed
  attachments: [],               // files waiting in the composer: [{type: "textFile", name, content}]
};
const current = () => state.convs.get(state.currentId) || null;
let sidebar = null;

function setStatus(text, isError = false) { ui.status.textContent = text; ui.status.classList.toggle("error", isError); }
/** Save `conv`; resolves true once it is stored (false, with the error shown, if it could not be). */
function persist(conv) {
  saving(+1);
  return state.ready.then(() => state.store.save(conv)).then(() => true, (err) => {
    setStatus(`could not save the conversation: ${err.message || err}`, true);
    return false;
  }).finally(() => saving(-1));
}
let pendingSaves = 0;   // shown as <body data-saving="N"> while writes are in flight (tests wait on it)
function saving(delta) {
  pendingSaves += delta;
  if (pendingSaves > 0) document.body.dataset.saving = String(pendingSaves); else delete document.body.dataset.saving;
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function button(text, cls, onclick, label) {
  const b = el("button", cls, text);
  b.type = "button"; b.addEventListener("click", onclick);
  if (label) { b.title = label; b.setAttribute("aria-label", label); }
  return b;
}

// ---- settings: only what the user set is sent; the rest is the server's (GET /props) -----------------
function saveOverrides() { localStorage.setItem(SETTINGS, JSON.stringify(state.overrides)); }

function renderSettings() {
  for (const [k, id] of Object.entries(FIELD_IDS)) ui[id].value = state.overrides[k] ?? "";
}

function showServerDefaults(props) {
  const shown = serverDefaults(props);
  for (const k of SAMPLING) ui[k].placeholder = shown[k];
  const nCtx = props?.default_generation_settings?.n_ctx;
  if (nCtx) ui.modelName.title = `context: ${nCtx} tokens`;
}

// ---- the conversation view ----------------------------------------------------------------------------
const ROLE_NAMES = { user: "You", assistant: "Assistant", tool: "Tool result", system: "System" };
const parts = new WeakMap();   // message element -> {body, tools, meta}: found without querying model output

function renderAll() { sidebar.render(); renderMessages(); }

function renderMessages() {
  if (state.controller) return;                      // a reply is streaming into its element; redrawn at its end
  const conv = current();
  const path = conv ? conv.path() : [];
  if (!path.length) {
    ui.messages.replaceChildren(el("p", "empty", "Ask anything. Drop or paste a text file to include it. " +
                                               "Press Ctrl+/ for keyboard shortcuts."));
    return;
  }
  ui.messages.replaceChildren(...path.map((m) => messageElement(conv, m)));
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function messageElement(conv, m) {
  const box = el("div", `message ${m.role}`);
  const role = el("div", "role", ROLE_NAMES[m.role] || m.role);
  if (m.role === "tool" && m.toolCallId) role.textContent += ` · ${m.toolCallId}`;
  const body = el("div", "body");
  if (m.role === "assistant") {
    if (m.thinking) box.append(thinkingElement(m.thinking));
    renderMarkdown(body, m.content);
  } else {
    body.textContent = m.content;                  // user, tool and system text is shown as typed
  }
  const tools = el("div", "tool-calls");
  renderToolCalls(tools, toolCalls(m));
  const meta = el("div", "meta");
  fillMeta(meta, conv, m, box);
  box.append(role, body);
  if (m.role === "user") box.append(filesElement(m.extra));
  box.append(tools, meta);
  parts.set(box, { body, tools, meta });
  return box;
}

function thinkingElement(text) {
  const d = el("details", "thinking");
  d.append(el("summary", "", "Reasoning"), el("div", "", text));
  return d;
}

function filesElement(extra) {
  const box = el("div", "files");
  for (const f of extra || []) {
    if (f?.type !== "textFile" || typeof f.content !== "string" || typeof f.name !== "string") {
      // an imported image, audio or PDF attachment (llama-server's UI takes them): kept, not shown or sent
      if (typeof f?.type === "string") box.append(el("span", "file other", `${typeof f.name === "string" ? f.name : f.type} (${f.type}: not shown, not sent)`));
      continue;
    }
    const d = el("details", "file");
    d.append(el("summary", "", `${f.name} · ${formatBytes(new Blob([f.content]).size)}`), el("pre", "", f.content));
    box.append(d);
  }
  return box;
}

function renderToolCalls(box, calls) {
  box.replaceChildren(...calls.map((c) => {
    const call = el("div", "tool-call");
    let args = c?.function?.arguments ?? "";
    try { args = JSON.stringify(JSON.parse(args), null, 2); } catch { /* partial or not JSON: as sent */ }
    call.append(el("div", "tool-name", `Tool call: ${c?.function?.name || "?"}${c?.id ? ` · ${c.id}` : ""}`),
                el("pre", "", args));
    return call;
  }));
}

function fillMeta(meta, conv, m, box) {
  const { index, count } = conv.siblings(m);
  if (count > 1) {
    const nav = el("span", "siblings");
    const prev = button("‹", "sibling-prev", () => flip(conv, m, -1), "Previous version");
    const next = button("›", "sibling-next", () => flip(conv, m, +1), "Next version");
    prev.disabled = index === 0; next.disabled = index === count - 1;
    nav.append(prev, el("span", "sibling-pos", `${index + 1}/${count}`), next);
    meta.append(nav);
  }
  if (m.role === "assistant") {
    if (m.dropped) meta.append(el("span", "notice", `${m.dropped} earlier message${m.dropped === 1 ? " was" : "s were"} ` +
                                                     "left out to fit the model's context"));
    if (m.stats) meta.append(el("span", "stats", m.stats));
    if (m.error) meta.append(el("span", "error", m.error));
    meta.append(button("Copy", "copy", (e) => copyText(m.content, e.currentTarget)));
    meta.append(button("Regenerate", "regenerate", () => regenerate(conv, m), "Write another reply (kept as a new version)"));
  } else if (m.role === "user") {
    meta.append(button("Edit", "edit", () => startEdit(box, conv, m), "Edit (kept as a new version)"));
  }
}

function flip(conv, m, delta) {
  if (state.controller) return;
  conv.showSibling(m, delta);
  persist(conv); renderMessages();
}

function startEdit(box, conv, m) {
  if (state.controller) return;
  const { body } = parts.get(box);
  const form = el("div", "edit-box");
  const area = el("textarea");
  area.value = m.content; area.rows = Math.min(12, Math.max(3, m.content.split("\n").length));
  const save = button("Save & send", "save-edit", () => {
    const text = area.value.trim();
    if (!text && !m.extra?.length) return;
    const edited = conv.add(m.parent, { role: "user", content: text, ...(m.extra ? { extra: m.extra } : {}) });
    complete(conv, edited.id);
  });
  const cancel = button("Cancel", "cancel-edit", () => renderMessages());
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); save.click(); }
    if (e.key === "Escape") { e.stopPropagation(); cancel.click(); }
  });
  form.append(area, save, cancel);
  body.replaceWith(form);
  area.focus();
}

function regenerate(conv, m) {
  if (!state.controller) complete(conv, m.parent);
}

function openConversation(id) {
  if (state.controller) return;
  state.currentId = id;
  closeSidebar();
  renderAll();
}

function newChat() {
  if (state.controller) return;
  state.currentId = null;
  closeSidebar(); renderAll(); ui.input.focus();
}

// ---- sending and streaming ---------------------------------------------------------------------------
// A reply being written is saved every DRAFT_EVERY_MS and when the page is hidden (a phone switching apps
// may discard the tab), so closing the page keeps what was written so far, marked as incomplete.
const DRAFT_EVERY_MS = 2000;
const INCOMPLETE = "incomplete: the page was closed while this reply was written";

function send(text) {
  let conv = current();
  const files = state.attachments.splice(0);
  if (!conv) {
    conv = Conversation.create(titleFrom(text, files));
    state.convs.set(conv.id, conv);
    state.currentId = conv.id;
  }
  const asked = conv.add(conv.conv.currNode, { role: "user", content: text, ...(files.length ? { extra: files } : {}) });
  renderAttachments();
  complete(conv, asked.id);
}

async function complete(conv, parentId) {
  const request = requestBody(conv, parentId, state.overrides);   // the visible path up to the reply's parent
  const reply = conv.add(parentId, { role: "assistant", content: "" });
  persist(conv); renderAll();
  const box = ui.messages.lastElementChild;
  const { body, tools } = parts.get(box);
  box.classList.add("streaming");
  setBusy(true);
  const controller = new AbortController();
  state.controller = controller;
  const started = performance.now();
  const calls = [];
  let firstToken = null, nChunks = 0, timings = null, usage = null, pending = false, finish = null;
  let savedAt = performance.now();
  state.saveDraft = () => {
    savedAt = performance.now();
    reply.stats = INCOMPLETE;                        // replaced by the real stats line when the reply ends
    if (calls.length) reply.toolCalls = JSON.stringify(calls);
    persist(conv);
  };
  const paint = () => {
    pending = false;
    renderMarkdown(body, reply.content);
    if (calls.length) renderToolCalls(tools, calls);
    ui.messages.scrollTop = ui.messages.scrollHeight;
  };
  try {
    await streamChat(request, controller.signal, (chunk) => {
      if (chunk.dropped_messages) reply.dropped = chunk.dropped_messages;
      if (chunk.usage) usage = chunk.usage;
      if (chunk.timings) timings = chunk.timings;
      const delta = chunk.choices?.[0]?.delta || {};
      finish = chunk.choices?.[0]?.finish_reason || finish;
      if (delta.content || delta.reasoning_content || delta.tool_calls) {
        if (firstToken === null) firstToken = performance.now();
        nChunks += 1;
      }
      if (delta.content) reply.content += delta.content;
      if (delta.reasoning_content) reply.thinking = (reply.thinking || "") + delta.reasoning_content;
      for (const tc of delta.tool_calls || []) {
        const slot = calls[tc.index ?? calls.length] ||= { id: "", type: "function", function: { name: "", arguments: "" } };
        if (tc.id) slot.id = tc.id;
        if (tc.function?.name && !slot.function.name) slot.function.name = tc.function.name;
        if (tc.function?.arguments) slot.function.arguments += tc.function.arguments;
      }
      if (!pending) { pending = true; requestAnimationFrame(paint); }   // (no frames while the page is hidden)
      if (performance.now() - savedAt > DRAFT_EVERY_MS) state.saveDraft();
    });
    reply.stats = stats(timings, usage, nChunks, firstToken, started) +
                  (finish === "length" ? " · cut at the token limit" : "");
  } catch (err) {
    if (err.name === "AbortError") reply.stats = "stopped" + (nChunks ? ` · ${stats(null, null, nChunks, firstToken, started)}` : "");
    else {
      if (err instanceof Unauthorized) askForKey();
      reply.error = String(err.message || err);
      setStatus(reply.error, true);
    }
  } finally {
    state.saveDraft = null;
    if (reply.stats === INCOMPLETE) delete reply.stats;
    if (calls.length) reply.toolCalls = JSON.stringify(calls);
    if (timings) reply.timings = timings;
    state.controller = null;
    setBusy(false);
    conv.touch();
    persist(conv); renderAll();
  }
}

function stats(timings, usage, nChunks, firstToken, started) {
  const n = timings?.predicted_n ?? usage?.completion_tokens ?? nChunks;
  let tps = timings?.predicted_per_second;
  if (tps == null && firstToken !== null) tps = nChunks / Math.max(1e-3, (performance.now() - firstToken) / 1000);
  const out = [`${n} tokens`];
  if (tps != null) out.push(`${tps.toFixed(1)} tokens/s`);
  if (timings?.cache_n) out.push(`${timings.cache_n} prompt tokens reused`);
  else if (firstToken !== null && !timings) out.push(`first token ${((firstToken - started) / 1000).toFixed(2)} s`);
  return out.join(" · ");
}

function setBusy(busy) {
  ui.send.hidden = busy; ui.stop.hidden = !busy;
  setStatus(busy ? "generating…" : "");
}

// ---- attachments: drop, pick or paste text files -------------------------------------------------------
async function attachFiles(files) {
  const refused = [];
  for (const file of files) {
    try { state.attachments.push(await readTextFile(file)); }
    catch (err) { if (err instanceof FileRefused) refused.push(err.message); else throw err; }
  }
  renderAttachments();
  if (refused.length) setStatus(refused.join("; "), true);
  else if (files.length) setStatus("");
  ui.input.focus();
}

function renderAttachments() {
  ui.attachments.hidden = state.attachments.length === 0;
  ui.attachments.replaceChildren(...state.attachments.map((f, i) => {
    const chip = el("span", "chip", `${f.name} · ${formatBytes(new Blob([f.content]).size)}`);
    chip.append(button("×", "remove", () => { state.attachments.splice(i, 1); renderAttachments(); }, `Remove ${f.name}`));
    return chip;
  }));
}

function wireFiles() {
  ui.attach.title = `Attach a text file, up to ${formatBytes(MAX_FILE_BYTES)} (or drop or paste one)`;
  ui.fileLimit.textContent = formatBytes(MAX_FILE_BYTES);
  ui.attach.addEventListener("click", () => ui.fileInput.click());
  ui.fileInput.addEventListener("change", () => { attachFiles([...ui.fileInput.files]); ui.fileInput.value = ""; });
  ui.input.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files || [])];
    if (files.length) { e.preventDefault(); attachFiles(files); }
  });
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
  let depth = 0;                                     // dragenter/leave fire for every child crossed
  document.addEventListener("dragenter", (e) => { if (hasFiles(e)) { depth += 1; ui.dropOverlay.hidden = false; } });
  document.addEventListener("dragleave", (e) => { if (hasFiles(e) && --depth <= 0) { depth = 0; ui.dropOverlay.hidden = true; } });
  document.addEventListener("dragover", (e) => { if (hasFiles(e)) { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; } });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0; ui.dropOverlay.hidden = true;
    attachFiles([...e.dataTransfer.files]);
  });
}

// ---- panels, theme, shortcuts ------------------------------------------------------------------------
const THEME = "chatfile.theme";                      // "light", "dark", or absent: follow the system
const THEMES = { "": "Auto", light: "Light", dark: "Dark" };

function applyTheme(theme) {
  const t = theme in THEMES ? theme : "";
  if (t) document.documentElement.dataset.theme = t; else delete document.documentElement.dataset.theme;
  ui.themeToggle.textContent = THEMES[t];
  ui.hljsLight.media = t === "light" ? "all" : t === "dark" ? "not all" : "(prefers-color-scheme: light)";
  ui.hljsDark.media = t === "dark" ? "all" : t === "light" ? "not all" : "(prefers-color-scheme: dark)";
}
function cycleTheme() {
  const order = Object.keys(THEMES);
  const next = order[(order.indexOf(localStorage.getItem(THEME) || "") + 1) % order.length];
  if (next) localStorage.setItem(THEME, next); else localStorage.removeItem(THEME);
  applyTheme(next);
}

function toggle(panel, toggler, open = panel.hidden) {
  panel.hidden = !open;
  toggler.setAttribute("aria-expanded", String(open));
}
function openSidebar() { document.body.classList.add("sidebar-open"); ui.sidebarToggle.setAttribute("aria-expanded", "true"); }
function closeSidebar() { document.body.classList.remove("sidebar-open"); ui.sidebarToggle.setAttribute("aria-expanded", "false"); }

function onShortcut(e) {
  const mod = e.ctrlKey || e.metaKey, key = e.key.toLowerCase();
  if (mod && e.shiftKey && key === "o") { e.preventDefault(); newChat(); }
  else if (mod && !e.shiftKey && key === "k") { e.preventDefault(); openSidebar(); ui.search.focus(); ui.search.select(); }
  else if (mod && key === "/") { e.preventDefault(); toggle(ui.help, ui.helpToggle); }
  else if (e.key === "Escape" && e.shiftKey) { e.preventDefault(); ui.input.focus(); }
  else if (e.key === "Escape") {
    if (state.controller) state.controller.abort();
    else if (!ui.help.hidden) toggle(ui.help, ui.helpToggle, false);
    else closeSidebar();
  }
}

// ---- API key, model name ------------------------------------------------------------------------------
function askForKey() { ui.apiKeyBox.hidden = false; ui.apiKey.focus(); }

async function loadServerInfo() {
  try {
    const data = await getJSON("v1/models");
    const name = data.data?.[0]?.id || "model";
    ui.modelName.textContent = name;
    document.title = `${name} · chatfile`;
  } catch (err) {
    if (err instanceof Unauthorized) { askForKey(); ui.modelName.textContent = "API key needed"; return; }
    setStatus(`server unreachable: ${err.message}`, true);
    return;
  }
  try { showServerDefaults(await getJSON("props")); }
  catch { showServerDefaults(null); }                 // an older server: the fields say "server default"
}

// ---- start-up ----------------------------------------------------------------------------------------
function init() {
  captureControls();
  applyTheme(localStorage.getItem(THEME) || "");
  state.overrides = loadOverrides();
  renderSettings();
  loadServerInfo();
  sidebar = new Sidebar({ ui, state, open: openConversation, setStatus, persist, render: renderAll });
  state.ready = openStore().then(async (store) => {
    state.store = store;
    for (const conv of await store.list()) if (!state.convs.has(conv.id)) state.convs.set(conv.id, conv);
    document.body.dataset.ready = store.kind;        // for tests and the curious: where history lives
    renderAll();
  });
  renderAll();

  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.input.value.trim();
    if ((!text && !state.attachments.length) || state.controller) return;
    ui.input.value = "";
    send(text);
  });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); ui.composer.requestSubmit(); }
  });
  ui.stop.addEventListener("click", () => state.controller?.abort());
  ui.newChat.addEventListener("click", newChat);
  ui.settingsToggle.addEventListener("click", () => toggle(ui.settings, ui.settingsToggle));
  ui.helpToggle.addEventListener("click", () => toggle(ui.help, ui.helpToggle));
  ui.themeToggle.addEventListener("click", cycleTheme);
  ui.sidebarToggle.addEventListener("click", openSidebar);
  ui.sidebarClose.addEventListener("click", closeSidebar);
  ui.backdrop.addEventListener("click", closeSidebar);
  for (const [k, id] of Object.entries(FIELD_IDS)) {
    ui[id].addEventListener("change", () => {
      const v = ui[id].value;
      if (k === "custom") {
        const custom = parseCustom(v);
        ui[id].classList.toggle("invalid", typeof custom === "string");
        if (typeof custom === "string") {            // kept in the box to fix, but nothing of it is sent
          delete state.overrides.custom; saveOverrides(); setStatus(custom, true); return;
        }
        setStatus("");
      }
      if (v === "" || ((k === "system" || k === "custom") && !v.trim())) delete state.overrides[k]; else state.overrides[k] = v;
      saveOverrides();
    });
  }
  ui.settingsReset.addEventListener("click", () => { state.overrides = {}; saveOverrides(); renderSettings(); });
  ui.apiKeyForm.addEventListener("submit", (e) => {
    e.preventDefault();
    apiKey.set(ui.apiKey.value.trim());
    ui.apiKeyBox.hidden = true; setStatus(""); loadServerInfo();
  });
  document.addEventListener("keydown", onShortcut);
  window.addEventListener("beforeunload", (e) => { if (pendingSaves) e.preventDefault(); });   // a write in flight
  document.addEventListener("visibilitychange", () => { if (document.hidden) state.saveDraft?.(); });
  wireFiles();
}

document.addEventListener("DOMContentLoaded", init);
