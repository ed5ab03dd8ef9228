import { expect } from "chai";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";

const root = (p: string): string => fileURLToPath(new URL(`../../../${p}`, import.meta.url));

describe("the README's script example", function () {
  let daemon: TestDaemon;
  let moduleId: string;
  const example = readFileSync(root("examples/order_total.rs"), "utf8");

  before(async function () {
    daemon = await startDaemon();
    const compiled = await daemon.compile({ input: { $case: "source", value: example } });
    expect(compiled.ok, JSON.stringify(compiled.diagnostics.map((d) => d.rendered))).to.equal(true);
    moduleId = compiled.moduleId;
  });
  after(async function () {
    await daemon?.stop();
  });

  it("is the same code as examples/order_total.rs", function () {
    const readme = readFileSync(root("README.md"), "utf8");
    const body = example.slice(example.indexOf("\n") + 1);
    expect(readme).to.contain("```rust\n" + body + "```");
  });

  it("answers a valid order with its total", async function () {
    const r = await daemon.execute({ target: moduleTarget(moduleId), stdin: Buffer.from('{"items":[{"price_cents":250,"quantity":2}]}') });
    expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode).to.equal(0);
    expect(JSON.parse(r.stdout.toString())).to.deep.equal({ total_cents: 500 });
    expect(r.stderr.toString()).to.contain("pricing 1 items");
  });

  it("answers an empty order with a structured error and exit 1", async function () {
    const r = await daemon.execute({ target: moduleTarget(moduleId), stdin: Buffer.from('{"items":[]}') });
    expect(r.exitCode).to.equal(1);
    expect(JSON.parse(r.stdout.toString())).to.deep.equal({ error: { code: "EMPTY_ORDER", message: "an order needs at least one item" } });
  });
});
