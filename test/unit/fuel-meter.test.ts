import { expect } from "chai";
import { readFileSync } from "node:fs";
import wabtInit from "wabt";
import { fuelConsumed, fuelExhausted, meterFuel, startMetered } from "../../src/runtime/wasm/fuel-meter.js";

/** wasmtime's own fuel specification, kept as a fixture (see its header). */
const FUEL_WAST = new URL("../../../test/fixtures/fuel/fuel.wast", import.meta.url);
/** A budget no test module comes near, like wasmtime's u64::MAX in its test. */
const UNLIMITED = 2n ** 62n;

type Wabt = Awaited<ReturnType<typeof wabtInit>>;
let wabt: Wabt;

function assemble(wat: string): Uint8Array {
  const module = wabt.parseWat("test.wat", wat, {
    bulk_memory: true,
    reference_types: true,
    sign_extension: true,
    sat_float_to_int: true,
    mutable_globals: true,
  });
  try {
    module.resolveNames();
    module.validate();
    return module.toBinary({}).buffer;
  } finally {
    module.destroy();
  }
}

/** Instantiates a metered module and runs its start function: the fuel it consumed, trap or not, and whether fuel ran out. */
function runMetered(
  wasm: Uint8Array,
  limit = UNLIMITED,
  exports?: (instance: WebAssembly.Instance) => void,
): { fuel: bigint; exhausted: boolean; trapped: boolean } {
  const metered = meterFuel(wasm);
  if (!metered.ok) throw new Error(metered.error);
  const instance = new WebAssembly.Instance(new WebAssembly.Module(metered.wasm), {});
  let trapped = false;
  try {
    startMetered(instance, limit);
    exports?.(instance);
  } catch (e: unknown) {
    if (!(e instanceof WebAssembly.RuntimeError)) throw e;
    trapped = true;
  }
  return { fuel: fuelConsumed(instance, limit), exhausted: fuelExhausted(instance), trapped };
}

/** The top-level `(assert_fuel N (module ...))` forms of a .wast file, with their line. */
function assertions(text: string): { line: number; fuel: bigint; module: string }[] {
  const out: { line: number; fuel: bigint; module: string }[] = [];
  let depth = 0;
  let start = -1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === ";" && text[i + 1] === ";") {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === "\\") i++;
    } else if (c === "(") {
      if (depth === 0) start = i;
      depth++;
    } else if (c === ")") {
      depth--;
      if (depth === 0) {
        const form = text.slice(start, i + 1);
        const m = /^\(assert_fuel\s+(\d+)\s*(?:;;[^\n]*)?\s*(\(module[\s\S]*\))\)$/.exec(form);
        if (!m) throw new Error(`not an assert_fuel form: ${form.slice(0, 40)}`);
        out.push({ line: text.slice(0, start).split("\n").length, fuel: BigInt(m[1]!), module: m[2]! });
      }
    }
  }
  return out;
}

