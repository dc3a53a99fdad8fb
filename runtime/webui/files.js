// Text files brought into a message (dropped on the page, picked, or pasted).
//
// A file is accepted when it is text: at most MAX_FILE_BYTES, valid UTF-8, no NUL byte. Code, Markdown,
// CSV, JSON, logs and plain text pass; images, PDFs, archives and other binaries are refused with a
// message naming the file. The message keeps each file as llama-server's UI does, an `extra` entry
// {type: "textFile", name, content}; what the model reads is each file as a fenced block under its name,
// before the typed text (fileBlock below).
"use strict";

export const MAX_FILE_BYTES = 512 * 1024;   // ~130k tokens of English: more than any context we run

export class FileRefused extends Error {}

export function formatBytes(n) {
  return n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1048576).toFixed(1)} MB`;
}

/** Read `file` as a text attachment {type: "textFile", name, content}, or throw FileRefused. */
export async function readTextFile(file) {
  const name = (file.name || "pasted.txt").replace(/[\u0000-\u001f\u007f]+/g, " ");   // one line, always
  if (file.size > MAX_FILE_BYTES) {
    throw new FileRefused(`${name} is ${formatBytes(file.size)}: text files up to ${formatBytes(MAX_FILE_BYTES)} can be attached`);
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  let content;
  try {
    if (bytes.includes(0)) throw new Error("NUL byte");
    content = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {                                         // judged by content: a .ts file is often "video/mp2t"
    const kind = file.type ? `${file.type}, ` : "";
    throw new FileRefused(`${name} is not a text file (${kind}binary or not UTF-8): only text files can be attached`);
  }
  return { type: "textFile", name, content };
}

/** The text the model reads for one attached file: its name, then its content in a fenced block whose
 *  fence is longer than any backtick run inside, tagged with the file's extension for highlighting. */
export function fileBlock({ name, content }) {
  const longest = Math.max(0, ...(content.match(/`+/g) || []).map((run) => run.length));
  const fence = "`".repeat(Math.max(3, longest + 1));
  const ext = /\.([A-Za-z0-9+#-]{1,12})$/.exec(name)?.[1].toLowerCase() || "";
  return `File: ${name}\n${fence}${ext}\n${content.replace(/\n$/, "")}\n${fence}`;
}

/** A user message's content as sent to the model: its files' blocks, then what the user typed. */
export function withFiles(text, extra) {
  const files = (extra || []).filter((x) => x?.type === "textFile" && typeof x.content === "string");
  return [...files.map(fileBlock), text].filter(Boolean).join("\n\n");
}
