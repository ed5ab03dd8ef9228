import { expect } from "chai";
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadGuest, runGuest } from "../fixtures/wasi/guest.js";

/**
 * The daemon checks a mount's host path (realpath inside the allowed roots) when it authorizes the
 * request, and the run may start much later (queued behind busy workers). Meanwhile another guest with a
 * writable mount above that path can replace a directory on it with a relative symlink leading outside
 * every allowed root. The runtime must serve exactly the directory that was checked, or refuse.
 */
describe("WASI red team: a mount swapped between policy check and run", function () {
  this.timeout(60_000);
  let root: string;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "sandboxd-redteam-mounts-"));
    mkdirSync(join(root, "allowed", "jobs", "42", "input"), { recursive: true });
    writeFileSync(join(root, "allowed", "jobs", "42", "input", "data.txt"), "job input");
    mkdirSync(join(root, "outside", "input"), { recursive: true });
    writeFileSync(join(root, "outside", "input", "data.txt"), "OUTSIDE SECRET");
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it("regression: a path component swapped for a symlink after the check is refused, not followed outside", () => {
    const checked = join(root, "allowed", "jobs", "42", "input"); // what authorize resolved and approved
    // Guest A (writable on allowed/jobs) swaps 42 for a relative symlink; the daemon never saw it.
    renameSync(join(root, "allowed", "jobs", "42"), join(root, "allowed", "jobs", "42-old"));
    symlinkSync("../../outside", join(root, "allowed", "jobs", "42"));
    const r = runGuest(loadGuest("probe"), ["read", "/data/data.txt"], {
      mounts: [{ hostPath: checked, guestPath: "/data", writable: true }],
    });
    expect(r.stdout).to.not.contain("OUTSIDE SECRET");
    expect(r.result.outcome).to.equal("trap");
    expect(r.result.outcome === "trap" ? r.result.message : "").to.match(/changed since/);
  });

  it("the checked directory itself is served when nothing moved", () => {
    const checked = join(root, "allowed", "jobs", "42", "input");
    const r = runGuest(loadGuest("probe"), ["read", "/data/data.txt"], {
      mounts: [{ hostPath: checked, guestPath: "/data", writable: false }],
    });
    expect(r.stdout).to.equal("ok job input\n");
  });
});
