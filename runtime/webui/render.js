// Model output -> DOM: the one place where text a model wrote becomes markup in this page.
//
// Threat model: a reply is attacker-controlled whenever the user pasted a document carrying a prompt
// injection (and an imported conversation is anyone's file). Rendered output must never act as part of
// the page: run script, load anything, shadow or trigger a control, take focus, or draw over the UI.
// So, besides the server's Content-Security-Policy (no inline script or style, same origin only):
//   - marked turns Markdown into HTML; DOMPurify keeps only the tags and attributes of ALLOWED below:
//     no id or name (the page's controls and globals are named by id), no form elements, no style,
//     no event handlers, no autofocus/tabindex/accesskey/contenteditable/popover, no img or media;
//     `class` keeps only marked's `language-*` (the page's own CSS classes cannot be borrowed);
//   - links keep only http(s)/mailto targets and open in a new tab;
//   - math is typeset by KaTeX (trust off, sizes capped) into DOM nodes whose styles KaTeX sets
//     through CSSOM (allowed by the CSP, unlike a style attribute), then checked against MATH_TAGS;
//   - the page holds references to its controls captured at start-up (app.js), and `.message .body`
//     clips what it paints (style.css), so even an element drawn with a big offset stays in its box.
"use strict";

// Captured once, before any model output exists: a later element could not shadow these names.
const { marked, DOMPurify, katex, hljs } = window;

const ALLOWED = {
  ALLOWED_TAGS: ["a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em",
                 "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "ins", "kbd", "li", "mark", "ol", "p", "pre",
                 "q", "s", "samp", "small", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td",
                 "tfoot", "th", "thead", "tr", "u", "ul", "var"],
  ALLOWED_ATTR: ["href", "title", "lang", "dir", "colspan", "rowspan", "align", "start", "reversed", "open",
                 "class"],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};
const LINK = /^(?:https?:|mailto:)/i;

// A private DOMPurify instance: its hooks do not touch anyone else's use of the library.
const purify = DOMPurify(window);
let keepClass = null;   // the math placeholders' class prefix during one render (random per render)
purify.addHook("uponSanitizeAttribute", (node, data) => {
  if (data.attrName !== "class") return;
  const kept = data.attrValue.split(/\s+/).filter((c) => /^language-[\w+#.-]{1,40}$/.test(c) ||
                                                      (keepClass !== null && c.startsWith(keepClass)));
  if (kept.length) data.attrValue = kept.join(" "); else data.keepAttr = false;
});
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName !== "A") return;
  const href = node.getAttribute("href");
  if (href === null || !LINK.test(href.trim())) { node.removeAttribute("href"); return; }
  node.setAttribute("target", "_blank");
  node.setAttribute("rel", "noopener noreferrer");
});

// ---- math: $…$, $$…$$, \(…\), \[…\] -------------------------------------------------------------------
// Inline `$…$` follows pandoc's rule, so prices stay text: the opening `$` is followed by a non-space,
// the closing `$` is preceded by a non-space and not followed by a digit ("$5 and $10" has no closer);
// the first `$` that cannot close, a blank line or a backtick ends the search.
// Every search is bounded, so no text (a page of prices, thousands of unclosed `\(`) costs more than
// linear time: INLINE_SCAN chars for an inline closer, BLOCK_SCAN for a display block's, and the lexer's
// "could math start here?" hint looks at most INLINE_SCAN chars ahead (or the rest of the paragraph).
const INLINE_SCAN = 2000, BLOCK_SCAN = 8000;
const MAX_FORMULAS = 1000;  // per message; beyond it formulas are shown as their source

