// A small YAML and unified-diff highlighter: enough for collector configs (keys, strings,
// numbers, comments, masked values), building DOM nodes (text is never parsed as HTML).

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

const SCALAR = /^(true|false|null|~|-?\d+(\.\d+)?([eE][-+]?\d+)?|0x[0-9a-fA-F]+)$/;

/** Where a comment starts: a `#` at the start or after a space, outside quotes; else -1. */
function commentAt(line) {
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === "#" && (i === 0 || line[i - 1] === " " || line[i - 1] === "\t")) {
      return i;
    }
  }
  return -1;
}

/** The nodes of one YAML line. */
function yamlLine(line) {
  const out = [];
  let rest = line;
  // A comment on its own, or after a value (a `#` after a space, outside quotes: close enough).
  let comment = "";
  const at = commentAt(rest);
  if (at >= 0) {
    comment = rest.slice(at);
    rest = rest.slice(0, at);
  }
  const key = rest.match(/^(\s*(?:-\s+)?)([^\s:"'][^:]*?|"[^"]*"|'[^']*'):(\s|$)(.*)$/);
  if (key) {
    out.push(key[1], span("k", key[2]), ":" + key[3]);
    rest = key[4];
  } else {
    const dash = rest.match(/^(\s*-\s+)(.*)$/);
    if (dash) {
      out.push(dash[1]);
      rest = dash[2];
    }
  }
  if (rest) {
    const value = rest.trim();
    if (/^\*+$|^<masked>$|\*\*\*/.test(value)) out.push(span("m", rest));
    else if (/^["']/.test(value)) out.push(span("s", rest));
    else if (SCALAR.test(value)) out.push(span("n", rest));
    else out.push(rest);
  }
  if (comment) out.push(span("c", comment));
  return out;
}

/** A <code> with `yaml` highlighted, a line per block. */
export function yaml(text) {
  const code = document.createElement("code");
  for (const line of text.replace(/\n$/, "").split("\n")) {
    const l = document.createElement("span");
    l.className = "line";
    l.append(...yamlLine(line), "\n");
    code.append(l);
  }
  return code;
}

/** A <code> with a unified diff highlighted: added, removed, hunk headers; YAML inside. */
export function diff(text) {
  const code = document.createElement("code");
  for (const line of text.replace(/\n$/, "").split("\n")) {
    const l = document.createElement("span");
    if (line.startsWith("+++") || line.startsWith("---")) {
      l.className = "line file";
      l.append(line);
    } else if (line.startsWith("@@")) {
      l.className = "line hunk";
      l.append(line);
    } else if (line.startsWith("+")) {
      l.className = "line ins";
      l.append(span("sign", "+"), ...yamlLine(line.slice(1)));
    } else if (line.startsWith("-")) {
      l.className = "line del";
      l.append(span("sign", "-"), ...yamlLine(line.slice(1)));
    } else {
      l.className = "line";
      l.append(span("sign", " "), ...yamlLine(line.slice(1)));
    }
    l.append("\n");
    code.append(l);
  }
  return code;
}
