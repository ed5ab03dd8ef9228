/**
 * Every run starts from a fresh instance and all-zero memory, although a worker instantiates the
 * next run's module while idle: nothing of one run may reach the next.
 */
import { expect } from "chai";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { buildModule, call, DROP, i32, I32_STORE, store32, WASI } from "../fixtures/hostile/wasm-builder.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { register } from "../helpers/hostile.js";

const PAGE = 65_536;
/** Initial memory of the probes, in pages. */
const PAGES = 2;
/** Where the probes leave a marker for the next run to find (it must not). */
const MARK_AT = 0x8000;
/** The last word of the initial memory: the far end a zeroing must reach. */
const LAST_WORD_AT = PAGES * PAGE - 4;
/** Where the data segment puts a byte the guest then overwrites: a reused instance would show the overwrite. */
const DATA_AT = 0x200;
const MARK = 0x5eed_f00d;

/** `i32.load offset=0 align=2`. */
const I32_LOAD = [0x28, 0x02, 0x00];
/** `memory.size` of memory 0. */
const MEMORY_SIZE = [0x3f, 0x00];
/** `memory.grow` of memory 0. */
const MEMORY_GROW = [0x40, 0x00];

/**
 * A guest that reports what it found (memory size in pages, the words at MARK_AT, LAST_WORD_AT and
 * DATA_AT) as four u32 on stdout, then dirties all of them, and with `grow` grows its memory by a page
 * and marks the new page too.
 */
function probe(grow: boolean): Uint8Array {
  const report = 0x100;
  const copy = (to: number, from: number): number[] => [...i32(to), ...i32(from), ...I32_LOAD, ...I32_STORE];
  const body = [
    ...i32(report),
    ...MEMORY_SIZE,
    ...I32_STORE,
    ...copy(report + 4, MARK_AT),
    ...copy(report + 8, LAST_WORD_AT),
    ...copy(report + 12, DATA_AT),
    ...store32(0x10, report),
    ...store32(0x14, 16),
    ...i32(1),
    ...i32(0x10),
    ...i32(1),
    ...i32(0x20),
    ...call(0),
    ...DROP,
    ...store32(MARK_AT, MARK),
    ...store32(LAST_WORD_AT, MARK),
    ...store32(DATA_AT, MARK),
    ...(grow ? [...i32(1), ...MEMORY_GROW, ...DROP, ...store32(PAGES * PAGE + 8, MARK)] : []),
  ];
  return buildModule({
    imports: [WASI.fd_write],
    memory: { min: PAGES },
    // The grower's data differs, so the two are different modules of the same memory size.
    data: [{ offset: DATA_AT, bytes: grow ? [0x47, 0, 0, 0] : [0x41, 0, 0, 0] }],
    funcs: [{ params: [], results: [], body }],
  });
}

function words(stdout: Uint8Array): number[] {
  const view = new DataView(stdout.buffer, stdout.byteOffset, stdout.byteLength);
  return Array.from({ length: stdout.byteLength / 4 }, (_, i) => view.getUint32(i * 4, true));
}

describe("fresh state per run on a worker that instantiates ahead", function () {
  this.timeout(120_000);
  let daemon: TestDaemon;
  let dirtier: string;
  let grower: string;

  before(async function () {
    // One worker: every run below lands on the same thread, memory and instance cache.
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "1"] });
    dirtier = await register(daemon, probe(false));
    grower = await register(daemon, probe(true));
  });
  after(async function () {
    await daemon?.stop();
  });

  async function report(moduleId: string): Promise<number[]> {
    const response = await daemon.execute({ target: moduleTarget(moduleId) });
    expect(response.outcome, response.message).to.equal(Outcome.OUTCOME_EXITED);
    return words(response.stdout);
  }

  it("a run never sees the memory the previous run of the same module dirtied", async function () {
    for (let i = 0; i < 5; i++) expect(await report(dirtier), `run ${i}`).to.deep.equal([PAGES, 0, 0, 0x41]);
  });

  it("a run never sees memory another module dirtied, nor a size a grown memory had", async function () {
    for (let i = 0; i < 4; i++) {
      expect(await report(grower), `grower run ${i}`).to.deep.equal([PAGES, 0, 0, 0x47]);
      expect(await report(dirtier), `dirtier run ${i}`).to.deep.equal([PAGES, 0, 0, 0x41]);
    }
  });
});
