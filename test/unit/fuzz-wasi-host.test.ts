/**
 * Property-based fuzzing of our preview1 host: random sequences of preview1 calls with random, often
 * out-of-bounds arguments, made by a hand-assembled guest against real mounts on a temp dir. Whatever
 * the sequence, a call answers with an errno (or ends the run by proc_exit or the output cap): never a
 * host exception, never a host fd left open, never a byte read from or written to outside the mounts,
 * never a change to the read-only mount.
 */
import { expect } from "chai";
import fc from "fast-check";
import { createHash } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Errno } from "../../src/runtime/wasi/abi.js";
import { PREVIEW1_FUNCTIONS, type Preview1Function } from "../../src/runtime/wasi/functions.js";
import { WasiHost } from "../../src/runtime/wasi/host.js";
import type { WasiDenial, WasiRunResult } from "../../src/runtime/wasi/types.js";
import { I32, i32, I64, i64, scriptedGuest, type FuncImport, type ScriptedCall } from "../fixtures/hostile/wasm-builder.js";
import { openFdCount } from "../fixtures/wasi/guest.js";
import { fuzzParameters, fuzzTestTimeoutMs } from "../helpers/fuzz.js";

/** Guest memory: 2 pages. Everything the fuzzer points at is laid out below; the rest stays zero. */
const MEMORY_BYTES = 2 * 65_536;
/** The guest's path strings (placed once, read by path_* calls). */
const STRINGS_AT = 0x400;
/** iovec arrays into the I/O buffers. */
const IOVS_AT = 0x1000;
/** One iovec covering all of memory: the last call writes it to stdout, so the test sees every byte the guest held. */
const DUMP_IOV_AT = 0x1100;
/** poll_oneoff subscriptions that never block for long (the only input pointer poll_oneoff gets). */
const SUBS_AT = 0x1200;
/** Where calls write their results (fds, sizes, stats, events). */
const SCRATCH_AT = 0x2000;
const SCRATCH_BYTES = 0x2000;
/** Buffers read into, written from, and handed to readdir/readlink/random_get. */
const IO_AT = 0x4000;
const IO_BYTES = 0x8000;
/** Output cap of a fuzz run: room for many random writes to stdout plus the final memory dump. */
const FUZZ_MAX_OUTPUT_BYTES = 64 * 1024 * 1024;
/** Calls per generated sequence. */
const MAX_CALLS = 24;

const SUBSCRIPTION_BYTES = 48;
/** Number of prepared subscriptions at SUBS_AT. */
const SUBS_COUNT = 4;

/** Paths the guest may name: ordinary, escaping, absolute, odd, invalid UTF-8, too long. */
const PATHS: readonly (string | readonly number[])[] = [
  ".",
  "",
  "f.txt",
  "sub",
  "sub/g.txt",
  "sub/",
  "new.txt",
  "newdir",
  "newdir/x",
  "sub/../f.txt",
  "./././f.txt",
  "..",
  "../",
  "../outside",
  "sub/../..",
  "up/secret.txt",
  "up",
  "abs",
  "abs/passwd",
  "loop",
  "dangling",
  "/",
  "/etc/passwd",
  "//",
  "f.txt/",
  "f.txt\0../x",
  "a".repeat(300),
  "x/".repeat(200),
  "sub/g.txt/..",
  [0xff, 0xfe],
  [0xc0, 0xaf],
  [0xed, 0xa0, 0x80],
  [0x2e, 0x2e, 0xc0, 0xaf, 0x2e, 0x2e],
];

/** Where each path string lives in guest memory, and its length. */
const PATH_SLOTS: readonly { ptr: number; len: number; bytes: readonly number[] }[] = (() => {
  let at = STRINGS_AT;
  return PATHS.map((p) => {
    const bytes = typeof p === "string" ? [...Buffer.from(p, "utf8")] : [...p];
    const slot = { ptr: at, len: bytes.length, bytes };
    at += bytes.length + 1;
    return slot;
  });
})();
if (PATH_SLOTS[PATH_SLOTS.length - 1]!.ptr + 700 > IOVS_AT) throw new Error("the path strings overlap the iovecs");

