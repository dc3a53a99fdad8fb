// Conversations: trees of messages, kept in this browser's IndexedDB, in llama-server's web UI shape.
//
// One conversation is stored, exported and imported as {conv, messages}, and "all of them" as a list:
//   conv      {id, name, lastModified (ms), currNode}     currNode: the last message of the visible path
//   messages  [{id, convId, type: "root" | "text", timestamp (ms), role, content, parent, children, ...}]
//     exactly one "root" message (role "system", content "", parent null) holds the first turns as its
//     children; `children` lists ids in the order they were made. Editing a message or regenerating a
//     reply adds a sibling (same parent), so every version stays; the visible path is root -> currNode,
//     and it is what the model is sent.
//   optional message fields: extra [{type: "textFile", name, content}] (attached files), toolCalls (the
//     OpenAI `tool_calls` list as a JSON string), toolCallId (role "tool"), timings (llama-server's), and
//     chatfile's own: stats (the line under a reply), error, dropped (messages the server left out to
//     fit its context). Fields a file brings that chatfile does not know are kept as they are.
// Import also takes a bare OpenAI conversation, {"messages": [{role, content}, ...]}, as one linear chat.
//
// Storage: IndexedDB (no ~5 MB cap as with localStorage; llama-server's UI moved there for the same
// reason). Without it (some private modes) conversations fall back to localStorage. History saved by
// older chatfile pages in localStorage ("chatfile.conversations", flat lists) moves in on first load.
"use strict";

const DB_NAME = "chatfile", DB_STORE = "conversations";
const FALLBACK_KEY = "chatfile.history";          // localStorage, when IndexedDB cannot be opened
const LEGACY_KEY = "chatfile.conversations";      // pages before branches: [{id, title, updated, messages}]
const ROLES = new Set(["system", "user", "assistant", "tool"]);
export const MAX_IMPORT_BYTES = 256 * 1024 * 1024;

export const newId = () => (crypto.randomUUID ? crypto.randomUUID()
                                               : [...crypto.getRandomValues(new Uint32Array(4))].join("-"));

export class Conversation {
  constructor(conv, messages) {
    this.conv = conv;
    this.byId = new Map(messages.map((m) => [m.id, m]));
    this.root = messages.find((m) => m.type === "root");
  }

  static create(name = "") {
    const id = newId(), now = Date.now();
    const root = { id: newId(), convId: id, type: "root", timestamp: now, role: "system", content: "",
                   parent: null, children: [] };
    return new Conversation({ id, name, lastModified: now, currNode: root.id }, [root]);
  }

  get id() { return this.conv.id; }
  get name() { return this.conv.name; }
  set name(v) { this.conv.name = v; }

  /** The visible path: the messages from the first turn to `upTo` (default: currNode), root excluded. */
  path(upTo = this.conv.currNode) {
    const out = [];
    for (let m = this.byId.get(upTo); m && m.type !== "root"; m = this.byId.get(m.parent)) out.push(m);
    return out.reverse();
  }

  /** Add a message under `parentId` (a new sibling if the parent has children) and show it. */
  add(parentId, fields) {
    const parent = this.byId.get(parentId) || this.root;
    const m = { id: newId(), convId: this.id, type: "text", timestamp: Date.now(), content: "", ...fields,
                parent: parent.id, children: [] };
    this.byId.set(m.id, m);
    parent.children.push(m.id);
    this.conv.currNode = m.id;
    this.touch();
    return m;
  }

  touch() { this.conv.lastModified = Date.now(); }

  /** {index, count} of `m` among its parent's children. */
  siblings(m) {
    const ids = this.byId.get(m.parent)?.children || [m.id];
    return { index: ids.indexOf(m.id), count: ids.length, ids };
  }

  /** Show the sibling `delta` steps from `m` (and the newest branch below it). */
  showSibling(m, delta) {
    const { index, ids } = this.siblings(m);
    const next = ids[index + delta];
    if (next !== undefined) this.conv.currNode = this.leaf(next);
  }