describe("fuel metering", () => {
  before(async () => {
    wabt = await wabtInit();
  });

  describe("wasmtime's tests/all/fuel.wast", () => {
    const all = assertions(readFileSync(FUEL_WAST, "utf8"));
    // GC arrays are no WASI preview1 feature: V8 in Node 20 and our toolchains have none.
    const cases = all.filter((a) => !/\barray\b/.test(a.module));

    it("holds every assertion that does not use GC arrays (and there are some)", () => {
      expect(all.length).to.equal(47);
      expect(cases.length).to.equal(35);
    });

    for (const a of cases) {
      it(`fuel.wast:${a.line} costs ${a.fuel}`, () => {
        expect(runMetered(assemble(a.module)).fuel).to.equal(a.fuel);
      });
    }
  });

  it("a counted loop of n iterations costs 1 + 3 + 7n + 1 (hand-computed)", () => {
    // entry 1; i32.const, local.set, (loop 0) = 2 before the loop; per iteration local.get, i32.const,
    // i32.sub, local.tee, i32.const(acc) ... see the body; after: local.get + end 0.
    const wat = (n: number): string => `(module
      (func (export "run") (result i32) (local $i i32) (local $acc i32)
        i32.const ${n}
        local.set $i
        loop $l
          local.get $acc
          i32.const 3
          i32.add
          local.set $acc
          local.get $i
          i32.const 1
          i32.sub
          local.tee $i
          br_if $l
        end
        local.get $acc))`;
    for (const n of [1, 10, 1000]) {
      const metered = meterFuel(assemble(wat(n)));
      if (!metered.ok) throw new Error(metered.error);
      const instance = new WebAssembly.Instance(new WebAssembly.Module(metered.wasm), {});
      startMetered(instance, UNLIMITED);
      expect((instance.exports["run"] as () => number)()).to.equal(3 * n);
      // 1 (entry) + 2 (const, set) + 9 per iteration + 1 (local.get) = 4 + 9n
      expect(fuelConsumed(instance, UNLIMITED)).to.equal(BigInt(4 + 9 * n));
    }
  });

  it("a spin loop traps with the exhausted flag at the limit, not before", () => {
    const wat = `(module (func $spin loop br 0 end) (start $spin))`;
    for (const limit of [10n, 1000n, 123_457n]) {
      const run = runMetered(assemble(wat), limit);
      expect(run.trapped).to.equal(true);
      expect(run.exhausted).to.equal(true);
      // 2 (start-up) + 1 (entry); each iteration costs 1 (br) and is checked at the loop header.
      expect(run.fuel >= limit).to.equal(true);
      expect(run.fuel - limit < 2n).to.equal(true);
    }
  });

  it("a real trap after the budget crossed zero is a trap, not fuel exhaustion", () => {
    // 2 + 1 + 3: the budget of 5 is crossed by straight-line code, then unreachable traps before any check.
    const run = runMetered(assemble(`(module (func $f i32.const 0 i32.const 0 i32.const 0 unreachable) (start $f))`), 5n);
    expect(run.trapped).to.equal(true);
    expect(run.exhausted).to.equal(false);
  });

  it("the same run three times gives the same fuel", () => {
    const wasm = assemble(`(module (memory 1) (func $f (local i32)
      i32.const 500 local.set 0
      loop i32.const 0 i32.const 7 local.get 0 memory.fill local.get 0 i32.const 1 i32.sub local.tee 0 br_if 0 end)
      (start $f))`);
    const runs = [runMetered(wasm).fuel, runMetered(wasm).fuel, runMetered(wasm).fuel];
    expect(new Set(runs).size).to.equal(1);
    // 2 + 1 + 2; per iteration i: 3 + fill(1 + i) + 5 = 9 + i, i from 500 down to 1.
    expect(runs[0]).to.equal(5n + 500n * 9n + (500n * 501n) / 2n);
  });

  it("a function left by a branch to its own label (br, br_if, br_table) still hands its fuel to its caller", () => {
    const metered = meterFuel(
      assemble(`(module
      (func $out (result i32) i32.const 7 br 0)
      (func $outif (param i32) (result i32) i32.const 5 local.get 0 br_if 0 drop i32.const 6)
      (func $tbl (param i32) (result i32) (block $b (result i32) i32.const 9 local.get 0 br_table $b 1) i32.const 1 i32.add)
      (func (export "run") (param i32) (result i32)
        call $out local.get 0 call $outif i32.add local.get 0 call $tbl i32.add))`),
    );
    if (!metered.ok) throw new Error(metered.error);
    const module = new WebAssembly.Module(metered.wasm);
    // run: entry, call, local.get, call, add, local.get, call, add = 8; $out 3; $outif 4 taken, 5 not; $tbl 4 out, 6 through $b.
    for (const [arg, value, fuel] of [
      [1, 21, 8n + 3n + 4n + 4n],
      [0, 23, 8n + 3n + 5n + 6n],
    ] as const) {
      const instance = new WebAssembly.Instance(module, {});
      startMetered(instance, UNLIMITED);
      expect((instance.exports["run"] as (n: number) => number)(arg)).to.equal(value);
      expect(fuelConsumed(instance, UNLIMITED), `arg ${arg}`).to.equal(fuel);
    }
  });

  it("refuses operators it cannot meter: SIMD", () => {
    const module = wabt.parseWat("simd.wat", `(module (func (drop (v128.const i64x2 0 0))))`, { simd: true });
    const wasm = module.toBinary({}).buffer;
    module.destroy();
    const metered = meterFuel(wasm);
    expect(metered.ok).to.equal(false);
    if (!metered.ok) expect(metered.error).to.match(/^unsupported for metering: /);
  });

  it("refuses a module that already exports a reserved name", () => {
    const metered = meterFuel(assemble(`(module (global (export "sandboxd_fuel") i32 (i32.const 0)))`));
    expect(metered.ok).to.equal(false);
  });

  it("refuses bytes that are not a module", () => {
    expect(meterFuel(Uint8Array.from([1, 2, 3])).ok).to.equal(false);
    expect(meterFuel(Uint8Array.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 10, 5, 1])).ok).to.equal(false);
  });

  it("keeps globals, imports and exports where they were", () => {
    const wasm = assemble(`(module
      (import "env" "g" (global $g i32))
      (import "env" "f" (func $f (result i32)))
      (global $h (mut i32) (i32.const 5))
      (func (export "sum") (result i32) global.get $g global.get $h i32.add call $f i32.add))`);
    const metered = meterFuel(wasm);
    if (!metered.ok) throw new Error(metered.error);
    const instance = new WebAssembly.Instance(new WebAssembly.Module(metered.wasm), { env: { g: 10, f: () => 100 } });
    startMetered(instance, UNLIMITED);
    expect((instance.exports["sum"] as () => number)()).to.equal(115);
    // entry 1, global.get 2, add, call (flush), add = 6; the host function itself is free.
    expect(fuelConsumed(instance, UNLIMITED)).to.equal(6n);
  });
});