function le32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}
function le64(n: bigint): number[] {
  return [...le32(Number(n & 0xffffffffn)), ...le32(Number((n >> 32n) & 0xffffffffn))];
}

/** iovec arrays: ordinary ones, an empty one, one crossing the end of memory, one far outside it. */
const IOV_ARRAYS: readonly (readonly [number, number])[][] = [
  [[IO_AT, 64]],
  [
    [IO_AT, 16],
    [IO_AT + 0x1000, 4096],
    [IO_AT + 0x3000, 0],
  ],
  [[IO_AT, 0]],
  [[MEMORY_BYTES - 16, 64]],
  [[0xfffffff0, 16]],
  [[IO_AT, 0x7fffffff]],
];
const IOV_SLOTS: readonly { ptr: number; count: number }[] = (() => {
  let at = IOVS_AT;
  return IOV_ARRAYS.map((list) => {
    const slot = { ptr: at, count: list.length };
    at += list.length * 8;
    return slot;
  });
})();

/** Subscriptions: a 1 µs monotonic clock, stdin readable, stdout writable, an absolute realtime clock long past. */
function subscriptionBytes(): number[] {
  const sub = (userdata: bigint, tag: number, word16: number, timeout: bigint, flags: number): number[] => {
    const b = new Array<number>(SUBSCRIPTION_BYTES).fill(0);
    b.splice(0, 8, ...le64(userdata));
    b[8] = tag;
    b.splice(16, 4, ...le32(word16));
    b.splice(24, 8, ...le64(timeout));
    b.splice(40, 2, flags & 0xff, flags >> 8);
    return b;
  };
  return [...sub(1n, 0, 1, 1_000n, 0), ...sub(2n, 1, 0, 0n, 0), ...sub(3n, 2, 1, 0n, 0), ...sub(4n, 0, 0, 1n, 1)];
}

/** Everything placed in guest memory before `_start`. */
const DATA: { offset: number; bytes: number[] }[] = [
  ...PATH_SLOTS.map((s) => ({ offset: s.ptr, bytes: [...s.bytes] })),
  ...IOV_ARRAYS.map((list, i) => ({ offset: IOV_SLOTS[i]!.ptr, bytes: list.flatMap(([p, l]) => [...le32(p), ...le32(l)]) })),
  { offset: DUMP_IOV_AT, bytes: [...le32(0), ...le32(MEMORY_BYTES)] },
  { offset: SUBS_AT, bytes: subscriptionBytes() },
  { offset: IO_AT, bytes: [...Buffer.from("bytes a guest may write into files\n")] },
];

// ---- arbitraries of arguments, by the role they play ------------------------------------------------

