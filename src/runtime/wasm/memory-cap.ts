/**
 * Caps a module's linear memory and tables. Worker resourceLimits do not cover
 * wasm memory, so the memory's maximum is what makes `memory.grow` fail (and
 * Rust's allocator report failure) at the cap. `importMemory` turns the
 * module's own memory into an import, so one compiled module serves every
 * memory limit and each run supplies a memory with its own maximum;
 * `capMemory` rewrites the maximum in place (for tools that run a module once).
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
const IMPORT_SECTION_ID = 2;
const MEMORY_SECTION_ID = 5;
const TABLE_SECTION_ID = 4;
const CUSTOM_SECTION_ID = 0;
const START_SECTION_ID = 8;
const MEMORY_IMPORT_KIND = 0x02;
/** Where a module rewritten by importMemory imports its memory from: not a name any guest may import itself. */
export const MEMORY_IMPORT_MODULE = "sandboxd";
/** The field name of that import. */
export const MEMORY_IMPORT_NAME = "memory";
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
  const header = checkHeader(wasm);
  if (header !== undefined) return { ok: false, error: header };
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
      id === MEMORY_SECTION_ID
        ? rewriteMemorySection(wasm.subarray(start, end), capPages)
        : id === TABLE_SECTION_ID
          ? rewriteTableSection(wasm.subarray(start, end))
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
  return { ok: true, wasm: concat(parts) };
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

/** The limits a module declared for its memory, in pages; what a run's memory must satisfy. */
export interface MemoryLimits {
  readonly initialPages: number;
  /** The module's own maximum, if it declared one. */
  readonly maximumPages: number | undefined;
}

/**
 * Caps the module's tables (as capMemory does) and turns its one defined memory into an import of
 * `MEMORY_IMPORT_MODULE.MEMORY_IMPORT_NAME` with the same limits. Memory indices do not move: with a
 * single memory, imported or defined, it is memory 0, and exports and data segments keep naming it.
 * A module without a memory is returned with `memory` undefined (validation refuses it elsewhere).
 */
export function importMemory(
  wasm: Uint8Array,
): { ok: true; wasm: Uint8Array<ArrayBuffer>; memory: MemoryLimits | undefined; startFunction: boolean } | { ok: false; error: string } {
  const header = checkHeader(wasm);
  if (header !== undefined) return { ok: false, error: header };
  const sections: { id: number; body: Uint8Array }[] = [];
  let memory: MemoryLimits | undefined;
  let memoryFlags = 0;
  let startFunction = false;
  let pos = 8;
  while (pos < wasm.length) {
    const id = wasm[pos] as number;
    const size = readU32(wasm, pos + 1);
    if (size === undefined) return { ok: false, error: `malformed section header at byte ${pos}` };
    const end = size.next + size.value;
    if (end > wasm.length) return { ok: false, error: `section at byte ${pos} runs past the end of the binary` };
    const body = wasm.subarray(size.next, end);
    pos = end;
    if (id === START_SECTION_ID) startFunction = true;
    if (id === MEMORY_SECTION_ID) {
      const parsed = parseMemorySection(body);
      if (!parsed.ok) return parsed;
      memory = parsed.memory;
      memoryFlags = parsed.flags;
      continue;
    }
    if (id === TABLE_SECTION_ID) {
      const tables = rewriteTableSection(body);
      if (!tables.ok) return tables;
      sections.push({ id, body: tables.body });
      continue;
    }
    sections.push({ id, body });
  }
  if (memory !== undefined) {
    const entry = Uint8Array.from([
      ...name(MEMORY_IMPORT_MODULE),
      ...name(MEMORY_IMPORT_NAME),
      MEMORY_IMPORT_KIND,
      memoryFlags,
      ...writeU32(memory.initialPages),
      ...(memory.maximumPages === undefined ? [] : writeU32(memory.maximumPages)),
    ]);
    const existing = sections.find((s) => s.id === IMPORT_SECTION_ID);
    if (existing) {
      const count = readU32(existing.body, 0);
      if (count === undefined) return { ok: false, error: "malformed import section" };
      existing.body = concat([Uint8Array.from(writeU32(count.value + 1)), existing.body.subarray(count.next), entry]);
    } else {
      // The import section goes right after the type section: before the first known section with a higher id.
      const at = sections.findIndex((s) => s.id !== CUSTOM_SECTION_ID && s.id > IMPORT_SECTION_ID);
      const section = { id: IMPORT_SECTION_ID, body: concat([Uint8Array.from(writeU32(1)), entry]) };
      if (at < 0) sections.push(section);
      else sections.splice(at, 0, section);
    }
  }
  const parts: Uint8Array[] = [wasm.subarray(0, 8)];
  for (const s of sections) parts.push(Uint8Array.from([s.id, ...writeU32(s.body.length)]), s.body);
  return { ok: true, wasm: concat(parts), memory, startFunction };
}

/**
 * The memory a run of a module rewritten by importMemory gets: its declared initial size, and a
 * maximum that is the smaller of its own and the run's limit. Undefined if the module needs more
 * memory to start than the limit allows.
 */
export function memoryForRun(limits: MemoryLimits, limitBytes: number): { initial: number; maximum: number } | undefined {
  const capPages = Math.min(MAX_MEMORY32_PAGES, Math.floor(Math.max(0, limitBytes) / WASM_PAGE_BYTES));
  if (limits.initialPages > capPages) return undefined;
  return { initial: limits.initialPages, maximum: Math.min(limits.maximumPages ?? MAX_MEMORY32_PAGES, capPages) };
}

function parseMemorySection(body: Uint8Array): { ok: true; memory: MemoryLimits; flags: number } | { ok: false; error: string } {
  const count = readU32(body, 0);
  if (count === undefined) return { ok: false, error: "malformed memory section" };
  if (count.value !== 1) return { ok: false, error: `the module defines ${count.value} memories; exactly one is supported` };
  const flags = body[count.next];
  if (flags === undefined) return { ok: false, error: "truncated memory section" };
  if (flags > 1) return { ok: false, error: "shared or 64-bit memories are not supported" };
  const min = readU32(body, count.next + 1);
  if (min === undefined) return { ok: false, error: "malformed memory limits" };
  let next = min.next;
  let max: number | undefined;
  if (flags === 1) {
    const m = readU32(body, next);
    if (m === undefined) return { ok: false, error: "malformed memory limits" };
    max = m.value;
    next = m.next;
  }
  if (next !== body.length) return { ok: false, error: "trailing bytes in memory section" };
  if (min.value > MAX_MEMORY32_PAGES)
    return { ok: false, error: `the module's initial memory (${min.value} pages) exceeds wasm32's 4 GiB` };
  return { ok: true, memory: { initialPages: min.value, maximumPages: max }, flags };
}

function checkHeader(wasm: Uint8Array): string | undefined {
  if (wasm.length < 8 || wasm[0] !== 0 || wasm[1] !== 0x61 || wasm[2] !== 0x73 || wasm[3] !== 0x6d) return "not a wasm binary (bad magic)";
  if (wasm[4] !== 1 || wasm[5] !== 0 || wasm[6] !== 0 || wasm[7] !== 0)
    return "unsupported wasm binary version (components are not supported)";
  return undefined;
}

function name(text: string): number[] {
  const bytes = Buffer.from(text, "utf8");
  return [...writeU32(bytes.length), ...bytes];
}

function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
