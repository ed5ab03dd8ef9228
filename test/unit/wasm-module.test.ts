import { expect } from "chai";
import {
  capMemory,
  importMemory,
  MEMORY_IMPORT_MODULE,
  MEMORY_IMPORT_NAME,
  memoryForRun,
  WASM_PAGE_BYTES,
} from "../../src/runtime/wasm/memory-cap.js";
import { validateCommandModule } from "../../src/runtime/wasm/validate.js";
import { HTTP_FUNCTIONS, HTTP_MODULE } from "../../src/runtime/net/http-abi.js";
import { buildModule as buildGuest, call, DROP, I32, I64, i32, WASI, type FuncImport } from "../fixtures/hostile/wasm-builder.js";

/** Hand-assembled modules, so each test controls exactly the section it is about. */
function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}
function str(s: string): number[] {
  const b = [...new TextEncoder().encode(s)];
  return [...leb(b.length), ...b];
}
function section(id: number, body: number[]): number[] {
  return [id, ...leb(body.length), ...body];
}
const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

interface Shape {
  readonly memory?: { min: number; max?: number };
  readonly imports?: { module: string; name: string }[];
  readonly exportStart?: boolean;
  readonly exportMemory?: boolean;
}

/** A module with a `() -> ()` type, the given function imports, one local function, optional memory and exports. */
function buildModule(shape: Shape): Uint8Array<ArrayBuffer> {
  const imports = shape.imports ?? [];
  const bytes = [...HEADER, ...section(1, [1, 0x60, 0, 0])];
  if (imports.length > 0) {
    bytes.push(...section(2, [...leb(imports.length), ...imports.flatMap((i) => [...str(i.module), ...str(i.name), 0x00, 0])]));
  }
  bytes.push(...section(3, [1, 0]));
  if (shape.memory !== undefined) {
    const { min, max } = shape.memory;
    bytes.push(...section(5, [1, ...(max === undefined ? [0, ...leb(min)] : [1, ...leb(min), ...leb(max)])]));
  }
  const exports: number[][] = [];
  if (shape.exportStart ?? true) exports.push([...str("_start"), 0x00, ...leb(imports.length)]);
  if ((shape.exportMemory ?? true) && shape.memory !== undefined) exports.push([...str("memory"), 0x02, 0]);
  bytes.push(...section(7, [...leb(exports.length), ...exports.flat()]));
  bytes.push(...section(10, [1, 2, 0, 0x0b]));
  return Uint8Array.from(bytes);
}

function maxPagesAfterGrowth(wasm: Uint8Array<ArrayBuffer>): number {
  const instance = new WebAssembly.Instance(new WebAssembly.Module(wasm), {
    wasi_snapshot_preview1: { fd_write: () => 0 },
  });
  const memory = instance.exports["memory"] as WebAssembly.Memory;
  // Grow one page at a time until the engine refuses: that is the effective maximum.
  for (;;) {
    try {
      memory.grow(1);
    } catch {
      return memory.buffer.byteLength / WASM_PAGE_BYTES;
    }
  }
}

describe("wasm: capMemory", () => {
  it("adds a maximum to a memory that had none", () => {
    const r = capMemory(buildModule({ memory: { min: 1 } }), 4 * WASM_PAGE_BYTES);
    expect(r.ok).to.equal(true);
    if (r.ok) expect(maxPagesAfterGrowth(r.wasm)).to.equal(4);
  });

  it("lowers a larger maximum and keeps a smaller one", () => {
    const lowered = capMemory(buildModule({ memory: { min: 1, max: 1000 } }), 3 * WASM_PAGE_BYTES);
    if (!lowered.ok) throw new Error(lowered.error);
    expect(maxPagesAfterGrowth(lowered.wasm)).to.equal(3);
    const kept = capMemory(buildModule({ memory: { min: 1, max: 2 } }), 10 * WASM_PAGE_BYTES);
    if (!kept.ok) throw new Error(kept.error);
    expect(maxPagesAfterGrowth(kept.wasm)).to.equal(2);
  });

  it("rounds the limit down to whole pages", () => {
    const r = capMemory(buildModule({ memory: { min: 1 } }), 2 * WASM_PAGE_BYTES + 100);
    if (!r.ok) throw new Error(r.error);
    expect(maxPagesAfterGrowth(r.wasm)).to.equal(2);
  });

  it("returns an error when the initial memory already exceeds the limit", () => {
    const r = capMemory(buildModule({ memory: { min: 10 } }), 4 * WASM_PAGE_BYTES);
    expect(r).to.deep.equal({
      ok: false,
      error: `the module's initial memory (${10 * WASM_PAGE_BYTES} bytes) exceeds the memory limit (${4 * WASM_PAGE_BYTES} bytes)`,
    });
  });

  it("returns errors for malformed binaries instead of throwing", () => {
    expect(capMemory(Uint8Array.from([1, 2, 3]), 1 << 20).ok).to.equal(false);
    const truncated = buildModule({ memory: { min: 1 } }).slice(0, 20);
    expect(capMemory(truncated, 1 << 20).ok).to.equal(false);
  });
});