const u32 = fc.integer({ min: 0, max: 0xffffffff });
/** Descriptors: mostly the preopens (3 = /ro, 4 = /rw) and what opens return next, then stdio, then nonsense. */
const fdArb = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(3, 4) },
  { weight: 4, arbitrary: fc.integer({ min: 5, max: 8 }) },
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 2 }) },
  { weight: 1, arbitrary: fc.constantFrom(-1, 9, 255, 1024, 0x7fffffff) },
  { weight: 1, arbitrary: u32 },
);
/** Output pointers: the scratch area (aligned or not), the last bytes of memory, and far outside it. */
const outArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: SCRATCH_BYTES / 8 - 8 }).map((k) => SCRATCH_AT + k * 8) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }).map((k) => SCRATCH_AT + 1 + k) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      MEMORY_BYTES - 1,
      MEMORY_BYTES - 4,
      MEMORY_BYTES - 8,
      MEMORY_BYTES - 20,
      MEMORY_BYTES,
      0xffffffff,
      0x80000000,
    ),
  },
  { weight: 1, arbitrary: u32.filter((n) => n >= MEMORY_BYTES) },
);
/** Small flag words and bit masks, and any u32. */
const flagsArb = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 0x3f }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
  { weight: 1, arbitrary: u32 },
);
/** 64-bit values: sizes, offsets, cookies, timestamps, rights; small ones mostly. */
const u64Arb = fc.oneof(
  { weight: 4, arbitrary: fc.bigInt({ min: 0n, max: 4096n }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(0n, 1n, (1n << 29n) - 1n, (1n << 31n) - 1n, 1n << 32n, (1n << 63n) - 1n, 1n << 63n, (1n << 64n) - 1n),
  },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
);
/** A (pointer, length) of a path string, or nonsense. */
const pathArb = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...PATH_SLOTS).map((s) => [s.ptr, s.len] as const) },
  {
    weight: 1,
    arbitrary: fc.tuple(fc.constantFrom(...PATH_SLOTS), fc.integer({ min: 0, max: 5000 })).map(([s, len]) => [s.ptr, len] as const),
  },
  { weight: 1, arbitrary: fc.tuple(u32, u32) },
);
/** A (pointer, count) of an iovec array, or nonsense. */
const iovsArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...IOV_SLOTS).map((s) => [s.ptr, s.count] as const) },
  {
    weight: 1,
    arbitrary: fc.tuple(fc.constantFrom(...IOV_SLOTS), fc.constantFrom(0, 0x20000000, 0xffffffff)).map(([s, n]) => [s.ptr, n] as const),
  },
  { weight: 1, arbitrary: fc.tuple(u32, u32) },
);
/** A (pointer, length) of a buffer the host writes into. */
const bufArb = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(fc.integer({ min: 0, max: IO_BYTES - 0x2000 }), fc.integer({ min: 0, max: 0x2000 }))
      .map(([o, l]) => [IO_AT + o, l] as const),
  },
  { weight: 1, arbitrary: fc.constantFrom([MEMORY_BYTES - 8, 64] as const, [IO_AT, 0xffffffff] as const, [0xffffff00, 16] as const) },
  { weight: 1, arbitrary: fc.tuple(u32, u32) },
);
/** poll_oneoff's (in, out, nsubs): the prepared subscriptions only (a random one could sleep for years), or out of bounds. */
const pollArb = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.constant(SUBS_AT), outArb, fc.integer({ min: 0, max: SUBS_COUNT })) },
  { weight: 1, arbitrary: fc.tuple(fc.constant(SUBS_AT), outArb, fc.constantFrom(0x10000000, 0xffffffff)) },
  {
    weight: 1,
    arbitrary: fc.tuple(
      u32.filter((n) => n >= MEMORY_BYTES),
      outArb,
      fc.integer({ min: 1, max: SUBS_COUNT }),
    ),
  },
);

type Arg = number | bigint;
type Role = "fd" | "out" | "flags" | "u64" | "path" | "iovs" | "buf" | "poll";

/** The arguments of every preview1 function, by role (path/iovs/buf take two i32s, poll three). */
const SIGNATURES: Readonly<Record<Preview1Function, readonly Role[]>> = {
  args_get: ["out", "out"],
  args_sizes_get: ["out", "out"],
  environ_get: ["out", "out"],
  environ_sizes_get: ["out", "out"],
  clock_res_get: ["flags", "out"],
  clock_time_get: ["flags", "u64", "out"],
  fd_advise: ["fd", "u64", "u64", "flags"],
  fd_allocate: ["fd", "u64", "u64"],
  fd_close: ["fd"],
  fd_datasync: ["fd"],
  fd_fdstat_get: ["fd", "out"],
  fd_fdstat_set_flags: ["fd", "flags"],
  fd_fdstat_set_rights: ["fd", "u64", "u64"],
  fd_filestat_get: ["fd", "out"],
  fd_filestat_set_size: ["fd", "u64"],
  fd_filestat_set_times: ["fd", "u64", "u64", "flags"],
  fd_pread: ["fd", "iovs", "u64", "out"],
  fd_prestat_get: ["fd", "out"],
  fd_prestat_dir_name: ["fd", "buf"],
  fd_pwrite: ["fd", "iovs", "u64", "out"],
  fd_read: ["fd", "iovs", "out"],
  fd_readdir: ["fd", "buf", "u64", "out"],
  fd_renumber: ["fd", "fd"],
  fd_seek: ["fd", "u64", "flags", "out"],
  fd_sync: ["fd"],
  fd_tell: ["fd", "out"],
  fd_write: ["fd", "iovs", "out"],
  path_create_directory: ["fd", "path"],
  path_filestat_get: ["fd", "flags", "path", "out"],
  path_filestat_set_times: ["fd", "flags", "path", "u64", "u64", "flags"],
  path_link: ["fd", "flags", "path", "fd", "path"],
  path_open: ["fd", "flags", "path", "flags", "u64", "u64", "flags", "out"],
  path_readlink: ["fd", "path", "buf", "out"],
  path_remove_directory: ["fd", "path"],
  path_rename: ["fd", "path", "fd", "path"],
  path_symlink: ["path", "fd", "path"],
  path_unlink_file: ["fd", "path"],
  poll_oneoff: ["poll", "out"],
  proc_exit: ["flags"],
  proc_raise: ["flags"],
  sched_yield: [],
  random_get: ["buf"],
  sock_accept: ["fd", "flags", "out"],
  sock_recv: ["fd", "iovs", "flags", "out", "out"],
  sock_send: ["fd", "iovs", "flags", "out"],
  sock_shutdown: ["fd", "flags"],
};