  /** The end of the newest branch below `id`. */
  leaf(id) {
    let m = this.byId.get(id);
    while (m.children.length) m = this.byId.get(m.children[m.children.length - 1]);
    return m.id;
  }

  /** Every message's text, each version of each turn (what search looks through). */
  *texts() {
    for (const m of this.byId.values()) {
      if (m.content) yield m.content;
      for (const x of m.extra || []) if (x?.type === "textFile") yield `${x.name}\n${x.content}`;
    }
  }

  toJSON() { return { conv: { ...this.conv }, messages: [...this.byId.values()] }; }
}

/** A conversation's title from its first message: the first line, cut at a word near 50 characters. */
export function titleFrom(text, files = []) {
  const line = (text || "").split("\n").map((s) => s.trim()).find(Boolean)?.replace(/\s+/g, " ");
  if (!line) return files[0]?.name || "New chat";
  if (line.length <= 50) return line;
  const cut = line.slice(0, 50), space = cut.lastIndexOf(" ");
  return (space > 30 ? cut.slice(0, space) : cut) + "…";
}

// ---- storage ---------------------------------------------------------------------------------------

function request(req) {
  return new Promise((resolve, reject) => { req.onsuccess = () => resolve(req.result); req.onerror = () => reject(req.error); });
}

class IndexedStore {
  constructor(db) { this.db = db; this.kind = "IndexedDB"; }
  tx(mode) { return this.db.transaction(DB_STORE, mode).objectStore(DB_STORE); }
  async list() { return (await request(this.tx("readonly").getAll())).map((r) => new Conversation(r.conv, r.messages)); }
  save(conv) { return request(this.tx("readwrite").put(conv.toJSON())); }
  remove(id) { return request(this.tx("readwrite").delete(id)); }
}

class LocalStore {
  constructor() { this.kind = "localStorage"; }
  read() { try { return JSON.parse(localStorage.getItem(FALLBACK_KEY)) || []; } catch { return []; } }
  write(records) { localStorage.setItem(FALLBACK_KEY, JSON.stringify(records)); }
  async list() { return this.read().map((r) => new Conversation(r.conv, r.messages)); }
  async save(conv) { this.write([...this.read().filter((r) => r.conv.id !== conv.id), conv.toJSON()]); }
  async remove(id) { this.write(this.read().filter((r) => r.conv.id !== id)); }
}

async function openIndexedDB() {
  const req = indexedDB.open(DB_NAME, 1);
  req.onupgradeneeded = () => req.result.createObjectStore(DB_STORE, { keyPath: "conv.id" });
  return new IndexedStore(await request(req));
}

/** The conversation store of this browser (IndexedDB, else localStorage), with older history moved in. */
export async function openStore() {
  let store;
  try { store = await openIndexedDB(); } catch { store = new LocalStore(); }
  const legacy = localStorage.getItem(LEGACY_KEY);
  if (legacy) {
    try {
      for (const old of JSON.parse(legacy) || []) await store.save(fromLegacy(old));
      localStorage.removeItem(LEGACY_KEY);          // only once every conversation is safely stored
    } catch (err) { console.warn("chatfile: older history left in localStorage:", err); }
  }
  return store;
}

function fromLegacy(old) {
  const conv = Conversation.create(String(old.title || ""));
  conv.conv.id = String(old.id || conv.id);
  conv.root.convId = conv.id;
  let parent = conv.root.id;
  for (const m of old.messages || []) {
    const { role, content, ...rest } = m;
    parent = conv.add(parent, { ...rest, role: ROLES.has(role) ? role : "user", content: String(content ?? "") }).id;
  }
  conv.conv.lastModified = Number(old.updated) || Date.now();
  return conv;
}

// ---- export and import -----------------------------------------------------------------------------

