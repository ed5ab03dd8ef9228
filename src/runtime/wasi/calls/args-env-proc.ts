/** args, environ, random, and the process calls: proc_exit, proc_raise, sched_yield. */
import { randomFillSync } from "node:crypto";
import { Errno } from "../abi.js";
import { ProcExit, type WasiContext } from "../context.js";
import type { Preview1Calls, Ptr } from "../types.js";

/** The calls of this family. */
export type ArgsEnvProcCalls = Pick<
  Preview1Calls,
  "args_get" | "args_sizes_get" | "environ_get" | "environ_sizes_get" | "random_get" | "proc_exit" | "proc_raise" | "sched_yield"
>;

/** randomFillSync refuses more than 2^31-1 bytes at once; guests ask for far less, but stay correct. */
const RANDOM_CHUNK_BYTES = 65_536;

/** NUL-terminated strings laid out as preview1's *_get calls return them. */
interface StringTable {
  readonly offsets: readonly number[];
  readonly bytes: Uint8Array;
}

function stringTable(strings: readonly string[]): StringTable {
  const encoder = new TextEncoder();
  const parts = strings.map((s) => encoder.encode(s));
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0));
  const offsets: number[] = [];
  let pos = 0;
  for (const p of parts) {
    offsets.push(pos);
    bytes.set(p, pos);
    pos += p.length + 1; // the NUL terminator is already 0
  }
  return { offsets, bytes };
}

/** args_*, environ_*, random_get and proc_*: exactly the request's argv and environment, nothing of the daemon's. */
export function argsEnvProcCalls(ctx: WasiContext): ArgsEnvProcCalls {
  const mem = ctx.mem;
  const argv = stringTable(ctx.options.args);
  const environ = stringTable(Array.from(ctx.options.env, ([k, v]) => `${k}=${v}`));
  const writeTable = (table: StringTable, ptrs: Ptr, buf: Ptr): number => {
    // Both areas are checked before either is written, so a fault leaves guest memory as it was.
    mem.check(ptrs, table.offsets.length * 4);
    mem.write(buf, table.bytes);
    for (let i = 0; i < table.offsets.length; i++) mem.setU32(ptrs + i * 4, buf + (table.offsets[i] as number));
    return Errno.SUCCESS;
  };
  const writeSizes = (table: StringTable, countOut: Ptr, sizeOut: Ptr): number => {
    mem.check(countOut, 4);
    mem.check(sizeOut, 4);
    mem.setU32(countOut, table.offsets.length);
    mem.setU32(sizeOut, table.bytes.length);
    return Errno.SUCCESS;
  };
  return {
    args_get: (ptrs, buf) => writeTable(argv, ptrs, buf),
    args_sizes_get: (countOut, sizeOut) => writeSizes(argv, countOut, sizeOut),
    environ_get: (ptrs, buf) => writeTable(environ, ptrs, buf),
    environ_sizes_get: (countOut, sizeOut) => writeSizes(environ, countOut, sizeOut),
    random_get: (buf, len) => {
      const u8 = mem.slice(buf, len);
      for (let off = 0; off < len; off += RANDOM_CHUNK_BYTES) randomFillSync(u8, off, Math.min(RANDOM_CHUNK_BYTES, len - off));
      return Errno.SUCCESS;
    },
    proc_exit: (code) => ctx.end(new ProcExit(code)),
    // Deliberately unsupported: a guest has no signals to raise.
    proc_raise: () => Errno.NOSYS,
    // One guest per thread: there is nobody to yield to.
    sched_yield: () => Errno.SUCCESS,
  };
}
