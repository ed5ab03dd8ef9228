/**
 * A unified diff (as `diff -u` prints it, 3 lines of context) of two texts, for showing a repair.
 * Repairs touch a few lines of a script, so the common head and tail are cut first and only the
 * rest is compared line by line (longest common subsequence); a rest too large for that is shown
 * as removed and added whole, which is still a correct diff.
 */

/** Lines of context around each change. */
const CONTEXT_LINES = 3;
/** Largest middle (old lines × new lines) compared line by line; beyond it, replaced whole. */
const MAX_LCS_CELLS = 4_000_000;

type Op = { readonly kind: " " | "-" | "+"; readonly line: string };

/** The unified diff turning `before` into `after`, labelled with the two names; "" when they are equal. */
export function unifiedDiff(before: string, after: string, beforeName: string, afterName: string): string {
  if (before === after) return "";
  const a = splitLines(before);
  const b = splitLines(after);
  const ops = diffLines(a, b);
  const hunks = hunksOf(ops);
  let out = `--- ${beforeName}\n+++ ${afterName}\n`;
  for (const h of hunks) {
    out += `@@ -${range(h.oldStart, h.oldCount)} +${range(h.newStart, h.newCount)} @@\n`;
    for (const op of h.ops) {
      out += op.kind + op.line.text + "\n";
      if (!op.line.newline) out += "\\ No newline at end of file\n";
    }
  }
  return out;
}

interface Line {
  readonly text: string;
  /** False for a last line without a final newline. */
  readonly newline: boolean;
}

function splitLines(text: string): Line[] {
  if (text === "") return [];
  const parts = text.split("\n");
  const last = parts.pop()!;
  const lines = parts.map((t) => ({ text: t, newline: true }));
  if (last !== "") lines.push({ text: last, newline: false });
  return lines;
}

const same = (x: Line, y: Line): boolean => x.text === y.text && x.newline === y.newline;

function diffLines(a: Line[], b: Line[]): { kind: Op["kind"]; line: Line }[] {
  let head = 0;
  while (head < a.length && head < b.length && same(a[head]!, b[head]!)) head++;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head && same(a[a.length - 1 - tail]!, b[b.length - 1 - tail]!)) tail++;
  const midA = a.slice(head, a.length - tail);
  const midB = b.slice(head, b.length - tail);
  const ops: { kind: Op["kind"]; line: Line }[] = a.slice(0, head).map((line) => ({ kind: " ", line }));
  if (midA.length * midB.length > MAX_LCS_CELLS) {
    ops.push(...midA.map((line) => ({ kind: "-" as const, line })), ...midB.map((line) => ({ kind: "+" as const, line })));
  } else {
    ops.push(...lcsOps(midA, midB));
  }
  ops.push(...a.slice(a.length - tail).map((line) => ({ kind: " " as const, line })));
  return ops;
}

function lcsOps(a: Line[], b: Line[]): { kind: Op["kind"]; line: Line }[] {
  const n = a.length;
  const m = b.length;
  // lengths[i][j]: LCS of a[i..] and b[j..]
  const lengths = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lengths[i]![j] = same(a[i]!, b[j]!) ? lengths[i + 1]![j + 1]! + 1 : Math.max(lengths[i + 1]![j]!, lengths[i]![j + 1]!);
    }
  }
  const ops: { kind: Op["kind"]; line: Line }[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && same(a[i]!, b[j]!)) {
      ops.push({ kind: " ", line: a[i++]! });
      j++;
    } else if (j === m || (i < n && lengths[i + 1]![j]! >= lengths[i]![j + 1]!)) {
      // removals before additions, as diff -u prints them
      ops.push({ kind: "-", line: a[i++]! });
    } else {
      ops.push({ kind: "+", line: b[j++]! });
    }
  }
  return ops;
}

interface Hunk {
  oldStart: number;
  oldCount: number;
  newStart: number;
  newCount: number;
  ops: { kind: Op["kind"]; line: Line }[];
}

function hunksOf(ops: { kind: Op["kind"]; line: Line }[]): Hunk[] {
  const changed = ops.map((op, i) => (op.kind === " " ? -1 : i)).filter((i) => i >= 0);
  const hunks: Hunk[] = [];
  let k = 0;
  while (k < changed.length) {
    const from = Math.max(0, changed[k]! - CONTEXT_LINES);
    let to = changed[k]!;
    while (k + 1 < changed.length && changed[k + 1]! - to <= 2 * CONTEXT_LINES) to = changed[++k]!;
    k++;
    const end = Math.min(ops.length, to + CONTEXT_LINES + 1);
    let oldLine = 1;
    let newLine = 1;
    for (const op of ops.slice(0, from)) {
      if (op.kind !== "+") oldLine++;
      if (op.kind !== "-") newLine++;
    }
    const slice = ops.slice(from, end);
    hunks.push({
      oldStart: oldLine,
      oldCount: slice.filter((o) => o.kind !== "+").length,
      newStart: newLine,
      newCount: slice.filter((o) => o.kind !== "-").length,
      ops: slice,
    });
  }
  return hunks;
}

/** diff's hunk range: `start,count`, with `start` one before the position when count is 0. */
function range(start: number, count: number): string {
  if (count === 1) return String(start);
  return `${count === 0 ? start - 1 : start},${count}`;
}
