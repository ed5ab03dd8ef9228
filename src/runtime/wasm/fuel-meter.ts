/**
 * Fuel metering by rewriting the module binary, counted the way wasmtime counts fuel, so a budget
 * written for wasmtime means the same here. wasmtime charges every operator 1 except nop, drop,
 * block, loop, unreachable, return, else and end (0), each function entry 1, and bulk operators
 * one more per byte or element (memory.grow: 0 per page); it adds what a straight-line stretch cost
 * to its counter where that stretch ends (before a call, return, unreachable, branch, if, else, end
 * or loop) and traps when the counter has reached the limit at a function entry, a loop header or a
 * bulk operator that is not statically small. We insert exactly that: a charge of the stretch's
 * cost at each of those points, and a check at each of those places, on an i64 counter that, like
 * wasmtime's, holds consumed minus limit (so "out of fuel" is "counter >= 0"). Like wasmtime, each
 * function keeps the counter in a local (a register) and writes it to the module's global only before
 * it may leave (a call, return, unreachable or a branch out of the function), reloading it after a call:
 * charging through the global at every stretch made a CPU-bound script 1.58x slower, the local ~1.03x.
 *
 * The counter and an "exhausted" flag are exported under reserved names; a start section is turned
 * into an export, so the host can set the budget before any guest code runs and then charge what
 * wasmtime's synthesized start-up function charges around it (its entry and its call: 2).
 * Operators we do not know how to meter (SIMD, threads, exceptions, tail calls, GC) are refused.
 */

/** Export name of the i64 counter (consumed minus limit). */
export const FUEL_COUNTER_EXPORT = "sandboxd_fuel";
/** Export name of the i32 flag set to 1 when a fuel check traps. */
export const FUEL_EXHAUSTED_EXPORT = "sandboxd_fuel_exhausted";
/** Export name of the module's start function, when it had a start section. */
export const FUEL_START_EXPORT = "sandboxd_start";
/** What wasmtime's module start-up function charges around calling a start function: its entry and the call. */
export const START_FUNCTION_OVERHEAD_FUEL = 2;
/** A bulk operator whose constant cost is at most this needs no fuel check (as in wasmtime). */
const SMALL_BULK_OP_FUEL = 128;

const TYPE_SECTION = 1;
const IMPORT_SECTION = 2;
const FUNCTION_SECTION = 3;
const GLOBAL_SECTION = 6;
const EXPORT_SECTION = 7;
const START_SECTION = 8;
const CODE_SECTION = 10;
/** Where each known section goes in a module (the data count and tag sections do not follow their ids). */
const SECTION_ORDER: ReadonlyMap<number, number> = new Map([
  [1, 1],
  [2, 2],
  [3, 3],
  [4, 4],
  [5, 5],
  [13, 6],
  [6, 7],
  [7, 8],
  [8, 9],
  [9, 10],
  [12, 11],
  [10, 12],
  [11, 13],
]);
const VALUE_TYPES = new Set([0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f]);
const I32 = 0x7f;
const I64 = 0x7e;
const EMPTY_BLOCK = 0x40;

/** Why a module cannot be metered, for an INVALID_WASM message. */
class MeterError extends Error {}

class Reader {
  pos: number;
  constructor(
    readonly bytes: Uint8Array,
    pos = 0,
    readonly end = bytes.length,
  ) {
    this.pos = pos;
  }
  get done(): boolean {
    return this.pos >= this.end;
  }
  byte(): number {
    if (this.pos >= this.end) throw new MeterError("unexpected end of section");
    return this.bytes[this.pos++] as number;
  }
  u32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
    }
    throw new MeterError("malformed LEB128 integer");
  }
  /** A signed LEB128 of up to `bits` bits, as a number (exact for the i32 immediates we need). */
  sleb(bits: number): number {
    let result = 0;
    let shift = 0;
    let b: number;
    do {
      b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (shift > bits + 7) throw new MeterError("malformed LEB128 integer");
    } while ((b & 0x80) !== 0);
    if (shift < 64 && (b & 0x40) !== 0) result -= 2 ** shift;
    return result;
  }
  skip(n: number): void {
    if (this.pos + n > this.end) throw new MeterError("unexpected end of section");
    this.pos += n;
  }
  name(): string {
    const len = this.u32();
    const start = this.pos;
    this.skip(len);
    return Buffer.from(this.bytes.subarray(start, start + len)).toString("utf8");
  }
}

