/**
 * Caps a module's own linear memory by rewriting the maximum in its memory
 * section. Worker resourceLimits do not cover wasm memory, so this is what
 * makes `memory.grow` fail (and Rust's allocator report failure) at the cap.
 *
 * It caps the module's tables too: table elements live on the worker's V8 heap,
 * and a heap that overflows inside one synchronous allocation (instantiating
 * 30 tables of 10^7 entries, or `table.grow`) aborts the whole process, not just
 * the worker (Node cannot stop a worker mid-allocation). Red-team finding.
 */
import { MAX_WASM_TABLE_ELEMENTS } from "../../limits.js";

/** Size of a wasm page. */
export const WASM_PAGE_BYTES = 65_536;
/** Largest page count a 32-bit memory may declare. */
const MAX_MEMORY32_PAGES = 65_536;
const MEMORY_SECTION_ID = 5;
const TABLE_SECTION_ID = 4;
/** Reference types a table may hold (funcref, externref). */
const FUNCREF = 0x70;
const EXTERNREF = 0x6f;

interface Leb {
  readonly value: number;
  readonly next: number;
}

function readU32(bytes: Uint8Array, pos: number): Leb | undefined {
  let result = 0;
  let shift = 0;
  for (let i = 0; i < 5; i++) {
    const b = bytes[pos + i];
    if (b === undefined) return undefined;
    result += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return { value: result, next: pos + i + 1 };
    shift += 7;
  }
  return undefined;
}

function writeU32(value: number): number[] {
  const out: number[] = [];
  let v = value;
  do {
    let b = v & 0x7f;
    v = Math.floor(v / 128);
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
  return out;
}

/** Rewrites the module's own (defined, not imported) memory maximum to at most maxBytes (rounded down to 64 KiB pages),
 *  and its tables' maxima so that all of them together stay near MAX_WASM_TABLE_ELEMENTS.
 *  Returns an error (not throw) if the module's initial memory or tables already exceed them or the binary is malformed. */
export function capMemory(wasm: Uint8Array, maxBytes: number): { ok: true; wasm: Uint8Array<ArrayBuffer> } | { ok: false; error: string } {
  if (wasm.length < 8 || wasm[0] !== 0 || wasm[1] !== 0x61 || wasm[2] !== 0x73 || wasm[3] !== 0x6d) {
    return { ok: false, error: "not a wasm binary (bad magic)" };
  }
  if (wasm[4] !== 1 || wasm[5] !== 0 || wasm[6] !== 0 || wasm[7] !== 0) {
    return { ok: false, error: "unsupported wasm binary version (components are not supported)" };
  }
  const capPages = Math.min(MAX_MEMORY32_PAGES, Math.floor(Math.max(0, maxBytes) / WASM_PAGE_BYTES));
  const parts: Uint8Array[] = [wasm.subarray(0, 8)];
  let pos = 8;
  while (pos < wasm.length) {
    const id = wasm[pos] as number;
    const size = readU32(wasm, pos + 1);
    if (size === undefined) return { ok: false, error: `malformed section header at byte ${pos}` };
    const start = size.next;
    const end = start + size.value;
    if (end > wasm.length) return { ok: false, error: `section at byte ${pos} runs past the end of the binary` };
    const rewritten =
      id === MEMORY_SECTION_ID ? rewriteMemorySection(wasm.subarray(start, end), capPages)
      : id === TABLE_SECTION_ID ? rewriteTableSection(wasm.subarray(start, end))
      : undefined;
    if (rewritten === undefined) {
      parts.push(wasm.subarray(pos, end));
    } else {
      if (!rewritten.ok) return rewritten;
      parts.push(Uint8Array.from([id, ...writeU32(rewritten.body.length)]), rewritten.body);
    }
    pos = end;
  }
  // A module without a memory section has nothing to cap (validation rejects modules without an exported memory).
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return { ok: true, wasm: out };
}

/** Refuses tables whose initial sizes add up past the budget, and lowers every maximum to an equal share of it
 *  (never below the table's initial size), so `table.grow` cannot go past about twice the budget in all. */
function rewriteTableSection(body: Uint8Array): { ok: true; body: Uint8Array } | { ok: false; error: string } {
  const count = readU32(body, 0);
  if (count === undefined) return { ok: false, error: "malformed table section" };
  const tables: { type: number; min: number; max: number | undefined }[] = [];
  let pos = count.next;
  for (let i = 0; i < count.value; i++) {
    const type = body[pos];
    const flags = body[pos + 1];
    if (type !== FUNCREF && type !== EXTERNREF) return { ok: false, error: "unsupported table type (only funcref and externref tables)" };
    if (flags === undefined || flags > 1) return { ok: false, error: "shared or 64-bit tables are not supported" };
    const min = readU32(body, pos + 2);
    if (min === undefined) return { ok: false, error: "malformed table limits" };
    pos = min.next;
    let max: number | undefined;
    if (flags === 1) {
      const m = readU32(body, pos);
      if (m === undefined) return { ok: false, error: "malformed table limits" };
      max = m.value;
      pos = m.next;
    }
    tables.push({ type, min: min.value, max });
  }
  if (pos !== body.length) return { ok: false, error: "trailing bytes in table section" };
  const initial = tables.reduce((n, t) => n + t.min, 0);
  if (initial > MAX_WASM_TABLE_ELEMENTS) {
    return { ok: false, error: `the module's tables start with ${initial} elements, more than the limit of ${MAX_WASM_TABLE_ELEMENTS}` };
  }
  const share = Math.floor(MAX_WASM_TABLE_ELEMENTS / Math.max(1, tables.length));
  const out: number[] = writeU32(tables.length);
  for (const t of tables) out.push(t.type, 1, ...writeU32(t.min), ...writeU32(Math.max(t.min, Math.min(t.max ?? share, share))));
  return { ok: true, body: Uint8Array.from(out) };
}

function rewriteMemorySection(body: Uint8Array, capPages: number): { ok: true; body: Uint8Array } | { ok: false; error: string } {
  const count = readU32(body, 0);
  if (count === undefined) return { ok: false, error: "malformed memory section" };
  const out: number[] = writeU32(count.value);
  let pos = count.next;
  for (let i = 0; i < count.value; i++) {
    const flags = body[pos];
    if (flags === undefined) return { ok: false, error: "truncated memory section" };
    if (flags > 1) return { ok: false, error: "shared or 64-bit memories are not supported" };
    const min = readU32(body, pos + 1);
    if (min === undefined) return { ok: false, error: "malformed memory limits" };
    pos = min.next;
    let max = MAX_MEMORY32_PAGES;
    if (flags === 1) {
      const m = readU32(body, pos);
      if (m === undefined) return { ok: false, error: "malformed memory limits" };
      max = m.value;
      pos = m.next;
    }
    if (min.value > capPages) {
      return {
        ok: false,
        error: `the module's initial memory (${min.value * WASM_PAGE_BYTES} bytes) exceeds the memory limit (${capPages * WASM_PAGE_BYTES} bytes)`,
      };
    }
    out.push(1, ...writeU32(min.value), ...writeU32(Math.min(max, capPages)));
  }
  if (pos !== body.length) return { ok: false, error: "trailing bytes in memory section" };
  return { ok: true, body: Uint8Array.from(out) };
}
