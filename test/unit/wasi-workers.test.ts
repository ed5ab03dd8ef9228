import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { WasiMount } from "../../src/runtime/wasi/types.js";
import { guestWasmPath, openFdCount, startGuestWorker as startGuest } from "../fixtures/wasi/guest.js";

describe("WASI host in worker threads", function () {
  this.timeout(120_000);
  let dir: string;
  let wasmPath: string;

  before(() => {
    wasmPath = guestWasmPath("probe");
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "sandboxd-wasi-workers-"));
    writeFileSync(join(dir, "f"), "content");
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("two concurrent executions share a writable mount without losing or tearing appends", async () => {
    const mounts: WasiMount[] = [{ hostPath: dir, guestPath: "/shared", writable: true }];
    const lines = 300;
    const a = startGuest({ wasmPath, args: ["append-many", "/shared/log", "A", String(lines)], mounts });
    const b = startGuest({ wasmPath, args: ["append-many", "/shared/log", "B", String(lines)], mounts });
    const [ra, rb] = await Promise.all([a.done, b.done]);
    await Promise.all([a.worker.terminate(), b.worker.terminate()]);
    expect(ra).to.deep.equal({ outcome: "exited", stdout: "ok\n", denials: [] });
    expect(rb).to.deep.equal({ outcome: "exited", stdout: "ok\n", denials: [] });
    const log = readFileSync(join(dir, "log"), "utf8")
      .split("\n")
      .filter((l) => l !== "");
    expect(log).to.have.length(2 * lines);
    for (const tag of ["A", "B"]) {
      expect(log.filter((l) => l.startsWith(`${tag} `))).to.deep.equal(Array.from({ length: lines }, (_, i) => `${tag} ${i}`));
    }
  });

  it("terminating a worker mid-run closes every host fd its guest held (Node owns them; nobody closes them twice)", async () => {
    const before = openFdCount();
    const g = startGuest({
      wasmPath,
      args: ["open-and-sleep", "/data/f", "25", "60000"],
      mounts: [{ hostPath: dir, guestPath: "/data", writable: false }],
    });
    await g.spoke; // the guest holds 25 files plus its preopen and is asleep
    expect(openFdCount()).to.be.at.least(before + 26);
    await g.worker.terminate();
    expect(openFdCount()).to.be.at.most(before);
  });
});