const ROLE_ARBS: Record<Role, fc.Arbitrary<readonly Arg[]>> = {
  fd: fdArb.map((v) => [v]),
  out: outArb.map((v) => [v]),
  flags: flagsArb.map((v) => [v]),
  u64: u64Arb.map((v) => [v]),
  path: pathArb,
  iovs: iovsArb,
  buf: bufArb,
  poll: pollArb,
};

/** One generated call: the function and its flat argument list. */
interface FuzzCall {
  readonly fn: Preview1Function;
  readonly args: readonly Arg[];
}

/** How often each function is called relative to the others: opens (which make fds to use) and I/O more, proc_exit (which ends the run) less. */
const CALL_WEIGHTS: Partial<Record<Preview1Function, number>> = {
  path_open: 8,
  fd_read: 3,
  fd_write: 3,
  fd_pread: 2,
  fd_pwrite: 2,
  fd_readdir: 2,
  fd_seek: 2,
  path_create_directory: 2,
  path_rename: 2,
  path_link: 2,
  path_symlink: 2,
  path_unlink_file: 2,
  fd_close: 0.5,
  fd_renumber: 0.5,
  proc_exit: 0.2,
};
/** Default weight of a function not listed in CALL_WEIGHTS. */
const DEFAULT_CALL_WEIGHT = 1;

const callArb: fc.Arbitrary<FuzzCall> = fc
  .oneof(
    ...PREVIEW1_FUNCTIONS.map((fn) => ({ weight: Math.round((CALL_WEIGHTS[fn] ?? DEFAULT_CALL_WEIGHT) * 5), arbitrary: fc.constant(fn) })),
  )
  .chain((fn) => fc.tuple(...SIGNATURES[fn].map((r) => ROLE_ARBS[r])).map((parts) => ({ fn, args: parts.flat() })));

/**
 * Imports of the guest: fd_write first (scriptedGuest prints its errnos with import 0), then every function.
 * proc_exit is imported as returning an i32 (scriptedGuest stores every call's result; it never returns, and
 * a JS import takes whatever signature the module declares).
 */
const IMPORTS: readonly FuncImport[] = (["fd_write", ...PREVIEW1_FUNCTIONS] as const).map((name) => ({
  name,
  params: SIGNATURES[name].flatMap((r) =>
    r === "u64" ? [I64] : r === "path" || r === "iovs" || r === "buf" ? [I32, I32] : r === "poll" ? [I32, I32, I32] : [I32],
  ),
  results: [I32],
}));

/** The guest making `calls`, then writing all of its memory to stdout, then its errnos. */
function guestFor(calls: readonly FuzzCall[]): WebAssembly.Module {
  const scripted = calls.map((c): ScriptedCall => {
    const imp = 1 + PREVIEW1_FUNCTIONS.indexOf(c.fn);
    const params = IMPORTS[imp]!.params;
    return { imp, args: c.args.flatMap((a, k) => (params[k] === I64 ? i64(BigInt(a)) : i32(Number(a)))) };
  });
  const dump: ScriptedCall = { imp: 0, args: [...i32(1), ...i32(DUMP_IOV_AT), ...i32(1), ...i32(SCRATCH_AT)] };
  return new WebAssembly.Module(scriptedGuest(IMPORTS, [...scripted, dump], DATA));
}

// ---- the world of one run -------------------------------------------------------------------------

