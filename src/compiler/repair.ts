/**
 * Verified repair: a source that failed to compile, with rustc's suggestions applied round after
 * round until it compiles. A repair is returned only when its last candidate compiled, so the agent
 * never gets a "fix" that is itself broken.
 *
 * Each round's edits are planned from the round's diagnostics exactly as the compiler returned (and
 * cached) them, never from rustc's raw output: a repair replayed from the cache is therefore the
 * same repair, and needs no rustc run. Planning is pure and never throws.
 */
import { SandboxError } from "../errors/sandbox-error.js";
import type { Reason } from "../errors/reasons.js";
import { MAX_REPAIR_ROUNDS, MAX_SOURCE_BYTES, REPAIR_TIME_BUDGET_MS } from "../limits.js";
import type { CompileResult } from "./compiler.js";
import type { Applicability, Diagnostic, Span } from "./diagnostics.js";

/** One replacement the repair applied, with the diagnostic that called for it. */
export interface RepairEdit {
  /** 1 for an edit of the original source, n for an edit of round n - 1's candidate. */
  readonly round: number;
  /** Where, in that round's source, with the replacement and its applicability. */
  readonly span: Span;
  /** The error's code ("" when rustc gives none). */
  readonly code: string;
  /** The error's message. */
  readonly message: string;
  /** The help text that proposed the replacement. */
  readonly suggestion: string;
}

/** A source that compiles, made from a failing one. */
export interface RepairResult {
  readonly source: string;
  /** The repaired source's module, compiled and cached. */
  readonly moduleId: string;
  readonly edits: readonly RepairEdit[];
  /** Compiles the repair took (the original's not counted). */
  readonly rounds: number;
  /** Every compile of the repair was served from the cache. */
  readonly cacheHit: boolean;
  /** rustc's warnings about the repaired source. */
  readonly diagnostics: readonly Diagnostic[];
}

/** Why a repair gave up; logged, never an error of the request. */
export type RepairStop = "no_suggestion" | "cycle" | "too_large" | "rounds" | "budget" | "compile_refused";

/** Compiles one candidate (through the cache); the repair's own signal bounds it. */
export type CandidateCompiler = (source: string, signal: AbortSignal) => Promise<CompileResult>;

/** Bounds and choices of one repair; the defaults are the daemon's. */
export interface RepairOptions {
  /** Compiles of candidates at most. */
  readonly maxRounds?: number;
  /** Wall-clock time all the rounds together may take. */
  readonly budgetMs?: number;
  /** Also apply MaybeIncorrect suggestions that offer exactly one candidate (not only MachineApplicable ones). */
  readonly maybeIncorrect?: boolean;
  /** Hears why a repair gave up. */
  readonly onStop?: (why: RepairStop, rounds: number) => void;
}

/**
 * Refusals of a candidate's compile that end the repair, not the request: the original compile
 * already answered, and its diagnostics are worth more than an error about a candidate.
 */
const CANDIDATE_REFUSALS: ReadonlySet<Reason> = new Set<Reason>([
  "COMPILE_TIMEOUT",
  "COMPILE_QUEUE_FULL",
  "MODULE_BLOCKED",
  "EMPTY_SOURCE",
  "SOURCE_TOO_LARGE",
]);

/**
 * Repairs `source`, whose compile gave `first` (not ok), by applying its diagnostics' suggestions and
 * compiling the candidate, while rounds and time last. Returns undefined when no candidate compiled.
 * Rejects only when `signal` fires (the caller cancelled) or a compile fails for a reason that is not
 * about the candidate (e.g. INTERNAL).
 */