describe("wasm: validateCommandModule", () => {
  const validate = (shape: Shape): string[] => {
    const wasm = buildModule(shape);
    return validateCommandModule(new WebAssembly.Module(wasm), wasm);
  };
  const validateGuest = (imports: FuncImport[]): string[] => {
    const wasm = buildGuest({ imports, memory: { min: 1 }, funcs: [{ params: [], results: [], body: [] }] });
    return validateCommandModule(new WebAssembly.Module(wasm), wasm);
  };
  const http = (name: string, params: number[], results: number[]): FuncImport => ({ module: HTTP_MODULE, name, params, results });

  it("accepts a command with _start, memory and preview1 function imports", () => {
    expect(validate({ memory: { min: 1 }, imports: [{ module: "wasi_snapshot_preview1", name: "fd_write" }] })).to.deep.equal([]);
  });

  it("reports a missing _start and a missing memory export", () => {
    const problems = validate({ exportStart: false });
    expect(problems).to.have.length(2);
    expect(problems[0]).to.match(/_start/);
    expect(problems[1]).to.match(/memory/);
  });

  it("reports imports from other modules and names preview1 does not have", () => {
    const problems = validate({
      memory: { min: 1 },
      imports: [
        { module: "env", name: "f" },
        { module: "wasi_snapshot_preview1", name: "no_such_call" },
      ],
    });
    expect(problems).to.deep.equal([
      `import env.f: only wasi_snapshot_preview1 and ${HTTP_MODULE} imports are provided`,
      "import wasi_snapshot_preview1.no_such_call: not a wasi_snapshot_preview1 function",
    ]);
  });

  it(`accepts exactly the ${HTTP_MODULE} functions, with exactly their signatures`, () => {
    const exact = Object.entries(HTTP_FUNCTIONS).map(([name, t]) => http(name, [...t.params], [...t.results]));
    expect(validateGuest([WASI.fd_write, ...exact])).to.deep.equal([]);
  });

  it(`refuses a ${HTTP_MODULE} name it does not have`, () => {
    expect(validateGuest([http("connect", [I32], [I32])])).to.deep.equal([
      `import ${HTTP_MODULE}.connect: not a ${HTTP_MODULE} function (it has request, read)`,
    ]);
  });

  it(`refuses a ${HTTP_MODULE} function imported with another signature`, () => {
    expect(validateGuest([http("request", [I32, I32, I32, I32, I64], [I32]), http("read", [I32, I32, I32, I32, I32], [])])).to.deep.equal([
      `import ${HTTP_MODULE}.request: its type is (i32, i32, i32, i32, i64) -> (i32), not (i32, i32, i32, i32, i32) -> (i32)`,
      `import ${HTTP_MODULE}.read: its type is (i32, i32, i32, i32, i32) -> (), not (i32, i32, i32, i32, i32) -> (i32)`,
    ]);
  });
});

