import { expect } from "chai";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The compiled gate (this test runs from dist/test/unit/). */
const CHECK_IMPORTS = fileURLToPath(new URL("../../scripts/check-imports.js", import.meta.url));

describe("the import gate (scripts/check-imports)", function () {
  this.timeout(20_000);
  let root: string;

  function file(path: string, text: string): void {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }

  function check(): { status: number | null; stderr: string } {
    const r = spawnSync(process.execPath, [CHECK_IMPORTS, root], { encoding: "utf8" });
    return { status: r.status, stderr: r.stderr };
  }

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "sandboxd-check-imports-"));
    file("src/limits.ts", "export const A = 1;\n");
    file("src/runtime/a.ts", 'import { A } from "../limits.js";\nexport const B = A;\n');
    file(
      "src/grpc/server.ts",
      'import { B } from "../runtime/a.js";\nimport * as grpc from "@grpc/grpc-js";\nexport const C = [B, grpc];\n',
    );
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it("passes a tree whose imports only go down", () => {
    expect(check()).to.deep.equal({ status: 0, stderr: "" });
  });

  it("fails a core file that imports src/grpc or an @grpc/ package", () => {
    file(
      "src/runtime/b.ts",
      'import { C } from "../grpc/server.js";\nimport type { Metadata } from "@grpc/grpc-js";\nexport const D = C;\n',
    );
    const r = check();
    expect(r.status).to.equal(1);
    expect(r.stderr).to.include("src/runtime/b.ts (core) imports src/grpc/server.ts (adapters): nothing imports upward");
    expect(r.stderr).to.include("src/runtime/b.ts: imports @grpc/grpc-js: the core never speaks gRPC");
  });

  it("fails an import cycle, naming its files (the WASI host's fs.ts and host.ts imported each other)", () => {
    file("src/runtime/wasi/fs.ts", 'import type { H } from "./host.js";\nexport type F = H;\n');
    file("src/runtime/wasi/host.ts", 'import { type F } from "./fs.js";\nexport type H = number;\nexport type G = F;\n');
    const r = check();
    expect(r.status).to.equal(1);
    expect(r.stderr).to.include("import cycle: src/runtime/wasi/fs.ts <-> src/runtime/wasi/host.ts");
  });

  it("fails a file in no layer, so a new folder is placed on purpose", () => {
    file("src/newthing/x.ts", "export const X = 1;\n");
    expect(check().stderr).to.include("src/newthing/x.ts: in no layer");
  });
});
