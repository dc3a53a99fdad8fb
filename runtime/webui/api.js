// The page's side of the HTTP API: the endpoints any OpenAI or llama.cpp client uses, at paths relative
// to the page (so a reverse proxy under a sub-path works too).
"use strict";

const KEY = "chatfile.apiKey";   // localStorage: the --api-key value the user typed, if the server needs one

export const apiKey = {
  get: () => localStorage.getItem(KEY),
  set: (key) => localStorage.setItem(KEY, key),
};

export class Unauthorized extends Error {
  constructor() { super("this server needs an API key"); }
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = apiKey.get();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function failure(res) {
  if (res.status === 401) return new Unauthorized();
  return new Error((await res.json().catch(() => null))?.error?.message || `HTTP ${res.status}`);
}

/** GET a JSON document (`v1/models`, `props`). */
export async function getJSON(path) {
  const res = await fetch(path, { headers: headers() });
  if (!res.ok) throw await failure(res);
  return res.json();
}

/** POST a streamed chat completion and call `onChunk` with each server-sent event's JSON object. */
export async function streamChat(body, signal, onChunk) {
  const res = await fetch("v1/chat/completions", { method: "POST", headers: headers(),
                                                   body: JSON.stringify(body), signal });
  if (!res.ok) throw await failure(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {           // one event per blank-line-terminated block
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || String(chunk.error));
      onChunk(chunk);
    }
  }
}
