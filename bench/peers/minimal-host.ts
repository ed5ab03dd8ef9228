/**
 * The floor: the same module run with `new WebAssembly.Instance` + `_start` and
 * the least wasi_snapshot_preview1 host a command needs (stdio to a counter,
 * args, clocks, random). No isolation, no limits: what V8 alone costs.
 */
import { randomFillSync } from "node:crypto";

/** WASI errno values this host returns. */
const ERRNO_SUCCESS = 0;
const ERRNO_BADF = 8;
const ERRNO_NOSYS = 52;
/** WASI filetype of a character device, what stdio looks like to the guest. */
const FILETYPE_CHARACTER_DEVICE = 2;

/** Thrown by proc_exit to unwind the guest. */
class GuestExit {
  constructor(readonly code: number) {}
}

/** What one run produced. */
export interface MinimalRunResult {
  readonly exitCode: number;
  readonly stdoutBytes: number;
}

/** Runs a WASI preview1 command module once with a minimal host; stdout is counted, not kept. */
export function runMinimal(module: WebAssembly.Module, stdin: Uint8Array = new Uint8Array(0)): MinimalRunResult {
  let memory: WebAssembly.Memory | undefined;
  let stdoutBytes = 0;
  let stdinOffset = 0;
  const argv = [new TextEncoder().encode("main.wasm\0")];
  const view = (): DataView => new DataView(memory!.buffer);
  const host: Record<string, (...args: number[]) => number> = {
    args_sizes_get: (countPtr, sizePtr) => {
      view().setUint32(countPtr, argv.length, true);
      view().setUint32(
        sizePtr,
        argv.reduce((n, a) => n + a.length, 0),
        true,
      );
      return ERRNO_SUCCESS;
    },
    args_get: (ptrs, buf) => {
      let offset = buf;
      argv.forEach((arg, i) => {
        view().setUint32(ptrs + 4 * i, offset, true);
        new Uint8Array(memory!.buffer, offset, arg.length).set(arg);
        offset += arg.length;
      });
      return ERRNO_SUCCESS;
    },
    environ_sizes_get: (countPtr, sizePtr) => {
      view().setUint32(countPtr, 0, true);
      view().setUint32(sizePtr, 0, true);
      return ERRNO_SUCCESS;
    },
    environ_get: () => ERRNO_SUCCESS,
    fd_write: (fd, iovs, iovsLen, writtenPtr) => {
      if (fd !== 1 && fd !== 2) return ERRNO_BADF;
      const v = view();
      let written = 0;
      for (let i = 0; i < iovsLen; i++) written += v.getUint32(iovs + 8 * i + 4, true);
      if (fd === 1) stdoutBytes += written;
      v.setUint32(writtenPtr, written, true);
      return ERRNO_SUCCESS;
    },
    fd_read: (fd, iovs, iovsLen, readPtr) => {
      if (fd !== 0) return ERRNO_BADF;
      const v = view();
      let read = 0;
      for (let i = 0; i < iovsLen && stdinOffset < stdin.length; i++) {
        const ptr = v.getUint32(iovs + 8 * i, true);
        const len = v.getUint32(iovs + 8 * i + 4, true);
        const chunk = stdin.subarray(stdinOffset, stdinOffset + len);
        new Uint8Array(memory!.buffer, ptr, chunk.length).set(chunk);
        stdinOffset += chunk.length;
        read += chunk.length;
      }
      v.setUint32(readPtr, read, true);
      return ERRNO_SUCCESS;
    },
    fd_fdstat_get: (fd, statPtr) => {
      if (fd > 2) return ERRNO_BADF;
      const v = view();
      v.setUint8(statPtr, FILETYPE_CHARACTER_DEVICE);
      v.setUint16(statPtr + 2, 0, true);
      v.setBigUint64(statPtr + 8, 0n, true);
      v.setBigUint64(statPtr + 16, 0n, true);
      return ERRNO_SUCCESS;
    },
    fd_prestat_get: () => ERRNO_BADF,
    fd_close: () => ERRNO_SUCCESS,
    sched_yield: () => ERRNO_SUCCESS,
    random_get: (ptr, len) => {
      randomFillSync(new Uint8Array(memory!.buffer, ptr, len));
      return ERRNO_SUCCESS;
    },
    proc_exit: (code) => {
      throw new GuestExit(code);
    },
  };
  const clockTimeGet = (_id: number, _precision: bigint, timePtr: number): number => {
    view().setBigUint64(timePtr, process.hrtime.bigint(), true);
    return ERRNO_SUCCESS;
  };
  const imports: Record<string, WebAssembly.ImportValue> = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== "wasi_snapshot_preview1" || imp.kind !== "function") continue;
    imports[imp.name] = imp.name === "clock_time_get" ? clockTimeGet : (host[imp.name] ?? (() => ERRNO_NOSYS));
  }
  const instance = new WebAssembly.Instance(module, { wasi_snapshot_preview1: imports });
  memory = instance.exports["memory"] as WebAssembly.Memory;
  try {
    (instance.exports["_start"] as () => void)();
    return { exitCode: 0, stdoutBytes };
  } catch (e: unknown) {
    if (e instanceof GuestExit) return { exitCode: e.code, stdoutBytes };
    throw e;
  }
}