function dollarMath(src) {
  if (src[0] !== "$" || src[1] === "$" || !src[1] || /\s/.test(src[1])) return null;
  const end = Math.min(src.length, INLINE_SCAN);
  for (let i = 1; i < end; i++) {
    const c = src[i];
    if (c === "\\") { i++; continue; }
    if ((c === "\n" && src[i + 1] === "\n") || c === "`") return null;   // a code span starts: not math
    if (c === "$") {
      if (/\s/.test(src[i - 1]) || /\d/.test(src[i + 1] || "")) return null;
      return { raw: src.slice(0, i + 1), tex: src.slice(1, i), display: false };
    }
  }
  return null;
}
const INLINE_RULES = [
  [/^\$\$(?!\$)((?:\\.|[^\\])+?)\$\$/, true],
  [/^\\\(((?:\\.|[^\\])+?)\\\)/, false],
  [/^\\\[((?:\\.|[^\\])+?)\\\]/, true],
];
const BLOCK_RULES = [
  /^ {0,3}\$\$((?:\\.|[^\\])+?)\$\$[ \t]*(?:\n+|$)/,
  /^ {0,3}\\\[((?:\\.|[^\\])+?)\\\][ \t]*(?:\n+|$)/,
];

/** The first match of `rule` in at most `limit` chars of `src`, unless it only ends where the cut does. */
function bounded(rule, src, limit) {
  const head = src.length > limit ? src.slice(0, limit) : src;
  const m = rule.exec(head);
  return m && (head === src || m[0].length < head.length) && m[1].trim() ? m : null;
}