describe("wasm: importMemory", () => {
  function run(wasm: Uint8Array, memory: { initial: number; maximum: number }): WebAssembly.Instance {
    const provided = new WebAssembly.Memory(memory);
    const instance = new WebAssembly.Instance(new WebAssembly.Module(wasm as Uint8Array<ArrayBuffer>), {
      [MEMORY_IMPORT_MODULE]: { [MEMORY_IMPORT_NAME]: provided },
      wasi_snapshot_preview1: { fd_write: () => 0 },
    });
    expect(instance.exports["memory"]).to.equal(provided);
    return instance;
  }

  it("turns the defined memory into an import with the same limits, in a module without imports", () => {
    const r = importMemory(
      buildGuest({ memory: { min: 2, max: 40 }, data: [{ offset: 70_000, bytes: [9] }], funcs: [{ params: [], results: [], body: [] }] }),
    );
    if (!r.ok) throw new Error(r.error);
    expect(r.memory).to.deep.equal({ initialPages: 2, maximumPages: 40 });
    const instance = run(r.wasm, { initial: 2, maximum: 3 });
    // The data segment landed in the memory the run supplied.
    expect(new Uint8Array((instance.exports["memory"] as WebAssembly.Memory).buffer)[70_000]).to.equal(9);
  });

  it("appends to an existing import section without moving function indices", () => {
    const wasm = buildGuest({
      imports: [WASI.fd_write],
      memory: { min: 1 },
      funcs: [{ params: [], results: [], body: [...i32(1), ...i32(0), ...i32(0), ...i32(0), ...call(0), ...DROP] }],
    });
    const r = importMemory(wasm);
    if (!r.ok) throw new Error(r.error);
    expect(r.memory).to.deep.equal({ initialPages: 1, maximumPages: undefined });
    const instance = run(r.wasm, { initial: 1, maximum: 5 });
    (instance.exports["_start"] as () => void)();
    expect(WebAssembly.Module.imports(new WebAssembly.Module(r.wasm)).map((i) => `${i.module}.${i.name}:${i.kind}`)).to.deep.equal([
      "wasi_snapshot_preview1.fd_write:function",
      `${MEMORY_IMPORT_MODULE}.${MEMORY_IMPORT_NAME}:memory`,
    ]);
  });

  it("a run's maximum is the smaller of the module's and the limit's, and growth stops there", () => {
    expect(memoryForRun({ initialPages: 1, maximumPages: undefined }, 4 * WASM_PAGE_BYTES + 100)).to.deep.equal({ initial: 1, maximum: 4 });
    expect(memoryForRun({ initialPages: 1, maximumPages: 2 }, 10 * WASM_PAGE_BYTES)).to.deep.equal({ initial: 1, maximum: 2 });
    expect(memoryForRun({ initialPages: 10, maximumPages: undefined }, 4 * WASM_PAGE_BYTES)).to.equal(undefined);
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 4 });
    expect(() => memory.grow(4)).to.throw(RangeError);
  });

  it("says whether the module has a wasm start function (which runs when it is instantiated)", () => {
    const wasm = buildGuest({
      memory: { min: 1 },
      funcs: [
        { params: [], results: [], body: [] },
        { params: [], results: [], body: [] },
      ],
    });
    const plain = importMemory(wasm);
    if (!plain.ok) throw new Error(plain.error);
    expect(plain.startFunction).to.equal(false);
    // Insert a start section (id 8, function 1) before the code section (id 10).
    let pos = 8;
    while (wasm[pos] !== 10) pos += 2 + wasm[pos + 1]!; // every section here is shorter than 128 bytes
    const withStart = Uint8Array.from([...wasm.subarray(0, pos), 8, 1, 1, ...wasm.subarray(pos)]);
    const started = importMemory(withStart);
    if (!started.ok) throw new Error(started.error);
    expect(started.startFunction).to.equal(true);
    expect(() => new WebAssembly.Module(started.wasm)).not.to.throw();
  });

  it("returns errors for malformed binaries instead of throwing", () => {
    expect(importMemory(Uint8Array.from([1, 2, 3])).ok).to.equal(false);
    expect(importMemory(buildGuest({ memory: { min: 1 }, funcs: [{ params: [], results: [], body: [] }] }).slice(0, 20)).ok).to.equal(
      false,
    );
  });
});
