#!/bin/sh
# Re-fetch the web UI's front-end libraries from npm into runtime/webui/vendor/ (checked in; the page
# loads them from the runtime, so the UI makes no request outside the executable).
#   marked                  Markdown -> HTML                 (MIT)
#   dompurify               HTML sanitizer                   (MPL-2.0 OR Apache-2.0)
#   @highlightjs/cdn-assets highlight.js browser build + css (BSD-3-Clause)
#   katex                   TeX math -> HTML + MathML, its css and woff2 fonts (MIT)
# Versions are pinned here; bump them on purpose and re-run:  sh scripts/vendor_webui.sh
set -eu
MARKED=18.2.1
DOMPURIFY=3.4.18
HIGHLIGHT=11.12.0
KATEX=0.19.1

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/runtime/webui/vendor"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

cd "$TMP"
npm pack --silent "marked@$MARKED" "dompurify@$DOMPURIFY" "@highlightjs/cdn-assets@$HIGHLIGHT" \
    "katex@$KATEX" >/dev/null
for t in *.tgz; do mkdir "${t%.tgz}" && tar -xzf "$t" -C "${t%.tgz}"; done

rm -rf "$OUT" && mkdir -p "$OUT"
cp "marked-$MARKED/package/lib/marked.umd.js"                     "$OUT/marked.umd.js"
cp "marked-$MARKED/package/LICENSE"                               "$OUT/marked.LICENSE"
cp "dompurify-$DOMPURIFY/package/dist/purify.min.js"              "$OUT/purify.min.js"
cp "dompurify-$DOMPURIFY/package/LICENSE"                         "$OUT/dompurify.LICENSE"
cp "dompurify-$DOMPURIFY/package/LICENSE-MPL"                     "$OUT/dompurify.LICENSE-MPL"
cp "highlightjs-cdn-assets-$HIGHLIGHT/package/highlight.min.js"   "$OUT/highlight.min.js"
cp "highlightjs-cdn-assets-$HIGHLIGHT/package/styles/github.min.css"      "$OUT/highlight-github.min.css"
cp "highlightjs-cdn-assets-$HIGHLIGHT/package/styles/github-dark.min.css" "$OUT/highlight-github-dark.min.css"
cp "highlightjs-cdn-assets-$HIGHLIGHT/package/LICENSE"            "$OUT/highlight.js.LICENSE"
# KaTeX's css lists woff2 first, so a browser never asks for the woff/ttf copies: only woff2 is shipped.
cp "katex-$KATEX/package/dist/katex.min.js"                        "$OUT/katex.min.js"
cp "katex-$KATEX/package/dist/katex.min.css"                       "$OUT/katex.min.css"
cp "katex-$KATEX/package/LICENSE"                                  "$OUT/katex.LICENSE"
mkdir "$OUT/fonts" && cp "katex-$KATEX/package/dist/fonts/"*.woff2 "$OUT/fonts/"

cat > "$OUT/README.md" <<EOT
Vendored by scripts/vendor_webui.sh from npm (do not edit by hand):

| file | npm package | version | license |
|---|---|---|---|
| marked.umd.js | marked | $MARKED | MIT (marked.LICENSE) |
| purify.min.js | dompurify | $DOMPURIFY | MPL-2.0 OR Apache-2.0 (dompurify.LICENSE, dompurify.LICENSE-MPL) |
| highlight.min.js, highlight-github*.min.css | @highlightjs/cdn-assets | $HIGHLIGHT | BSD-3-Clause (highlight.js.LICENSE) |
| katex.min.js, katex.min.css, fonts/*.woff2 | katex | $KATEX | MIT (katex.LICENSE) |
EOT
ls -l "$OUT"