function mathExtensions(slots) {
  const token = (raw, tex, display) => ({ type: "math", raw, tex: tex.trim(), display });
  return [
    { name: "math", level: "block",
      start(src) {                                 // within this paragraph only
        const end = src.indexOf("\n\n");
        const m = (end < 0 ? src : src.slice(0, end)).match(/^ {0,3}(?:\$\$|\\\[)/m);
        return m ? m.index : undefined;
      },
      tokenizer(src) {
        for (const rule of BLOCK_RULES) { const m = bounded(rule, src, BLOCK_SCAN); if (m) return token(m[0], m[1], true); }
        return undefined;
      },
      renderer: (t) => slots.add(t.tex, t.display) },
    { name: "inlineMath", level: "inline",
      start(src) {
        const head = src.slice(0, INLINE_SCAN), i = head.search(/\$|\\[([]/);
        if (i >= 0 || src.length <= INLINE_SCAN) return i < 0 ? undefined : i;
        const space = head.lastIndexOf(" ");         // nothing near: let the text run stop at a space
        return space > 0 ? space : undefined;
      },
      tokenizer(src) {
        for (const [rule, display] of INLINE_RULES) { const m = bounded(rule, src, INLINE_SCAN); if (m) return token(m[0], m[1], display); }
        const d = dollarMath(src);
        return d ? token(d.raw, d.tex, false) : undefined;
      },
      renderer: (t) => slots.add(t.tex, t.display) },
  ];
}

// Where the formulas of one render go: marked emits an empty placeholder element whose class carries
// a random prefix and the formula's index; after sanitizing, each placeholder is swapped for KaTeX's DOM.
class MathSlots {
  constructor() { this.items = []; this.prefix = null; }
  begin() { this.items = []; this.prefix = "m" + crypto.getRandomValues(new Uint32Array(2)).join("x") + "n"; }
  add(tex, display) {
    if (this.items.length >= MAX_FORMULAS) return escapeHtml(display ? `$$${tex}$$` : `$${tex}$`);
    this.items.push({ tex, display });
    const tag = display ? "div" : "span";
    return `<${tag} class="${this.prefix}${this.items.length - 1}"></${tag}>`;
  }
}
const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const slots = new MathSlots();
const md = new marked.Marked({ gfm: true, breaks: false });
md.use({
  extensions: mathExtensions(slots),
  renderer: { checkbox: ({ checked }) => (checked ? "☑ " : "☐ ") },   // GFM task lists without <input>
});

const KATEX_OPTIONS = { throwOnError: true, trust: false, strict: "ignore", maxSize: 20, maxExpand: 500,
                        output: "htmlAndMathml" };
// What KaTeX itself produces (HTML spans, MathML, SVG for stretchy glyphs); anything else fails closed.
const MATH_TAGS = new Set(["span", "math", "semantics", "annotation", "mrow", "mi", "mn", "mo", "ms", "mtext",
  "mspace", "msup", "msub", "msubsup", "mfrac", "msqrt", "mroot", "mover", "munder", "munderover", "mtable",
  "mtr", "mtd", "mstyle", "mpadded", "mphantom", "menclose", "mlabeledtr", "svg", "path", "line", "g", "rect"]);
const MATH_ATTRS = new Set(["class", "style", "aria-hidden", "xmlns", "encoding", "mathvariant", "stretchy",
  "fence", "separator", "lspace", "rspace", "width", "height", "viewbox", "preserveaspectratio", "d", "x", "y",
  "x1", "x2", "y1", "y2", "rx", "ry", "stroke-width", "columnalign", "rowalign", "rowspacing", "columnspacing",
  "columnlines", "rowlines", "frame", "displaystyle", "scriptlevel", "accent", "accentunder", "movablelimits",
  "minsize", "maxsize", "symmetric", "notation", "mathcolor", "mathbackground", "depth", "voffset",
  "linethickness", "largeop", "display", "form", "framespacing", "side"]);
const mathCache = new Map();   // "D"/"I" + tex -> rendered node (cloned per use); streaming re-renders a lot
const MATH_CACHE_SIZE = 400;

function checkMath(root) {
  for (const el of root.querySelectorAll("*")) {
    if (!MATH_TAGS.has(el.localName)) throw new Error(`unexpected <${el.localName}> in math output`);
    for (const { name } of [...el.attributes]) if (!MATH_ATTRS.has(name.toLowerCase())) el.removeAttribute(name);
    if (["fixed", "absolute", "sticky"].includes(el.style.position)) el.style.position = "static";
  }
}

function buildMath(tex, display) {
  const host = document.createElement(display ? "div" : "span");
  try {
    katex.render(tex, host, { ...KATEX_OPTIONS, displayMode: display });
    checkMath(host);
  } catch (err) {                                   // a TeX error shows the source, with KaTeX's message
    host.replaceChildren(display ? `$$${tex}$$` : `$${tex}$`);
    host.className = "math-error";
    host.title = String(err?.message || err);
  }
  return host;
}

function mathNode(tex, display) {
  const key = (display ? "D" : "I") + tex;
  let node = mathCache.get(key);
  if (!node) {
    node = buildMath(tex, display);
    if (mathCache.size >= MATH_CACHE_SIZE) mathCache.delete(mathCache.keys().next().value);
    mathCache.set(key, node);
  }
  return node.cloneNode(true);
}

// ---- the public part -----------------------------------------------------------------------------------
/** Render Markdown `text` (model output) into `el`, replacing its children. */
export function renderMarkdown(el, text) {
  slots.begin();
  keepClass = slots.prefix;
  let fragment;
  try {
    fragment = purify.sanitize(md.parse(text), ALLOWED);
  } catch (err) {                                   // never leave the raw text unrendered-but-unsafe
    el.textContent = text;
    return;
  } finally {
    keepClass = null;
  }
  for (const [i, { tex, display }] of slots.items.entries()) {
    for (const holder of fragment.querySelectorAll(`.${slots.prefix}${i}`)) holder.replaceWith(mathNode(tex, display));
  }
  for (const code of fragment.querySelectorAll("pre > code")) {
    hljs.highlightElement(code);
    const copy = document.createElement("button");
    copy.type = "button"; copy.className = "copy-code"; copy.textContent = "Copy";
    copy.addEventListener("click", () => copyText(code.textContent, copy));
    code.parentElement.appendChild(copy);
  }
  el.replaceChildren(fragment);
}

/** Copy `text` to the clipboard; `button` says "Copied" for a moment. */
export async function copyText(text, button) {
  try { await navigator.clipboard.writeText(text); }
  catch {                                           // http:// pages without clipboard permission
    const area = document.createElement("textarea");
    area.value = text; document.body.appendChild(area); area.select(); document.execCommand("copy"); area.remove();
  }
  button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1200);
}