/** A fresh tree per run: the mounts, and outside them a file whose content no guest may ever see. */
interface Tree {
  readonly root: string;
  readonly ro: string;
  readonly rw: string;
  readonly outside: string;
  /** Random text only the outside files contain (not in any path string the guest has). */
  readonly token: string;
}

/**
 * Where the trees go: a RAM-backed temp dir when there is one, where the fsyncs the guests ask for cost
 * nothing, so the time budget buys more sequences (the host's logic does not depend on the filesystem).
 */
const TREE_PARENT = existsSync("/dev/shm") ? "/dev/shm" : tmpdir();

function makeTree(): Tree {
  const root = mkdtempSync(join(TREE_PARENT, "sandboxd-fuzz-host-"));
  const token = `OUTSIDE-${createHash("sha256").update(root).digest("hex").slice(0, 16)}`;
  const tree: Tree = { root, ro: join(root, "ro"), rw: join(root, "rw"), outside: join(root, "outside"), token };
  mkdirSync(join(tree.outside, "dir"), { recursive: true });
  writeFileSync(join(tree.outside, "secret.txt"), token);
  writeFileSync(join(tree.outside, `marker-${token}.txt`), token);
  for (const mount of [tree.ro, tree.rw]) {
    mkdirSync(join(mount, "sub"), { recursive: true });
    writeFileSync(join(mount, "f.txt"), "inside the mount\n");
    writeFileSync(join(mount, "sub", "g.txt"), "nested\n");
    symlinkSync("../outside", join(mount, "up"));
    symlinkSync("/etc", join(mount, "abs"));
    symlinkSync("loop", join(mount, "loop"));
    symlinkSync("nowhere", join(mount, "dangling"));
  }
  return tree;
}

/** Names, types, modes, sizes, times, link counts, contents and link targets of everything under `dir`. */
function treeHash(dir: string): string {
  const hash = createHash("sha256");
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const full = join(d, name);
      const st = lstatSync(full);
      hash.update(`${full}\0${st.mode}\0${st.size}\0${st.mtimeMs}\0${st.ctimeMs}\0${st.nlink}\0`);
      if (st.isSymbolicLink()) hash.update(readlinkSync(full));
      else if (st.isFile()) hash.update(readFileSync(full));
      else if (st.isDirectory()) walk(full);
    }
  };
  const st = lstatSync(dir);
  hash.update(`${st.mode}\0${st.mtimeMs}\0${st.ctimeMs}\0`);
  walk(dir);
  return hash.digest("hex");
}

/** What one fuzz run produced. */
interface FuzzRun {
  readonly result: WasiRunResult;
  readonly output: Buffer;
  readonly denials: WasiDenial[];
  readonly ms: number;
}

function runCalls(tree: Tree, calls: readonly FuzzCall[]): FuzzRun {
  const chunks: Buffer[] = [];
  const denials: WasiDenial[] = [];
  const host = new WasiHost({
    args: ["fuzz.wasm", "arg"],
    env: new Map([["KEY", "value"]]),
    stdin: Buffer.from("stdin of the fuzz guest"),
    mounts: [
      { hostPath: tree.ro, guestPath: "/ro", writable: false },
      { hostPath: tree.rw, guestPath: "/rw", writable: true },
    ],
    memoryLimitBytes: MEMORY_BYTES,
    maxOutputBytes: FUZZ_MAX_OUTPUT_BYTES,
    onStdout: (b) => chunks.push(Buffer.from(b)),
    onStderr: (b) => chunks.push(Buffer.from(b)),
    onDenial: (d) => denials.push(d),
  });
  const started = performance.now();
  const result = host.run(guestFor(calls));
  return { result, output: Buffer.concat(chunks), denials, ms: performance.now() - started };
}

/** Longest a run of MAX_CALLS calls may take: nothing a guest asks for here may block the worker for long. */
const MAX_RUN_MS = 2_000;

