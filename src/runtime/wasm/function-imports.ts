/**
 * The signatures of a module's function imports, read from its type and import
 * sections. `WebAssembly.Module.imports` gives names and kinds only, and a JS
 * host function accepts any signature at link time, so without this a module
 * importing one of our functions as `(i64) -> ()` would pass validation and then
 * hand our host a BigInt where it reads a pointer.
 */

/** One function import and its type, value types as the binary format writes them (0x7f = i32, ...). */
export interface FunctionImport {
  readonly module: string;
  readonly name: string;
  readonly params: readonly number[];
  readonly results: readonly number[];
}

const TYPE_SECTION_ID = 1;
const IMPORT_SECTION_ID = 2;
const FUNC_TYPE_FORM = 0x60;
const IMPORT_FUNC = 0x00;
const IMPORT_TABLE = 0x01;
const IMPORT_MEMORY = 0x02;
const IMPORT_GLOBAL = 0x03;
const IMPORT_TAG = 0x04;

/** Reads bytes of a section one item at a time; any overrun throws (and the caller reports the module as malformed). */
class Reader {
  constructor(
    private readonly bytes: Uint8Array,
    public pos: number,
    private readonly end: number,
  ) {}

  byte(): number {
    if (this.pos >= this.end) throw new RangeError("truncated section");
    return this.bytes[this.pos++] as number;
  }

  u32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
    }
    throw new RangeError("malformed LEB128");
  }

  name(): string {
    const len = this.u32();
    if (this.pos + len > this.end) throw new RangeError("truncated name");
    const text = Buffer.from(this.bytes.buffer, this.bytes.byteOffset + this.pos, len).toString("utf8");
    this.pos += len;
    return text;
  }

  valueTypes(): number[] {
    const n = this.u32();
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(this.byte());
    return out;
  }

  limits(): void {
    const flags = this.byte();
    this.u32();
    if ((flags & 1) !== 0) this.u32();
  }
}

/** Every function import with its signature, or an Error if the sections cannot be read. */
export function functionImports(wasm: Uint8Array): FunctionImport[] | Error {
  try {
    const types: { params: number[]; results: number[] }[] = [];
    const imports: FunctionImport[] = [];
    let pos = 8;
    while (pos < wasm.length) {
      const header = new Reader(wasm, pos, wasm.length);
      const id = header.byte();
      const size = header.u32();
      const end = header.pos + size;
      if (end > wasm.length) throw new RangeError("a section runs past the end of the binary");
      const r = new Reader(wasm, header.pos, end);
      if (id === TYPE_SECTION_ID) {
        const count = r.u32();
        for (let i = 0; i < count; i++) {
          if (r.byte() !== FUNC_TYPE_FORM) throw new RangeError("unsupported type form");
          types.push({ params: r.valueTypes(), results: r.valueTypes() });
        }
      } else if (id === IMPORT_SECTION_ID) {
        const count = r.u32();
        for (let i = 0; i < count; i++) {
          const module = r.name();
          const name = r.name();
          const kind = r.byte();
          if (kind === IMPORT_FUNC) {
            const type = types[r.u32()];
            if (type === undefined) throw new RangeError(`import ${module}.${name} names a type that does not exist`);
            imports.push({ module, name, ...type });
          } else if (kind === IMPORT_TABLE) {
            r.byte();
            r.limits();
          } else if (kind === IMPORT_MEMORY) {
            r.limits();
          } else if (kind === IMPORT_GLOBAL) {
            r.byte();
            r.byte();
          } else if (kind === IMPORT_TAG) {
            r.byte();
            r.u32();
          } else {
            throw new RangeError(`unknown import kind ${kind}`);
          }
        }
      }
      pos = end;
    }
    return imports;
  } catch (e: unknown) {
    return new Error(`cannot read the module's imports: ${e instanceof Error ? e.message : String(e)}`);
  }
}
