/**
 * rustc's `--error-format=json` output, turned into diagnostics an agent can act on:
 * every span in the user's own source (1-based, prelude lines removed), labels,
 * machine-applicable suggestions and child notes/help, plus the rendered text.
 *
 * Parsers return data, they never throw: a line that is not rustc JSON is skipped.
 */
import path from "node:path";

/** How serious a diagnostic is, as rustc says it. */
export type Severity = "error" | "warning" | "note" | "help";

/** A region of the user's source a diagnostic points at (1-based lines and columns, end exclusive as rustc gives it). */
export interface Span {
  lineStart: number;
  columnStart: number;
  lineEnd: number;
  columnEnd: number;
  /** The span the message is about, as opposed to context. */
  primary: boolean;
  /** rustc's label under the span, "" if none. */
  label: string;
  /** Text that replaces the span when the suggestion is applied, "" if none. */
  suggestedReplacement: string;
}

/** One rustc message with its spans and its child notes/help. */
export interface Diagnostic {
  severity: Severity;
  /** Error code such as `E0308`, or lint name such as `unused_variables`; "" if none. */
  code: string;
  message: string;
  spans: Span[];
  /** rustc's human-readable rendering (line numbers corrected for the prelude); "" for children. */
  rendered: string;
  children: Diagnostic[];
}

/** Options for {@link parseRustcDiagnostics}. */
export interface ParseRustcDiagnosticsOptions {
  /** The source file name exactly as given to rustc; spans in any other file are dropped. */
  userFile: string;
  /** Lines the daemon prepended before the user's source; spans in them are dropped. */
  lineOffset: number;
  /** Name shown instead of `userFile` in `rendered` (e.g. "main.rs" instead of a temp path). */
  displayName?: string;
}

/** The subset of rustc's JSON span we read. */
interface RustcSpan {
  file_name?: unknown;
  line_start?: unknown;
  line_end?: unknown;
  column_start?: unknown;
  column_end?: unknown;
  is_primary?: unknown;
  label?: unknown;
  suggested_replacement?: unknown;
  expansion?: { span?: RustcSpan } | null;
}

/** The subset of rustc's JSON diagnostic we read. */
interface RustcDiagnostic {
  message?: unknown;
  code?: { code?: unknown } | null;
  level?: unknown;
  spans?: unknown;
  children?: unknown;
  rendered?: unknown;
}

/**
 * Parses rustc --error-format=json stderr (one JSON object per line; skip non-JSON lines and the
 * "aborting due to" / "N warnings emitted" summaries) into diagnostics with spans in the USER's source:
 * only spans in `userFile` are kept, shifted up by `lineOffset` lines (the daemon may prepend a prelude).
 */
export function parseRustcDiagnostics(stderr: string, options: ParseRustcDiagnosticsOptions): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const line of stderr.split("\n")) {
    const trimmed = line.trim();
    if (!trimmed.startsWith("{")) continue;
    let value: unknown;
    try {
      value = JSON.parse(trimmed);
    } catch {
      continue; // rustc or a linker printed something that merely looks like JSON
    }
    if (!isRustcDiagnostic(value) || isSummary(value) || onlyInPrelude(value, options)) continue;
    out.push(toDiagnostic(value, options, true));
  }
  return out;
}

/**
 * Flattens children into the top-level list, in order, for wire formats that have no nesting
 * (the proto's `repeated Diagnostic`): each child follows its parent.
 */
export function flattenDiagnostics(diagnostics: readonly Diagnostic[]): Diagnostic[] {
  const out: Diagnostic[] = [];
  const visit = (d: Diagnostic): void => {
    out.push({ ...d, children: [] });
    for (const c of d.children) visit(c);
  };
  for (const d of diagnostics) visit(d);
  return out;
}

/** True if any diagnostic (not counting children) is an error. */
export function hasErrors(diagnostics: readonly Diagnostic[]): boolean {
  return diagnostics.some((d) => d.severity === "error");
}

function isRustcDiagnostic(v: unknown): v is RustcDiagnostic {
  return typeof v === "object" && v !== null && typeof (v as RustcDiagnostic).message === "string" && typeof (v as RustcDiagnostic).level === "string";
}

// rustc's closing tallies repeat what the list already says and carry no span.
const SUMMARY_PATTERNS: readonly RegExp[] = [
  /^aborting due to /,
  /^\d+ warnings? emitted$/,
  /^Some errors have detailed explanations: /,
  /^For more information about (this|an) error, try /,
];

function isSummary(d: RustcDiagnostic): boolean {
  const spans = Array.isArray(d.spans) ? d.spans : [];
  return spans.length === 0 && SUMMARY_PATTERNS.some((p) => p.test(String(d.message)));
}