/** Every invariant of one run; throws (with what broke) when one does not hold. */
function checkRun(calls: readonly FuzzCall[]): void {
  const tree = makeTree();
  try {
    const roBefore = treeHash(tree.ro);
    const outsideBefore = treeHash(tree.outside);
    const fdsBefore = openFdCount();
    const run = runCalls(tree, calls);
    expect(["exited", "output_limit"], `the host failed instead of answering with an errno: ${JSON.stringify(run.result)}`).to.include(
      run.result.outcome,
    );
    expect(openFdCount(), "host fds left open after the run").to.equal(fdsBefore);
    expect(treeHash(tree.ro), "the read-only mount changed").to.equal(roBefore);
    expect(treeHash(tree.outside), "something outside the mounts changed").to.equal(outsideBefore);
    expect(run.output.includes(tree.token), "the guest got bytes from outside the mounts").to.equal(false);
    for (const d of run.denials) expect(d.path, "a denial without a guest path").to.be.a("string");
    expect(run.ms, "a run blocked the host").to.be.below(MAX_RUN_MS);
  } finally {
    rmSync(tree.root, { recursive: true, force: true });
  }
}

/** Shown when a property fails: the calls, readable. */
function describeCalls(calls: readonly FuzzCall[]): string {
  return calls.map((c) => `${c.fn}(${c.args.map((a) => (typeof a === "bigint" ? `${a}n` : a)).join(", ")})`).join("; ");
}

describe("fuzz: random preview1 call sequences against the host with real mounts", function () {
  this.timeout(fuzzTestTimeoutMs());

  it("every call ends in an errno, proc_exit or the output cap; no host exception, no escape, no change to /ro", () => {
    fc.assert(
      fc.property(fc.array(callArb, { minLength: 1, maxLength: MAX_CALLS }), (calls) => {
        try {
          checkRun(calls);
        } catch (e: unknown) {
          throw new Error(`${e instanceof Error ? e.message : String(e)}\n  calls: ${describeCalls(calls)}`);
        }
      }),
      fuzzParameters(),
    );
  });
});

/** A fixed sequence run like the fuzzer runs them: how it ended, each call's errno, and guest memory at the end. */
function errnosOf(calls: readonly FuzzCall[]): { result: WasiRunResult; errnos: number[]; memory: Buffer } {
  const tree = makeTree();
  try {
    const run = runCalls(tree, calls);
    // The output ends with the memory dump, then one errno per call and one for the dump itself.
    const errnosAt = run.output.length - 4 * (calls.length + 1);
    const errnos = calls.map((_, i) => (errnosAt >= 0 ? run.output.readUInt32LE(errnosAt + i * 4) : -1));
    return { result: run.result, errnos, memory: run.output.subarray(Math.max(0, errnosAt - MEMORY_BYTES), Math.max(0, errnosAt)) };
  } finally {
    rmSync(tree.root, { recursive: true, force: true });
  }
}

