/**
 * Caps a module's own linear memory by rewriting the maximum in its memory
 * section. Worker resourceLimits do not cover wasm memory, so this is what
 * makes `memory.grow` fail (and Rust's allocator report failure) at the cap.
 */

/** Size of a wasm page. */
export const WASM_PAGE_BYTES = 65_536;
/** Largest page count a 32-bit memory may declare. */
const MAX_MEMORY32_PAGES = 65_536;
const MEMORY_SECTION_ID = 5;

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

/** Rewrites the module's own (defined, not imported) memory maximum to at most maxBytes (rounded down to 64 KiB pages).
 *  Returns an error (not throw) if the module's initial memory already exceeds it or the binary is malformed. */
export function capMemory(wasm: Uint8Array, maxBytes: number): { ok: true; wasm: Uint8Array<ArrayBuffer> } | { ok: false; error: string } {
  if (wasm.length < 8 || wasm[0] !== 0 || wasm[1] !== 0x61 || wasm[2] !== 0x73 || wasm[3] !== 0x6d) {
    return { ok: false, error: "not a wasm binary (bad magic)" };
  }
  if (wasm[4] !== 1 || wasm[5] !== 0 || wasm[6] !== 0 || wasm[7] !== 0) {
    return { ok: false, error: "unsupported wasm binary version (components are not supported)" };
  }
  const capPages = Math.min(MAX_MEMORY32_PAGES, Math.floor(Math.max(0, maxBytes) / WASM_PAGE_BYTES));
  let pos = 8;
  while (pos < wasm.length) {
    const id = wasm[pos] as number;
    const size = readU32(wasm, pos + 1);
    if (size === undefined) return { ok: false, error: `malformed section header at byte ${pos}` };
    const start = size.next;
    const end = start + size.value;
    if (end > wasm.length) return { ok: false, error: `section at byte ${pos} runs past the end of the binary` };
    if (id === MEMORY_SECTION_ID) {
      const rewritten = rewriteMemorySection(wasm.subarray(start, end), capPages);
      if (!rewritten.ok) return rewritten;
      const header = [MEMORY_SECTION_ID, ...writeU32(rewritten.body.length)];
      const out = new Uint8Array(pos + header.length + rewritten.body.length + (wasm.length - end));
      out.set(wasm.subarray(0, pos), 0);
      out.set(header, pos);
      out.set(rewritten.body, pos + header.length);
      out.set(wasm.subarray(end), pos + header.length + rewritten.body.length);
      return { ok: true, wasm: out };
    }
    pos = end;
  }
  // No defined memory: nothing to cap (validation rejects modules without an exported memory).
  return { ok: true, wasm: new Uint8Array(wasm) };
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
