/**
 * rustc's `--error-format=json` output, turned into diagnostics an agent can act on:
 * every span in the user's own source (1-based, prelude lines removed), labels,
 * suggestions with how safely they apply, child notes/help, the rendered text and
 * the long explanation of each error code.
 *
 * Parsers return data, they never throw: a line that is not rustc JSON is skipped.
 */
import path from "node:path";

/** How serious a diagnostic is, as rustc says it. */
export type Severity = "error" | "warning" | "note" | "help";

/** How safely a suggestion applies, as rustc rates it; "none" when the span suggests nothing, "unknown" when rustc did not rate it. */
export type Applicability = "none" | "machine_applicable" | "maybe_incorrect" | "has_placeholders" | "unknown";

/** An error code (as opposed to a lint name, which is lowercase snake_case). */
export const ERROR_CODE_PATTERN = /^E\d{4}$/;

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
  /** How safely `suggestedReplacement` applies; "none" when there is no suggestion. */
  applicability: Applicability;
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
  /** The text `rustc --explain <code>` prints for an error code; "" for lints, children and no code. */
  explanation: string;
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
export interface RustcSpan {
  file_name?: unknown;
  byte_start?: unknown;
  byte_end?: unknown;
  line_start?: unknown;
  line_end?: unknown;
  column_start?: unknown;
  column_end?: unknown;
  is_primary?: unknown;
  label?: unknown;
  suggested_replacement?: unknown;
  suggestion_applicability?: unknown;
  expansion?: { span?: RustcSpan } | null;
}

/** The subset of rustc's JSON diagnostic we read. */
export interface RustcDiagnostic {
  message?: unknown;
  code?: { code?: unknown; explanation?: unknown } | null;
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
  for (const value of rustcMessages(stderr)) {
    if (onlyInPrelude(value, options)) continue;
    out.push(toDiagnostic(value, options, true));
  }
  return out;
}

/** rustc's top-level JSON diagnostics in stderr, in order, without its closing tallies. */
export function* rustcMessages(stderr: string): Generator<RustcDiagnostic> {
  for (const line of stderr.split("\n")) {
    const trimmed = line.trim();
    if (!trimmed.startsWith("{")) continue;
    let value: unknown;
    try {
      value = JSON.parse(trimmed);
    } catch {
      continue; // rustc or a linker printed something that merely looks like JSON
    }
    if (isRustcDiagnostic(value) && !isSummary(value)) yield value;
  }
}

/**
 * Keeps diagnostics while their total size stays within `maxBytes` (measured as JSON, never smaller
 * than their protobuf encoding), errors before warnings so a flood of warnings cannot hide the error
 * that failed the build, in their original order. What is left out is counted in a closing note.
 */
export function limitDiagnostics(diagnostics: readonly Diagnostic[], maxBytes: number): Diagnostic[] {
  const sizes = diagnostics.map((d) => Buffer.byteLength(JSON.stringify(d)));
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total <= maxBytes) return [...diagnostics];
  const kept = new Set<number>();
  let used = 0;
  const order = diagnostics
    .map((_, i) => i)
    .sort((a, b) => Number(diagnostics[a]!.severity !== "error") - Number(diagnostics[b]!.severity !== "error") || a - b);
  for (const i of order) {
    if (used + sizes[i]! > maxBytes) continue;
    used += sizes[i]!;
    kept.add(i);
  }
  const left = diagnostics.filter((_, i) => !kept.has(i));
  const errors = left.filter((d) => d.severity === "error").length;
  const note: Diagnostic = {
    severity: "note",
    code: "",
    message: `${left.length} more diagnostics (${errors} of them errors) were left out: a response carries at most ${maxBytes} bytes of them`,
    spans: [],
    rendered: "",
    children: [],
    explanation: "",
  };
  return [...diagnostics.filter((_, i) => kept.has(i)), note];
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

/** True if `v` has the shape of a rustc JSON diagnostic (message and level). */
export function isRustcDiagnostic(v: unknown): v is RustcDiagnostic {
  return (
    typeof v === "object" &&
    v !== null &&
    typeof (v as RustcDiagnostic).message === "string" &&
    typeof (v as RustcDiagnostic).level === "string"
  );
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
  const explanation =
    topLevel && ERROR_CODE_PATTERN.test(code) && typeof d.code?.explanation === "string" ? asExplained(d.code.explanation) : "";
  return {
    severity: toSeverity(String(d.level)),
    code,
    message: String(d.message),
    spans: mapSpans(rawSpans, options),
    rendered,
    children: rawChildren.filter(isRustcDiagnostic).map((c) => toDiagnostic(c, options, false)),
    explanation,
  };
}

/**
 * rustc's JSON carries each code's entry of its error index; `rustc --explain` prints that entry
 * with code-fence info strings cut (```compile_fail,E0308 → ```) and doc-test-only `# ` lines
 * inside code blocks dropped. We do the same, so the text is exactly what `rustc --explain` prints,
 * without running rustc once more per code.
 */
export function asExplained(entry: string): string {
  const lines = entry.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  let inCodeBlock = false;
  let text = "";
  for (const raw of lines) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const indent = line.length - line.trimStart().length;
    const dedented = line.slice(indent);
    if (dedented.startsWith("```")) {
      inCodeBlock = !inCodeBlock;
      text += `${line.slice(0, indent + 3)}\n`;
    } else if (inCodeBlock && dedented.startsWith("# ")) {
      continue;
    } else {
      text += `${line}\n`;
    }
  }
  return text;
}

const APPLICABILITIES: Readonly<Record<string, Applicability>> = {
  MachineApplicable: "machine_applicable",
  MaybeIncorrect: "maybe_incorrect",
  HasPlaceholders: "has_placeholders",
  Unspecified: "unknown",
};

/** The rating of a span's suggestion; "none" without one, "unknown" for a rating this parser does not know. */
function applicabilityOf(s: RustcSpan): Applicability {
  if (typeof s.suggested_replacement !== "string") return "none";
  return typeof s.suggestion_applicability === "string" ? (APPLICABILITIES[s.suggestion_applicability] ?? "unknown") : "unknown";
}

/** True if rustc's `file_name` names the user's file. */
export function sameFile(fileName: string, userFile: string): boolean {
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
    // a replacement for text inside a foreign macro would be wrong at the call site
    const suggests = !viaExpansion && typeof raw.suggested_replacement === "string";
    const span: Span = {
      lineStart,
      columnStart: num(s.column_start),
      lineEnd,
      columnEnd: num(s.column_end),
      primary: raw.is_primary === true,
      label: typeof raw.label === "string" ? raw.label : "",
      suggestedReplacement: suggests ? String(raw.suggested_replacement) : "",
      applicability: suggests ? applicabilityOf(raw) : "none",
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