function u32(value: number): number[] {
  const out: number[] = [];
  let v = value;
  do {
    let b = v % 128;
    v = Math.floor(v / 128);
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
  return out;
}

function sleb(value: number): number[] {
  const out: number[] = [];
  let v = value;
  for (;;) {
    const b = ((v % 128) + 128) % 128;
    v = Math.floor(v / 128);
    const signBit = (b & 0x40) !== 0;
    if ((v === 0 && !signBit) || (v === -1 && signBit)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

function nameBytes(text: string): number[] {
  const bytes = Buffer.from(text, "utf8");
  return [...u32(bytes.length), ...bytes];
}

/** The result of meterFuel: the rewritten module, and whether it had a start function (now exported). */
export type MeterResult = { ok: true; wasm: Uint8Array<ArrayBuffer>; hasStart: boolean } | { ok: false; error: string };

/** Rewrites a module so it counts fuel as wasmtime does (see the file comment); refuses what it cannot meter. */
export function meterFuel(wasm: Uint8Array): MeterResult {
  try {
    return meter(wasm);
  } catch (e: unknown) {
    if (e instanceof MeterError) return { ok: false, error: `unsupported for metering: ${e.message}` };
    throw e;
  }
}

interface Section {
  readonly id: number;
  body: Uint8Array;
}

function meter(wasm: Uint8Array): MeterResult {
  if (
    wasm.length < 8 ||
    wasm[0] !== 0 ||
    wasm[1] !== 0x61 ||
    wasm[2] !== 0x73 ||
    wasm[3] !== 0x6d ||
    wasm[4] !== 1 ||
    wasm[5] !== 0 ||
    wasm[6] !== 0 ||
    wasm[7] !== 0
  ) {
    throw new MeterError("not a wasm core module binary");
  }
  const sections: Section[] = [];
  const top = new Reader(wasm, 8);
  while (!top.done) {
    const id = top.byte();
    const size = top.u32();
    const start = top.pos;
    top.skip(size);
    sections.push({ id, body: wasm.subarray(start, start + size) });
  }
  const find = (id: number): Section | undefined => sections.find((s) => s.id === id);

  const paramCounts = parseTypes(find(TYPE_SECTION)?.body);
  const importedGlobals = countImportedGlobals(find(IMPORT_SECTION)?.body);
  const funcTypes = parseFunctionSection(find(FUNCTION_SECTION)?.body);
  const definedGlobals = find(GLOBAL_SECTION) === undefined ? 0 : new Reader(find(GLOBAL_SECTION)!.body).u32();
  const counter = importedGlobals + definedGlobals;
  const flag = counter + 1;

  // The two new globals go after the module's own, so no global index moves.
  const newGlobals = [I64, 1, 0x42, 0, 0x0b, I32, 1, 0x41, 0, 0x0b];
  const globals = find(GLOBAL_SECTION);
  if (globals) globals.body = appendToVector(globals.body, 2, newGlobals);
  else insertSection(sections, { id: GLOBAL_SECTION, body: Uint8Array.from([2, ...newGlobals]) });

  let startFunc: number | undefined;
  const startIndex = sections.findIndex((s) => s.id === START_SECTION);
  if (startIndex >= 0) {
    startFunc = new Reader(sections[startIndex]!.body).u32();
    sections.splice(startIndex, 1);
  }

  const exportEntries: number[] = [
    ...nameBytes(FUEL_COUNTER_EXPORT),
    0x03,
    ...u32(counter),
    ...nameBytes(FUEL_EXHAUSTED_EXPORT),
    0x03,
    ...u32(flag),
  ];
  let exportCount = 2;
  if (startFunc !== undefined) {
    exportEntries.push(...nameBytes(FUEL_START_EXPORT), 0x00, ...u32(startFunc));
    exportCount++;
  }
  const exports = find(EXPORT_SECTION);
  if (exports) {
    checkReservedExports(exports.body);
    exports.body = appendToVector(exports.body, exportCount, exportEntries);
  } else {
    insertSection(sections, { id: EXPORT_SECTION, body: Uint8Array.from([...u32(exportCount), ...exportEntries]) });
  }

  const code = find(CODE_SECTION);
  if (code) code.body = meterCode(code.body, funcTypes, paramCounts, counter, flag);

  const parts: Uint8Array[] = [wasm.subarray(0, 8)];
  for (const s of sections) parts.push(Uint8Array.from([s.id, ...u32(s.body.length)]), s.body);
  return { ok: true, wasm: concat(parts), hasStart: startFunc !== undefined };
}

function parseTypes(body: Uint8Array | undefined): number[] {
  if (!body) return [];
  const r = new Reader(body);
  const count = r.u32();
  const params: number[] = [];
  for (let i = 0; i < count; i++) {
    if (r.byte() !== 0x60) throw new MeterError("a type that is not a plain function type (GC types)");
    const n = r.u32();
    for (let j = 0; j < n; j++) valueType(r);
    params.push(n);
    const results = r.u32();
    for (let j = 0; j < results; j++) valueType(r);
  }
  return params;
}

function valueType(r: Reader): number {
  const t = r.byte();
  if (!VALUE_TYPES.has(t)) throw new MeterError(`value type 0x${t.toString(16)}`);
  return t;
}

function skipLimits(r: Reader): void {
  const flags = r.byte();
  r.u32();
  if ((flags & 1) !== 0) r.u32();
}

function countImportedGlobals(body: Uint8Array | undefined): number {
  if (!body) return 0;
  const r = new Reader(body);
  const count = r.u32();
  let globals = 0;
  for (let i = 0; i < count; i++) {
    r.name();
    r.name();
    const kind = r.byte();
    if (kind === 0x00) r.u32();
    else if (kind === 0x01) {
      valueType(r);
      skipLimits(r);
    } else if (kind === 0x02) skipLimits(r);
    else if (kind === 0x03) {
      valueType(r);
      r.byte();
      globals++;
    } else throw new MeterError(`import kind 0x${kind.toString(16)}`);
  }
  return globals;
}

function parseFunctionSection(body: Uint8Array | undefined): number[] {
  if (!body) return [];
  const r = new Reader(body);
  const count = r.u32();
  const types: number[] = [];
  for (let i = 0; i < count; i++) types.push(r.u32());
  return types;
}

function checkReservedExports(body: Uint8Array): void {
  const r = new Reader(body);
  const count = r.u32();
  const reserved = new Set([FUEL_COUNTER_EXPORT, FUEL_EXHAUSTED_EXPORT, FUEL_START_EXPORT]);
  for (let i = 0; i < count; i++) {
    const name = r.name();
    if (reserved.has(name)) throw new MeterError(`the module exports the reserved name ${name}`);
    r.byte();
    r.u32();
  }
}

function appendToVector(body: Uint8Array, extra: number, entries: number[]): Uint8Array {
  const r = new Reader(body);
  const count = r.u32();
  return concat([Uint8Array.from(u32(count + extra)), body.subarray(r.pos), Uint8Array.from(entries)]);
}

function insertSection(sections: Section[], section: Section): void {
  const order = SECTION_ORDER.get(section.id) as number;
  const at = sections.findIndex((s) => s.id !== 0 && (SECTION_ORDER.get(s.id) ?? 0) > order);
  if (at < 0) sections.push(section);
  else sections.splice(at, 0, section);
}

function meterCode(
  body: Uint8Array,
  funcTypes: readonly number[],
  paramCounts: readonly number[],
  counter: number,
  flag: number,
): Uint8Array {
  const r = new Reader(body);
  const count = r.u32();
  if (count !== funcTypes.length) throw new MeterError("the code and function sections disagree");
  const out: Uint8Array[] = [Uint8Array.from(u32(count))];
  for (let i = 0; i < count; i++) {
    const size = r.u32();
    const start = r.pos;
    r.skip(size);
    const params = paramCounts[funcTypes[i] as number];
    if (params === undefined) throw new MeterError("a function names a type that does not exist");
    const rewritten = meterFunction(new Reader(body, start, start + size), params, counter, flag);
    out.push(Uint8Array.from(u32(rewritten.length)), rewritten);
  }
  return concat(out);
}

/** How an operator is charged and whether it ends a straight-line stretch. */
const enum Kind {
  /** Costs 1, charged with its stretch. */
  Plain,
  /** Costs 0 (nop, drop, block). */
  Free,
  /** Ends the stretch: the stretch (with this operator's own cost) is charged before it. */
  Flush,
}

/** Bulk operators: their cost per unit of the length operand on top of the stack. */
const BULK_COST_PER_UNIT: ReadonlyMap<number, number> = new Map([
  [8, 1], // memory.init
  [10, 1], // memory.copy
  [11, 1], // memory.fill
  [12, 1], // table.init
  [14, 1], // table.copy
  [15, 1], // table.grow
  [17, 1], // table.fill
]);
const MEMORY_GROW = 0x40;

function meterFunction(r: Reader, params: number, counter: number, flag: number): Uint8Array {
  const head: number[] = [];
  const groups = r.u32();
  let locals = params;
  const localDecls: number[] = [];
  for (let i = 0; i < groups; i++) {
    const n = r.u32();
    localDecls.push(...u32(n), valueType(r));
    locals += n;
  }
  // Two locals of our own after the function's: an i32 for a bulk length, and the counter cached as
  // wasmtime caches it, so charging is register arithmetic; it goes back to the global before anything
  // that leaves the function (a call, return, unreachable, a branch out) and comes back after a call.
  const scratch = locals;
  const cache = locals + 1;
  const body: number[] = [];
  const charge = (cost: number): void => {
    if (cost > 0) body.push(0x20, ...u32(cache), 0x42, ...sleb(cost), 0x7c, 0x21, ...u32(cache));
  };
  const save = (): void => {
    body.push(0x20, ...u32(cache), 0x24, ...u32(counter));
  };
  const load = (): void => {
    body.push(0x23, ...u32(counter), 0x21, ...u32(cache));
  };
  const check = (): void => {
    body.push(
      0x20,
      ...u32(cache),
      0x42,
      0,
      0x59,
      0x04,
      EMPTY_BLOCK,
      0x20,
      ...u32(cache),
      0x24,
      ...u32(counter),
      0x41,
      1,
      0x24,
      ...u32(flag),
      0x00,
      0x0b,
    );
  };
  // Function entry: wasmtime charges 1 and checks.
  load();
  charge(1);
  check();
  /** Blocks, loops and ifs open around the current operator; a branch to label `depth` leaves the function. */
  let depth = 0;
  let pending = 0;
  /** The value of the i32.const just before, if the last operator was one (a bulk length known statically). */
  let lastConst: number | undefined;
  while (!r.done) {
    const at = r.pos;
    const op = r.byte();
    let constNow: number | undefined;
    let kind = Kind.Plain;
    let bulkCost: number | undefined;
    let loopHeader = false;
    /** The operator may leave the function: the cached counter is saved first. */
    let saveBefore = false;
    let reloadAfter = false;
    switch (op) {
      case 0x00: // unreachable
      case 0x0f: // return
        kind = Kind.Flush;
        pending -= 1;
        saveBefore = true;
        break;
      case 0x05: // else
        kind = Kind.Flush;
        pending -= 1;
        break;
      case 0x0b: // end
        kind = Kind.Flush;
        pending -= 1;
        if (depth === 0) saveBefore = true;
        else depth--;
        break;
      case 0x01: // nop
      case 0x1a: // drop
        kind = Kind.Free;
        break;
      case 0x02: // block
        blockType(r);
        kind = Kind.Free;
        depth++;
        break;
      case 0x03: // loop
        blockType(r);
        kind = Kind.Flush;
        pending -= 1;
        loopHeader = true;
        depth++;
        break;
      case 0x04: // if
        blockType(r);
        kind = Kind.Flush;
        depth++;
        break;
      case 0x0c: // br
      case 0x0d: // br_if
        saveBefore = r.u32() === depth;
        kind = Kind.Flush;
        break;
      case 0x0e: {
        // br_table
        const n = r.u32();
        for (let i = 0; i <= n; i++) if (r.u32() === depth) saveBefore = true;
        kind = Kind.Flush;
        break;
      }
      case 0x10: // call
        r.u32();
        kind = Kind.Flush;
        saveBefore = true;
        reloadAfter = true;
        break;
      case 0x11: // call_indirect
        r.u32();
        r.u32();
        kind = Kind.Flush;
        saveBefore = true;
        reloadAfter = true;
        break;
      case 0x1b: // select
        break;
      case 0x1c: {
        // select t*
        const n = r.u32();
        for (let i = 0; i < n; i++) valueType(r);
        break;
      }
      case 0x20:
      case 0x21:
      case 0x22:
      case 0x23:
      case 0x24:
      case 0x25:
      case 0x26:
        r.u32();
        break;
      case 0x3f: // memory.size
        memoryIndex(r);
        break;
      case MEMORY_GROW:
        memoryIndex(r);
        bulkCost = 0;
        break;
      case 0x41:
        constNow = r.sleb(32);
        break;
      case 0x42:
        r.sleb(64);
        break;
      case 0x43:
        r.skip(4);
        break;
      case 0x44:
        r.skip(8);
        break;
      case 0xd0: // ref.null
        refType(r);
        break;
      case 0xd1: // ref.is_null
        break;
      case 0xd2: // ref.func
        r.u32();
        break;
      case 0xfc: {
        const sub = r.u32();
        if (sub <= 7) break; // saturating truncations
        switch (sub) {
          case 8:
            r.u32();
            memoryIndex(r);
            break; // memory.init
          case 9:
            r.u32();
            break; // data.drop
          case 10:
            memoryIndex(r);
            memoryIndex(r);
            break; // memory.copy
          case 11:
            memoryIndex(r);
            break; // memory.fill
          case 12:
            r.u32();
            r.u32();
            break; // table.init
          case 13:
            r.u32();
            break; // elem.drop
          case 14:
            r.u32();
            r.u32();
            break; // table.copy
          case 15:
          case 16:
          case 17:
            r.u32();
            break; // table.grow, table.size, table.fill
          default:
            throw new MeterError(`operator 0xfc ${sub}`);
        }
        bulkCost = BULK_COST_PER_UNIT.get(sub);
        break;
      }
      default:
        if (op >= 0x28 && op <= 0x3e) {
          const align = r.u32();
          if (align >= 0x40) throw new MeterError("multiple memories");
          r.u32();
        } else if (!(op >= 0x45 && op <= 0xc4)) {
          throw new MeterError(`operator 0x${op.toString(16)}`);
        }
    }
    const encoded = r.bytes.subarray(at, r.pos);
    if (kind !== Kind.Free) pending += 1;
    if (bulkCost !== undefined) {
      // The operator's own cost joins the stretch; its length-proportional cost follows.
      if (lastConst !== undefined) {
        const units = lastConst >>> 0;
        pending += units * bulkCost;
        if (units * bulkCost > SMALL_BULK_OP_FUEL) {
          charge(pending);
          pending = 0;
          check();
        }
      } else {
        charge(pending);
        pending = 0;
        if (bulkCost > 0) {
          body.push(0x22, ...u32(scratch), 0x20, ...u32(scratch), 0xad, 0x20, ...u32(cache), 0x7c, 0x21, ...u32(cache));
        }
        check();
      }
      body.push(...encoded);
    } else if (kind === Kind.Flush) {
      charge(pending);
      pending = 0;
      if (saveBefore) save();
      body.push(...encoded);
      if (reloadAfter) load();
      if (loopHeader) check();
    } else {
      body.push(...encoded);
    }
    lastConst = constNow;
  }
  if (pending !== 0) throw new MeterError("a function body that does not end with `end`");
  head.push(...u32(groups + 2), ...localDecls, 1, I32, 1, I64);
  return Uint8Array.from([...head, ...body]);
}

function blockType(r: Reader): void {
  const b = r.bytes[r.pos];
  if (b === EMPTY_BLOCK || (b !== undefined && VALUE_TYPES.has(b))) {
    r.byte();
    return;
  }
  const index = r.sleb(33);
  if (index < 0) throw new MeterError("block type");
}

function refType(r: Reader): void {
  const t = r.byte();
  if (t !== 0x70 && t !== 0x6f) throw new MeterError(`reference type 0x${t.toString(16)}`);
}

function memoryIndex(r: Reader): void {
  if (r.byte() !== 0) throw new MeterError("multiple memories");
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

/** The fuel a metered instance consumed, given the limit its counter was started at. */
export function fuelConsumed(instance: WebAssembly.Instance, limit: bigint): bigint {
  const counter = instance.exports[FUEL_COUNTER_EXPORT] as WebAssembly.Global;
  return (counter.value as bigint) + limit;
}

/** Whether a metered instance's trap was its fuel running out. */
export function fuelExhausted(instance: WebAssembly.Instance): boolean {
  return (instance.exports[FUEL_EXHAUSTED_EXPORT] as WebAssembly.Global).value === 1;
}

/**
 * Starts a metered instance's budget and runs its start function, if it had one, charging what
 * wasmtime's start-up function charges around it. Throws what the start function throws, or a
 * RuntimeError when the budget is spent before it could start (the exhausted flag is then set).
 */
export function startMetered(instance: WebAssembly.Instance, limit: bigint): void {
  const counter = instance.exports[FUEL_COUNTER_EXPORT] as WebAssembly.Global;
  counter.value = -limit;
  const start = instance.exports[FUEL_START_EXPORT];
  if (typeof start !== "function") return;
  // The start-up function's entry (charged and checked), then its call.
  counter.value = (counter.value as bigint) + 1n;
  if ((counter.value as bigint) >= 0n) {
    (instance.exports[FUEL_EXHAUSTED_EXPORT] as WebAssembly.Global).value = 1;
    throw new WebAssembly.RuntimeError("all fuel consumed");
  }
  counter.value = (counter.value as bigint) + BigInt(START_FUNCTION_OVERHEAD_FUEL - 1);
  (start as () => void)();
}