describe("fuzz findings, kept as regression tests", function () {
  const { FAULT, SUCCESS } = Errno;
  const OUT = SCRATCH_AT;
  const fTxt = PATH_SLOTS[PATHS.indexOf("f.txt")]!;
  const iov = IOV_SLOTS[0]!;
  const ALL_RIGHTS = (1n << 29n) - 1n;

  for (const past of [MEMORY_BYTES - 1, MEMORY_BYTES, 0xffffffff]) {
    it(`regression: a result pointer past the end of memory (${past}) is EFAULT, not a trap that ends the run`, () => {
      const open = (out: number): FuzzCall => ({ fn: "path_open", args: [4, 0, fTxt.ptr, fTxt.len, 0, ALL_RIGHTS, ALL_RIGHTS, 0, out] });
      const calls: FuzzCall[] = [
        { fn: "args_sizes_get", args: [past, OUT] },
        { fn: "args_sizes_get", args: [OUT, past] },
        { fn: "environ_sizes_get", args: [past, OUT] },
        { fn: "clock_res_get", args: [1, past] },
        { fn: "clock_time_get", args: [1, 0n, past] },
        { fn: "fd_fdstat_get", args: [1, past] },
        { fn: "fd_fdstat_get", args: [3, past] },
        { fn: "fd_filestat_get", args: [1, past] },
        { fn: "fd_filestat_get", args: [3, past] },
        { fn: "fd_prestat_get", args: [3, past] },
        { fn: "fd_write", args: [2, iov.ptr, iov.count, past] },
        { fn: "fd_read", args: [0, iov.ptr, iov.count, past] },
        { fn: "path_filestat_get", args: [3, 0, fTxt.ptr, fTxt.len, past] },
        { fn: "fd_readdir", args: [3, IO_AT, 256, 0n, past] },
        { fn: "poll_oneoff", args: [SUBS_AT, OUT, 1, past] },
        open(past), // opens nothing: the pointer is checked before the file is opened
        open(OUT), // fd 5
        { fn: "fd_tell", args: [5, past] },
        { fn: "fd_seek", args: [5, 0n, 0, past] },
        { fn: "fd_write", args: [5, iov.ptr, iov.count, past] },
        { fn: "fd_pread", args: [5, iov.ptr, iov.count, 0n, past] },
        { fn: "fd_close", args: [5] },
      ];
      const { result, errnos } = errnosOf(calls);
      expect(result, "the run must go on to its end").to.deep.equal({ outcome: "exited", exitCode: 0 });
      expect(errnos).to.deep.equal(calls.map((c) => (c.args.includes(past) ? FAULT : SUCCESS)));
    });
  }

  it("regression: path_open with its result pointer outside memory opens and creates nothing (it left an fd the guest could never learn of, and the file)", () => {
    const newTxt = PATH_SLOTS[PATHS.indexOf("new.txt")]!;
    const CREAT = 1;
    const { result, errnos, memory } = errnosOf([
      { fn: "path_open", args: [4, 0, newTxt.ptr, newTxt.len, CREAT, ALL_RIGHTS, ALL_RIGHTS, 0, MEMORY_BYTES] },
      { fn: "path_open", args: [4, 0, fTxt.ptr, fTxt.len, 0, ALL_RIGHTS, ALL_RIGHTS, 0, OUT] },
      { fn: "path_filestat_get", args: [4, 0, newTxt.ptr, newTxt.len, OUT + 64] },
    ]);
    expect(result).to.deep.equal({ outcome: "exited", exitCode: 0 });
    expect(errnos).to.deep.equal([FAULT, SUCCESS, Errno.NOENT]);
    expect(memory.readUInt32LE(OUT), "the next open gets the lowest free fd").to.equal(5);
  });

  it("regression: fd_read of stdin with its count pointer outside memory consumes no input", () => {
    const { result, errnos, memory } = errnosOf([
      { fn: "fd_read", args: [0, iov.ptr, iov.count, MEMORY_BYTES] },
      { fn: "fd_read", args: [0, iov.ptr, iov.count, OUT] },
    ]);
    expect(result).to.deep.equal({ outcome: "exited", exitCode: 0 });
    expect(errnos).to.deep.equal([FAULT, SUCCESS]);
    expect(memory.readUInt32LE(OUT)).to.equal("stdin of the fuzz guest".length);
  });

  it("regression: fd_write to stdout with its count pointer outside memory writes nothing", () => {
    const calls: FuzzCall[] = [
      { fn: "fd_write", args: [1, iov.ptr, iov.count, MEMORY_BYTES] },
      { fn: "fd_fdstat_get", args: [1, OUT] },
    ];
    const { result, errnos } = errnosOf(calls);
    expect(result).to.deep.equal({ outcome: "exited", exitCode: 0 });
    expect(errnos).to.deep.equal([FAULT, SUCCESS]);
    const tree = makeTree();
    try {
      // Only the final memory dump and the errnos (one per call, one for the dump) reach stdout.
      expect(runCalls(tree, calls).output.length).to.equal(MEMORY_BYTES + 4 * (calls.length + 1));
    } finally {
      rmSync(tree.root, { recursive: true, force: true });
    }
  });

  it("regression: path_readlink with a buffer length of 2^31 or more reports the bytes it wrote, not 2^32-1", () => {
    const up = PATH_SLOTS[PATHS.indexOf("up")]!;
    const { result, errnos, memory } = errnosOf([{ fn: "path_readlink", args: [4, up.ptr, up.len, IO_AT, 0xffffffff, OUT] }]);
    expect(result).to.deep.equal({ outcome: "exited", exitCode: 0 });
    expect(errnos).to.deep.equal([SUCCESS]);
    expect(memory.readUInt32LE(OUT)).to.equal("../outside".length);
    expect(memory.subarray(IO_AT, IO_AT + 10).toString()).to.equal("../outside");
  });
});
