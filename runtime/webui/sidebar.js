// The conversation list: newest first, filtered by the search box (titles and the text of every message,
// every version), with open, export and delete per conversation, and "Export all" / "Import…".
//
// Import merges: a conversation that is not here is added; one that is (same id) gains the messages it
// lacks; one whose same-id messages say something else is added beside it as a copy under new ids.
// Nothing already here is replaced or removed.
"use strict";

import { MAX_IMPORT_BYTES, ImportError, mergeInto, parseImport, settle, withFreshIds } from "./store.js";
import { formatBytes } from "./files.js";

const SNIPPET = 60;   // characters of context shown around a search hit in a message

export class Sidebar {
  /** ctx: {ui, state, open(id), setStatus(text, isError), persist(conv) -> Promise<saved>, render()} from app.js */
  constructor(ctx) {
    this.ctx = ctx;
    const { ui } = ctx;
    ui.search.addEventListener("input", () => this.render());
    ui.search.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); this.list()[0] && ctx.open(this.list()[0].conv.id); }
    });
    ui.exportAll.addEventListener("click", () => this.exportAll());
    ui.import.addEventListener("click", () => ui.importFile.click());
    ui.importFile.addEventListener("change", () => {
      const file = ui.importFile.files[0];
      ui.importFile.value = "";
      if (file) this.importFile(file);
    });
  }

  /** The conversations to list, newest first, with a snippet where the search matched a message. */
  list() {
    const q = this.ctx.ui.search.value.trim().toLowerCase();
    const all = [...this.ctx.state.convs.values()].sort((a, b) => b.conv.lastModified - a.conv.lastModified);
    if (!q) return all.map((conv) => ({ conv }));
    const found = [];
    for (const conv of all) {
      if ((conv.name || "").toLowerCase().includes(q)) { found.push({ conv }); continue; }
      for (const text of conv.texts()) {
        const at = text.toLowerCase().indexOf(q);
        if (at < 0) continue;
        const from = Math.max(0, at - SNIPPET / 2);
        found.push({ conv, snippet: (from ? "…" : "") + text.slice(from, at + q.length + SNIPPET / 2).replace(/\s+/g, " ") });
        break;
      }
    }
    return found;
  }

  render() {
    const { ui, state } = this.ctx;
    const items = this.list();
    ui.conversations.replaceChildren(...items.map(({ conv, snippet }) => this.item(conv, snippet)));
    if (!items.length && ui.search.value.trim()) {
      const none = document.createElement("li");
      none.className = "none"; none.textContent = "No conversation matches.";
      ui.conversations.append(none);
    }
    ui.exportAll.disabled = state.convs.size === 0;
  }

  item(conv, snippet) {
    const li = document.createElement("li");
    li.classList.toggle("active", conv.id === this.ctx.state.currentId);
    const title = document.createElement("button");
    title.type = "button"; title.className = "title";
    title.textContent = conv.name || "New chat"; title.title = title.textContent;
    title.addEventListener("click", () => this.ctx.open(conv.id));
    if (snippet) {
      const s = document.createElement("span");
      s.className = "snippet"; s.textContent = snippet;
      title.append(s);
    }
    const exp = small("⤓", "export", "Export this conversation (JSON)", () => this.download(conv.toJSON(), filename(conv.name)));
    const del = small("×", "delete", "Delete this conversation", () => this.remove(conv, del));
    li.append(title, exp, del);
    return li;
  }

  /** Deleting asks once: the first click turns the button into "Delete?", a second within 4 s deletes. */
  remove(conv, btn) {
    const { state, render } = this.ctx;
    if (state.controller && conv.id === state.currentId) return;
    if (!btn.classList.contains("confirm")) {
      btn.classList.add("confirm"); btn.textContent = "Delete?";
      setTimeout(() => { btn.classList.remove("confirm"); btn.textContent = "×"; }, 4000);
      return;
    }
    state.convs.delete(conv.id);
    if (state.currentId === conv.id) state.currentId = null;
    state.ready.then(() => state.store.remove(conv.id));
    render();
  }

  exportAll() {
    const all = [...this.ctx.state.convs.values()].sort((a, b) => a.conv.lastModified - b.conv.lastModified);
    this.download(all.map((c) => c.toJSON()), filename("conversations"));
  }

  download(data, name) {
    const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 1)], { type: "application/json" }));
    const a = document.createElement("a");
    a.href = url; a.download = name;
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }

  async importFile(file) {
    const { state, setStatus, persist, render } = this.ctx;
    setStatus(`Importing ${file.name}…`);
    let incoming;
    try {
      if (file.size > MAX_IMPORT_BYTES) throw new ImportError(`${formatBytes(file.size)} is more than ${formatBytes(MAX_IMPORT_BYTES)}`);
      incoming = parseImport(await file.text());
    } catch (err) {
      setStatus(`Import of ${file.name} failed: ${err instanceof ImportError ? err.message : err}`, true);
      return;
    }
    await state.ready;
    let added = 0, merged = 0, copies = 0;
    const saves = [];
    for (const conv of incoming.map(settle)) {
      const mine = state.convs.get(conv.id);
      let kept = conv;
      if (!mine) added += 1;
      else if (mergeInto(mine, conv)) { kept = mine; merged += 1; }
      else { kept = settle(withFreshIds(conv)); copies += 1; }
      state.convs.set(kept.id, kept);
      saves.push(persist(kept));
    }
    render();
    if (!(await Promise.all(saves)).every(Boolean)) return;    // the storage error is on the status line
    const parts = [`${added} new`, merged && `${merged} merged with one already here`, copies && `${copies} added as copies`];
    setStatus(`Imported ${incoming.length} conversation${incoming.length === 1 ? "" : "s"}: ${parts.filter(Boolean).join(", ")}`);
  }
}

function small(text, cls, label, onclick) {
  const b = document.createElement("button");
  b.type = "button"; b.className = cls; b.textContent = text; b.title = label;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onclick);
  return b;
}

function filename(title) {
  const slug = (title || "chat").toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "-").replace(/^-|-$/g, "").slice(0, 40) || "chat";
  return `chatfile-${slug}-${new Date().toISOString().slice(0, 10)}.json`;
}