export async function repairSource(
  source: string,
  first: CompileResult,
  compile: CandidateCompiler,
  signal: AbortSignal | undefined,
  options: RepairOptions = {},
): Promise<RepairResult | undefined> {
  const maxRounds = options.maxRounds ?? MAX_REPAIR_ROUNDS;
  const budgetMs = options.budgetMs ?? REPAIR_TIME_BUDGET_MS;
  const stop = (why: RepairStop, rounds: number): undefined => {
    options.onStop?.(why, rounds);
    return undefined;
  };
  if (first.ok) return undefined;
  const controller = new AbortController();
  const budgetSpent = new SandboxError("CANCELLED", `the repair's time budget of ${budgetMs} ms ran out`);
  const onCallerAbort = (): void => controller.abort(signal?.reason);
  if (signal?.aborted) onCallerAbort();
  else signal?.addEventListener("abort", onCallerAbort, { once: true });
  const timer = setTimeout(() => controller.abort(budgetSpent), budgetMs);
  try {
    const seen = new Set<string>([source]);
    const edits: RepairEdit[] = [];
    let current = source;
    let result = first;
    let cacheHit = true;
    let rounds = 0;
    while (rounds < maxRounds) {
      const planned = planRepairEdits(current, result.diagnostics, options.maybeIncorrect ?? true);
      if (planned.length === 0) return stop("no_suggestion", rounds);
      const next = applyRepairEdits(current, planned);
      if (Buffer.byteLength(next) > MAX_SOURCE_BYTES) return stop("too_large", rounds);
      // A candidate seen before would only lead round the same loop again.
      if (seen.has(next)) return stop("cycle", rounds);
      seen.add(next);
      rounds++;
      try {
        result = await compile(next, controller.signal);
      } catch (e: unknown) {
        if (signal?.aborted) throw e;
        if (controller.signal.reason === budgetSpent) break;
        if (e instanceof SandboxError && CANDIDATE_REFUSALS.has(e.reason)) return stop("compile_refused", rounds);
        throw e;
      }
      cacheHit &&= result.cacheHit;
      edits.push(...planned.map((p) => ({ ...p.edit, round: rounds })));
      current = next;
      if (result.ok) return { source: current, moduleId: result.moduleId, edits, rounds, cacheHit, diagnostics: result.diagnostics };
    }
    return stop(rounds < maxRounds ? "budget" : "rounds", rounds);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onCallerAbort);
  }
}

/** An edit planned for a round: the UTF-16 range of the source it replaces, and its record. */
export interface PlannedEdit {
  readonly start: number;
  readonly end: number;
  readonly text: string;
  readonly edit: Omit<RepairEdit, "round">;
}

/**
 * The edits one round applies to `source`, given the diagnostics of its compile. Only errors are
 * repaired (a warning never stops a build, and its suggestions may change meaning). Of each error,
 * its MachineApplicable suggestions are taken (every help child, as `cargo fix` does); failing
 * those, its MaybeIncorrect suggestion if there is exactly one candidate: one help child whose
 * replacements do not overlap each other (several at one place are alternatives to choose from,
 * which the agent must do). An edit overlapping one already taken is left for a later round.
 * Suggestions with placeholders, or unrated, are never applied.
 */
export function planRepairEdits(source: string, diagnostics: readonly Diagnostic[], maybeIncorrect: boolean): PlannedEdit[] {
  const index = new LineIndex(source);
  const taken = new TakenEdits();
  const take = (group: readonly PlannedEdit[]): void => {
    const fresh = group.filter((g) => !taken.has(g));
    if (fresh.length === 0 || conflicts(fresh) || fresh.some((f) => taken.overlapsAny(f))) return;
    for (const f of fresh) taken.add(f);
  };
  for (const d of diagnostics) {
    if (d.severity !== "error") continue;
    const groups = (applicability: Applicability): PlannedEdit[][] =>
      d.children.map((child) => editsOf(child, d, applicability, index)).filter((g): g is PlannedEdit[] => g !== undefined && g.length > 0);
    const machine = groups("machine_applicable");
    if (machine.length > 0) {
      for (const g of machine) take(g);
      continue;
    }
    if (!maybeIncorrect) continue;
    const maybe = groups("maybe_incorrect");
    if (maybe.length === 1 && !conflicts(maybe[0]!)) take(maybe[0]!);
  }
  return taken.sorted();
}

/**
 * The edits a round has taken, kept sorted by start: since they never overlap, a new edit can only
 * overlap its neighbours, so each check is a binary search (an error flood stays cheap to plan).
 */
class TakenEdits {
  private readonly edits: PlannedEdit[] = [];
  private readonly keys = new Set<string>();

  has(e: PlannedEdit): boolean {
    return this.keys.has(TakenEdits.key(e));
  }

  overlapsAny(e: PlannedEdit): boolean {
    const i = this.firstStartingAfter(e.start);
    const before = this.edits[i - 1];
    const after = this.edits[i];
    return (before !== undefined && overlaps(before, e)) || (after !== undefined && overlaps(after, e));
  }

