/**
 * The user's source with rustc's machine-applicable suggestions applied, as `cargo fix` applies
 * them (rustfix): each help child of a diagnostic is one fix whose replacements go in together or
 * not at all; only replacements rustc rates MachineApplicable count; a fix overlapping one already
 * applied is left out. Byte offsets come from rustc's JSON, so the source must be exactly the file
 * rustc compiled. Like the diagnostics parser, this never throws.
 */
import { sameFile, type RustcDiagnostic, type RustcSpan } from "./diagnostics.js";

/** One replacement: bytes [start, end) of the source become `text`. */
interface Replacement {
  readonly start: number;
  readonly end: number;
  readonly text: string;
}

/**
 * Applies every machine-applicable fix of `messages` (rustc's top-level JSON diagnostics) to
 * `source`, in rustc's order. Returns "" when there is nothing to apply, or when the result would
 * exceed `maxBytes` (it could not be compiled anyway).
 */
export function applyMachineApplicableFixes(
  source: string,
  messages: Iterable<RustcDiagnostic>,
  userFile: string,
  maxBytes: number,
): string {
  const bytes = Buffer.from(source, "utf8");
  const applied: Replacement[] = [];
  for (const message of messages) {
    const children = Array.isArray(message.children) ? (message.children as RustcDiagnostic[]) : [];
    for (const child of children) {
      const fix = fixOf(child, userFile, bytes.byteLength);
      if (fix === undefined || fix.length === 0) continue;
      const fresh = fix.filter((r) => !applied.some((a) => same(a, r)));
      if (fresh.some((r, i) => fresh.some((o, j) => i !== j && overlaps(r, o)) || applied.some((a) => overlaps(a, r)))) continue;
      applied.push(...fresh);
    }
  }
  if (applied.length === 0) return "";
  applied.sort((a, b) => a.start - b.start);
  const parts: Buffer[] = [];
  let at = 0;
  for (const r of applied) {
    parts.push(bytes.subarray(at, r.start), Buffer.from(r.text, "utf8"));
    at = r.end;
  }
  parts.push(bytes.subarray(at));
  const fixed = Buffer.concat(parts);
  return fixed.byteLength > maxBytes ? "" : fixed.toString("utf8");
}

/**
 * The machine-applicable replacements of one help child, or undefined when one of them cannot be
 * applied (outside the user's file or the source): a fix goes in whole or not at all.
 */
function fixOf(child: RustcDiagnostic, userFile: string, sourceBytes: number): Replacement[] | undefined {
  const spans = Array.isArray(child.spans) ? (child.spans as RustcSpan[]) : [];
  const out: Replacement[] = [];
  for (const s of spans) {
    if (s.suggestion_applicability !== "MachineApplicable" || typeof s.suggested_replacement !== "string") continue;
    const { byte_start: start, byte_end: end } = s;
    if (typeof s.file_name !== "string" || !sameFile(s.file_name, userFile)) return undefined;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) return undefined;
    if ((start as number) < 0 || (start as number) > (end as number) || (end as number) > sourceBytes) return undefined;
    out.push({ start: start as number, end: end as number, text: s.suggested_replacement });
  }
  return out;
}

function same(a: Replacement, b: Replacement): boolean {
  return a.start === b.start && a.end === b.end && a.text === b.text;
}

/** Two edits conflict when their ranges share a byte, or both start at one point (two insertions there have no order). */
function overlaps(a: Replacement, b: Replacement): boolean {
  return a.start === b.start || (a.start < b.end && b.start < a.end);
}
