// What the page sends: the visible path of a conversation as OpenAI messages, under the settings the
// user set. Settings start empty; the server's defaults (GET /props) show as placeholders and only the
// fields the user filled are sent, so a bundle built with `--args "--temp 0.2"` gives browser users 0.2.
"use strict";

import { withFiles } from "./files.js";

export const SETTINGS = "chatfile.settings.v2";   // localStorage: {system, custom, temperature, ...} as typed
export const SAMPLING = ["temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed"];
export const FIELD_IDS = { system: "systemPrompt", custom: "customParams",   // setting -> control (camelCased id)
                           ...Object.fromEntries(SAMPLING.map((k) => [k, k])) };
const OWN_FIELDS = new Set(["messages", "stream", "stream_options"]);   // what custom parameters cannot replace
// Pages before this one stored every field, defaults included, so a value equal to its old default was
// never the user's choice (and sending it overrode the server's own default).
const OLD_SETTINGS = "chatfile.settings";
const OLD_DEFAULTS = { temperature: 0.8, top_p: 0.95, top_k: 40, min_p: 0.05, repeat_penalty: 1.0 };
const RANDOM_SEED = 0xFFFFFFFF;   // llama.cpp's "draw a seed per request"

/** The settings the user set, from localStorage (moving an older page's settings over once). */
export function loadOverrides() {
  try {
    const saved = JSON.parse(localStorage.getItem(SETTINGS));
    if (saved && typeof saved === "object") return saved;
  } catch { /* unreadable: start over */ }
  let old = {};
  try { old = JSON.parse(localStorage.getItem(OLD_SETTINGS)) || {}; } catch { /* nothing to keep */ }
  const kept = {};
  if (typeof old.system === "string" && old.system.trim()) kept.system = old.system;
  for (const k of SAMPLING) {
    const v = old[k];
    if (v !== undefined && v !== null && v !== "" && Number(v) !== OLD_DEFAULTS[k]) kept[k] = String(v);
  }
  localStorage.setItem(SETTINGS, JSON.stringify(kept));
  localStorage.removeItem(OLD_SETTINGS);
  return kept;
}

/** The custom-parameters text as an object, or an error message. */
export function parseCustom(text) {
  if (!text.trim()) return {};
  let v;
  try { v = JSON.parse(text); } catch (err) { return `custom parameters: not JSON (${err.message})`; }
  if (v === null || typeof v !== "object" || Array.isArray(v)) return "custom parameters: expected a JSON object";
  const own = Object.keys(v).filter((k) => OWN_FIELDS.has(k));
  return own.length ? `custom parameters: ${own.join(", ")} cannot be set here` : v;
}

/** Each sampling field's server default as shown in its empty box (from GET /props, llama-server's shape). */
export function serverDefaults(props) {
  const p = props?.default_generation_settings?.params || {};
  const shown = Object.fromEntries(SAMPLING.map((k) => [k, p[k] == null ? "server default" : String(p[k])]));
  const n = p.n_predict ?? p.max_tokens;
  shown.max_tokens = n == null || n < 0 ? "no limit" : String(n);
  shown.seed = p.seed == null || p.seed < 0 || p.seed === RANDOM_SEED ? "random" : String(p.seed);
  return shown;
}

/** A streamed chat completion request for the path up to message `upTo` of `conv`. */
export function requestBody(conv, upTo, overrides) {
  const messages = [];
  if (overrides.system?.trim()) messages.push({ role: "system", content: overrides.system });
  for (const m of conv.path(upTo)) messages.push(apiMessage(m));
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  for (const k of SAMPLING) {
    const v = overrides[k];
    if (v !== undefined && v !== "" && Number.isFinite(Number(v))) body[k] = Number(v);
  }
  const custom = parseCustom(overrides.custom || "");
  if (typeof custom === "object") Object.assign(body, custom);
  return body;
}

/** A stored message's tool calls (OpenAI's list, kept as a JSON string as llama-server's UI keeps it). */
export function toolCalls(m) {
  if (!m.toolCalls) return [];
  try { const calls = JSON.parse(m.toolCalls); return Array.isArray(calls) ? calls : []; } catch { return []; }
}

function apiMessage(m) {
  if (m.role === "user") return { role: "user", content: withFiles(m.content, m.extra) };
  if (m.role === "tool") return { role: "tool", tool_call_id: m.toolCallId ?? "", content: m.content };
  const out = { role: m.role, content: m.content };
  const calls = toolCalls(m);
  if (calls.length) out.tool_calls = calls;
  return out;
}