  add(e: PlannedEdit): void {
    this.keys.add(TakenEdits.key(e));
    this.edits.splice(this.firstStartingAfter(e.start), 0, e);
  }

  sorted(): PlannedEdit[] {
    return [...this.edits];
  }

  /** Index of the first edit starting after `start` (the edits before it start at or before it). */
  private firstStartingAfter(start: number): number {
    let lo = 0;
    let hi = this.edits.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.edits[mid]!.start <= start) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private static key(e: PlannedEdit): string {
    return `${e.start}:${e.end}:${e.text}`;
  }
}

/** `source` with `edits` (from one {@link planRepairEdits}, so none overlap) applied. */
export function applyRepairEdits(source: string, edits: readonly PlannedEdit[]): string {
  let out = "";
  let at = 0;
  for (const e of [...edits].sort((a, b) => a.start - b.start)) {
    out += source.slice(at, e.start) + e.text;
    at = e.end;
  }
  return out + source.slice(at);
}

/** The child's suggestions of one applicability as edits, or undefined when one of them cannot be placed (a fix goes in whole or not at all). */
function editsOf(child: Diagnostic, parent: Diagnostic, applicability: Applicability, index: LineIndex): PlannedEdit[] | undefined {
  const out: PlannedEdit[] = [];
  for (const span of child.spans) {
    if (span.applicability !== applicability) continue;
    const start = index.offset(span.lineStart, span.columnStart);
    const end = index.offset(span.lineEnd, span.columnEnd);
    if (start === undefined || end === undefined || start > end) return undefined;
    out.push({
      start,
      end,
      text: span.suggestedReplacement,
      edit: { span, code: parent.code, message: parent.message, suggestion: child.message },
    });
  }
  return out;
}

/** Two edits in one group that overlap: alternatives, not one fix. */
function conflicts(group: readonly PlannedEdit[]): boolean {
  return group.some((a, i) => group.some((b, j) => i < j && overlaps(a, b)));
}

/** Two edits conflict when their ranges share a character, or both start at one point (two insertions there have no order). */
function overlaps(a: PlannedEdit, b: PlannedEdit): boolean {
  return a.start === b.start || (a.start < b.end && b.start < a.end);
}

/**
 * rustc's 1-based line and column (counted in characters, i.e. code points) → an index into the JS
 * string. rustc drops a leading byte-order mark before counting, and a column may point just past
 * the last character of its line (an insertion there). Each lookup is O(1) once its line is known:
 * a hostile source may be one 1 MiB line with thousands of suggestions on it.
 */
class LineIndex {
  private readonly starts: number[] = [0];
  private readonly bom: boolean;
  /** Per line with characters outside the BMP: the string index of each character (and of its end). */
  private readonly astral = new Map<number, Uint32Array>();
  /** Lines known to have none (a column is then a plain offset). */
  private readonly plain = new Set<number>();

  constructor(private readonly source: string) {
    this.bom = source.startsWith("\uFEFF");
    for (let i = 0; i < source.length; i++) if (source.charCodeAt(i) === 10) this.starts.push(i + 1);
  }

  offset(line: number, column: number): number | undefined {
    if (!Number.isSafeInteger(line) || !Number.isSafeInteger(column) || line < 1 || column < 1 || line > this.starts.length)
      return undefined;
    const first = this.starts[line - 1]! + (line === 1 && this.bom ? 1 : 0);
    const end = line < this.starts.length ? this.starts[line]! - 1 : this.source.length;
    const characters = this.characters(line, first, end);
    if (characters === undefined) return column - 1 <= end - first ? first + column - 1 : undefined;
    return column - 1 < characters.length ? characters[column - 1] : undefined;
  }

  /** The line's character starts, or undefined when every character is one UTF-16 unit. */
  private characters(line: number, first: number, end: number): Uint32Array | undefined {
    if (this.plain.has(line)) return undefined;
    const known = this.astral.get(line);
    if (known) return known;
    const starts: number[] = [];
    let surrogates = false;
    for (let at = first; at < end; ) {
      starts.push(at);
      const wide = (this.source.codePointAt(at) ?? 0) > 0xffff;
      surrogates ||= wide;
      at += wide ? 2 : 1;
    }
    if (!surrogates) {
      this.plain.add(line);
      return undefined;
    }
    starts.push(end);
    const array = Uint32Array.from(starts);
    this.astral.set(line, array);
    return array;
  }
}