export class ImportError extends Error {}

/** Parse an export file (ours, llama-server's, or {"messages": [...]}) into Conversations, validated. */
export function parseImport(text) {
  let data;
  try { data = JSON.parse(text); } catch (err) { throw new ImportError(`not JSON (${err.message})`); }
  const records = Array.isArray(data) ? data : [data];
  if (!records.length) throw new ImportError("the file holds no conversation");
  return records.map((r, i) => normalize(r, records.length > 1 ? `conversation ${i + 1}` : "the conversation"));
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function textOf(content, where) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => (isObject(p) && typeof p.text === "string" ? p.text : "")).join("\n");
  throw new ImportError(`${where}: "content" must be text`);
}

function normalize(record, where) {
  if (!isObject(record)) throw new ImportError(`${where}: expected an object with "conv" and "messages"`);
  if (!record.conv && Array.isArray(record.messages)) return fromOpenAI(record, where);
  const { conv, messages } = record;
  if (!isObject(conv) || !Array.isArray(messages)) throw new ImportError(`${where}: expected "conv" and a "messages" list`);
  if (typeof conv.id !== "string" || !conv.id) throw new ImportError(`${where}: "conv.id" must be a non-empty string`);
  const byId = new Map();
  messages.forEach((m, i) => {
    const at = `${where}, message ${i + 1}`;
    if (!isObject(m) || typeof m.id !== "string" || !m.id) throw new ImportError(`${at}: needs a string "id"`);
    if (byId.has(m.id)) throw new ImportError(`${at}: id ${JSON.stringify(m.id)} appears twice`);
    const root = m.type === "root";
    if (!root && !ROLES.has(m.role)) throw new ImportError(`${at}: "role" must be one of ${[...ROLES].join(", ")}`);
    const { tool_calls: calls, tool_call_id: callId, ...kept } = m;   // OpenAI's names -> llama-server's
    const msg = { ...kept, convId: conv.id, type: root ? "root" : "text", role: root ? "system" : m.role,
                  content: textOf(m.content, at), timestamp: Number(m.timestamp) || 0,
                  parent: typeof m.parent === "string" ? m.parent : null, children: [] };
    if (Array.isArray(calls)) msg.toolCalls = JSON.stringify(calls);
    if (msg.toolCalls !== undefined && typeof msg.toolCalls !== "string") delete msg.toolCalls;
    if (typeof callId === "string" && msg.toolCallId === undefined) msg.toolCallId = callId;
    if (msg.extra !== undefined) msg.extra = Array.isArray(msg.extra) ? msg.extra.filter(isObject) : [];
    for (const k of ["stats", "error", "thinking", "toolCallId"]) if (msg[k] !== undefined && typeof msg[k] !== "string") delete msg[k];
    if (msg.dropped !== undefined && !Number.isInteger(msg.dropped)) delete msg.dropped;
    byId.set(m.id, msg);
  });
  const given = new Map(messages.map((m) => [m.id, Array.isArray(m.children) ? m.children : []]));
  return new Conversation({ id: conv.id, name: typeof conv.name === "string" ? conv.name : "",
                            lastModified: Number(conv.lastModified) || Date.now(),
                            currNode: typeof conv.currNode === "string" ? conv.currNode : null },
                          relink(conv.id, byId, given));
}

/** Rebuild parent/children links so that every message hangs from one root: a missing or cyclic
 *  parent attaches the message to the root (kept, as a branch of its own), never drops it. */