/** A diagnostic whose every span is in the daemon's prelude is about our code, not the user's (e.g. an unused import there). */
function onlyInPrelude(d: RustcDiagnostic, options: ParseRustcDiagnosticsOptions): boolean {
  if (options.lineOffset <= 0 || !Array.isArray(d.spans) || d.spans.length === 0) return false;
  return (d.spans as RustcSpan[]).every(
    (s) => typeof s.file_name === "string" && sameFile(s.file_name, options.userFile) && num(s.line_end) <= options.lineOffset,
  );
}

function toSeverity(level: string): Severity {
  switch (level) {
    case "warning":
      return "warning";
    case "note":
    case "failure-note":
      return "note";
    case "help":
      return "help";
    default:
      // "error", "error: internal compiler error" and anything a future rustc invents
      return "error";
  }
}

function toDiagnostic(d: RustcDiagnostic, options: ParseRustcDiagnosticsOptions, topLevel: boolean): Diagnostic {
  const rawSpans = Array.isArray(d.spans) ? (d.spans as RustcSpan[]) : [];
  const rawChildren = Array.isArray(d.children) ? (d.children as unknown[]) : [];
  const code = d.code && typeof d.code.code === "string" ? d.code.code : "";
  const rendered = topLevel && typeof d.rendered === "string" ? fixRendered(d.rendered, options) : "";
  return {
    severity: toSeverity(String(d.level)),
    code,
    message: String(d.message),
    spans: mapSpans(rawSpans, options),
    rendered,
    children: rawChildren.filter(isRustcDiagnostic).map((c) => toDiagnostic(c, options, false)),
  };
}

function sameFile(fileName: string, userFile: string): boolean {
  return fileName === userFile || path.resolve(fileName) === path.resolve(userFile);
}

function num(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

/**
 * Keeps the spans that lie in the user's file. A span inside a macro defined elsewhere is
 * replaced by the macro's call site in the user's file, because that is the line the agent can edit.
 */
function mapSpans(spans: readonly RustcSpan[], options: ParseRustcDiagnosticsOptions): Span[] {
  const out: Span[] = [];
  const seen = new Set<string>();
  for (const raw of spans) {
    let s: RustcSpan | undefined = raw;
    let viaExpansion = false;
    while (s && !(typeof s.file_name === "string" && sameFile(s.file_name, options.userFile))) {
      s = s.expansion?.span ?? undefined;
      viaExpansion = true;
    }
    if (!s) continue;
    const lineStart = num(s.line_start) - options.lineOffset;
    const lineEnd = num(s.line_end) - options.lineOffset;
    if (lineStart < 1 || lineEnd < 1) continue; // inside the daemon's prelude
    const span: Span = {
      lineStart,
      columnStart: num(s.column_start),
      lineEnd,
      columnEnd: num(s.column_end),
      primary: raw.is_primary === true,
      label: typeof raw.label === "string" ? raw.label : "",
      // a replacement for text inside a foreign macro would be wrong at the call site
      suggestedReplacement: !viaExpansion && typeof raw.suggested_replacement === "string" ? raw.suggested_replacement : "",
    };
    const key = JSON.stringify(span);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(span);
  }
  return out;
}

const ESCAPE_RE = /[.*+?^${}()|[\]\\]/g;

/**
 * Corrects rustc's rendered text for the prelude: `--> file:L:C` headers and the gutter line
 * numbers of snippets from the user's file are shifted, and the temp path is replaced by the
 * display name. Snippets from other files are left alone.
 */
function fixRendered(rendered: string, options: ParseRustcDiagnosticsOptions): string {
  const { userFile, lineOffset } = options;
  const display = options.displayName ?? userFile;
  if (lineOffset === 0 && display === userFile) return rendered;
  const header = /^(\s*(?:-->|:::) )(.+):(\d+):(\d+)$/;
  const gutter = /^(\s*)(\d+)( \|.*)$/;
  const fileRe = new RegExp(userFile.replace(ESCAPE_RE, "\\$&"), "g");
  let inUserFile = true;
  return rendered
    .split("\n")
    .map((line) => {
      const h = header.exec(line);
      if (h) {
        const [, lead, file, l, c] = h as unknown as [string, string, string, string, string];
        inUserFile = sameFile(file, userFile);
        if (!inUserFile) return line;
        return `${lead}${display}:${Math.max(1, Number(l) - lineOffset)}:${c}`;
      }
      // a bare `help:`/`note:` suggestion block shows the user's file without a header
      if (/^(help|note|warning|error)/.test(line)) inUserFile = true;
      const g = gutter.exec(line);
      if (g && inUserFile && lineOffset !== 0) {
        const [, lead, n, rest] = g as unknown as [string, string, string, string];
        const shifted = String(Number(n) - lineOffset).padStart(n.length, " ");
        return `${lead}${shifted}${rest}`;
      }
      return display === userFile ? line : line.replace(fileRe, display);
    })
    .join("\n");
}