function relink(convId, byId, given) {
  const roots = [...byId.values()].filter((m) => m.type === "root");
  let root = roots[0];
  if (!root) {
    root = { id: newId(), convId, type: "root", timestamp: 0, role: "system", content: "", parent: null, children: [] };
    byId.set(root.id, root);
  }
  for (const extra of roots.slice(1)) extra.type = "text";          // a second root becomes a system turn
  const good = new Set([root.id]);                 // messages known to reach the root
  for (const start of byId.values()) {
    const chain = new Set();
    for (let m = start; !good.has(m.id);) {
      chain.add(m.id);
      const parent = byId.get(m.parent);
      if (!parent || chain.has(parent.id)) { m.parent = root.id; break; }   // missing, or a cycle: cut here
      m = parent;
    }
    for (const id of chain) good.add(id);
  }
  for (const m of byId.values()) if (m !== root) byId.get(m.parent).children.push(m.id);
  for (const m of byId.values()) {                 // the file's sibling order, then any it left out by time
    if (m.children.length < 2) continue;
    const order = new Map((given.get(m.id) || []).map((id, i) => [id, i]));
    const rank = (id) => order.get(id) ?? Infinity;
    m.children.sort((a, b) => (rank(a) - rank(b)) || (byId.get(a).timestamp - byId.get(b).timestamp));
  }
  return [...byId.values()];
}

function fromOpenAI(record, where) {
  const conv = Conversation.create(typeof record.title === "string" ? record.title : "");
  let parent = conv.root.id;
  record.messages.forEach((m, i) => {
    const at = `${where}, message ${i + 1}`;
    if (!isObject(m) || !ROLES.has(m.role)) throw new ImportError(`${at}: "role" must be one of ${[...ROLES].join(", ")}`);
    const fields = { role: m.role, content: textOf(m.content, at) };
    if (Array.isArray(m.tool_calls)) fields.toolCalls = JSON.stringify(m.tool_calls);
    if (typeof m.tool_call_id === "string") fields.toolCallId = m.tool_call_id;
    parent = conv.add(parent, fields).id;
  });
  if (!conv.name) conv.name = titleFrom(conv.path().find((m) => m.role === "user")?.content);
  return conv;
}

/** Fix a conversation's currNode (missing or unknown: the newest leaf). */
export function settle(conv) {
  if (!conv.byId.has(conv.conv.currNode)) conv.conv.currNode = conv.leaf(conv.root.id);
  return conv;
}

/** Merge `incoming` into `existing` (same conversation id). Returns false when they disagree about a
 *  message with the same id, true when every incoming message was already there or has been added. */
export function mergeInto(existing, incoming) {
  const mapId = (id) => (id === incoming.root.id ? existing.root.id : id);
  for (const m of incoming.byId.values()) {
    const mine = existing.byId.get(mapId(m.id));
    if (m.type !== "root" && mine && (mine.role !== m.role || mine.content !== m.content ||
                                      mine.parent !== mapId(m.parent))) return false;
  }
  let added = 0;
  const todo = [...incoming.root.children];        // parents first, so each new message finds its parent
  for (let i = 0; i < todo.length; i++) {
    const child = incoming.byId.get(todo[i]);
    if (!existing.byId.has(child.id)) {
      const copy = { ...child, convId: existing.id, parent: mapId(child.parent), children: [] };
      existing.byId.set(copy.id, copy);
      existing.byId.get(copy.parent).children.push(copy.id);
      added += 1;
    }
    todo.push(...child.children);
  }
  if (added) existing.conv.lastModified = Math.max(existing.conv.lastModified, incoming.conv.lastModified);
  return true;
}

/** A copy of `conv` under fresh ids (for an import that conflicts with a conversation already here). */
export function withFreshIds(conv) {
  const ids = new Map([...conv.byId.keys()].map((id) => [id, newId()]));
  const convId = newId();
  const messages = [...conv.byId.values()].map((m) => ({ ...m, id: ids.get(m.id), convId,
    parent: m.parent === null ? null : ids.get(m.parent), children: m.children.map((c) => ids.get(c)) }));
  return new Conversation({ ...conv.conv, id: convId, currNode: ids.get(conv.conv.currNode) ?? null,
                            name: `${conv.name || "Imported chat"} (imported)` }, messages);
}
