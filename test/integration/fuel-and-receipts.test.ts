import { execFile } from "node:child_process";
import { createHash, generateKeyPairSync } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import wabtInit from "wabt";
import { ExecuteResponse, Outcome, SignedReceipt, type Policy } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { verifyReceipt } from "../../src/receipt/receipt.js";
import { script } from "../helpers/fixtures.js";
import { moduleTarget, rejection, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { makeKey, signed, tempDir, wire, writePublicKeys, type TestKey } from "../unit/policy-fixtures.js";
import { DEBIAN_PYTHON } from "../helpers/python.js";

const run = promisify(execFile);
const SANDBOXCTL = fileURLToPath(new URL("../../src/cli/sandboxctl.js", import.meta.url));
/** The Python verifier docs/receipts.md embeds (read from the repo, not from dist/). */
const PYTHON_VERIFIER = fileURLToPath(new URL("../../../examples/receipts/verify_receipt.py", import.meta.url));
const RECEIPTS_DOC = fileURLToPath(new URL("../../../docs/receipts.md", import.meta.url));
const MAX_FUEL = 1_000_000_000;
const HOUR_SECONDS = 3600;
/** Iterations of the hand-written counted loop. */
const LOOP_ITERATIONS = 1000;

/** A WASI command whose `_start` counts down LOOP_ITERATIONS times and returns. */
const COUNTED_LOOP_WAT = `(module
  (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    i32.const ${LOOP_ITERATIONS}
    local.set $i
    loop $l
      local.get $i
      i32.const 1
      i32.sub
      local.tee $i
      br_if $l
    end))`;
/** Entry 1; i32.const and local.set 2; per iteration local.get, i32.const, i32.sub, local.tee, br_if 5; loop, end 0. */
const COUNTED_LOOP_FUEL = 1 + 2 + 5 * LOOP_ITERATIONS;

/** A WASI command that spins forever. */
const SPIN_WAT = `(module (memory (export "memory") 1) (func (export "_start") loop br 0 end))`;

async function assemble(wat: string): Promise<Buffer> {
  const wabt = await wabtInit();
  const module = wabt.parseWat("test.wat", wat);
  try {
    return Buffer.from(module.toBinary({}).buffer);
  } finally {
    module.destroy();
  }
}

const sha256 = (bytes: Uint8Array): Buffer => createHash("sha256").update(bytes).digest();

describe("fuel and signed receipts (real daemon)", function () {
  let tmp: { path: string; remove: () => Promise<void> };
  let authority: TestKey;
  let receiptKey: TestKey;
  let receiptPubFile: string;
  let daemon: TestDaemon;
  let loopId: string;
  let spinId: string;
  let echoId: string;

  before(async function () {
    tmp = await tempDir("fuel-it");
    const keys = join(tmp.path, "keys");
    await mkdir(keys);
    authority = makeKey("authority");
    await writePublicKeys(keys, [authority]);
    receiptKey = makeKey("receipts-2026");
    const receiptKeyFile = join(tmp.path, "receipts-2026.key");
    await writeFile(receiptKeyFile, receiptKey.privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    receiptPubFile = join(tmp.path, "receipts-2026.pub");
    await writeFile(receiptPubFile, receiptKey.publicPem);
    daemon = await startDaemon({ args: ["--trusted-keys", keys, "--max-fuel", String(MAX_FUEL), "--receipt-key", receiptKeyFile] });
    const loop = await daemon.compile({ input: { $case: "wasm", value: await assemble(COUNTED_LOOP_WAT) } });
    const spin = await daemon.compile({ input: { $case: "wasm", value: await assemble(SPIN_WAT) } });
    const echo = await daemon.compile({ input: { $case: "source", value: script("echo_json") } });
    expect([loop.ok, spin.ok, echo.ok]).to.deep.equal([true, true, true]);
    [loopId, spinId, echoId] = [loop.moduleId, spin.moduleId, echo.moduleId];
  });

  after(async function () {
    await daemon?.stop();
    await tmp?.remove();
  });

  function policy(extra: Partial<Policy> = {}): ReturnType<typeof wire> {
    const now = Math.floor(Date.now() / 1000);
    return wire(
      signed(
        { policyId: "fuel-test", notBeforeUnix: now - HOUR_SECONDS, expiresAtUnix: now + HOUR_SECONDS, timeoutMs: 10_000, ...extra },
        authority,
      ),
    );
  }

  it("a hand-written counted loop consumes exactly its computed fuel", async () => {
    const r = await daemon.execute({ target: moduleTarget(loopId), policy: policy({ fuelLimit: 1_000_000 }) });
    expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode).to.equal(0);
    expect(r.fuelConsumed).to.equal(COUNTED_LOOP_FUEL);
  });

  it("a spin loop ends OUTCOME_FUEL_EXHAUSTED at its limit, long before its wall clock", async () => {
    const limit = 5_000_000;
    const r = await daemon.execute({ target: moduleTarget(spinId), policy: policy({ fuelLimit: limit }) });
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_FUEL_EXHAUSTED);
    expect(r.exitCode).to.equal(undefined);
    expect(r.message).to.match(/fuel limit of 5000000/);
    // Checked at every loop header, each iteration costing 1 (the br): it stops within one iteration of the limit.
    expect(r.fuelConsumed)
      .to.be.at.least(limit)
      .and.below(limit + 2);
    expect(r.durationUs).to.be.below(10_000_000);
  });

  it("fuel is checked where wasmtime checks it: a limit reached at the last loop header stops the run, one more lets it finish past it", async () => {
    // The last loop header is reached with 1 + 2 + 5 * (LOOP_ITERATIONS - 1) consumed; wasmtime is out of fuel
    // when the counter has reached the limit at a check, and charges the last iteration without checking again.
    const atLastHeader = COUNTED_LOOP_FUEL - 5;
    const stopped = await daemon.execute({ target: moduleTarget(loopId), policy: policy({ fuelLimit: atLastHeader }) });
    expect(stopped.outcome).to.equal(Outcome.OUTCOME_FUEL_EXHAUSTED);
    expect(stopped.fuelConsumed).to.equal(atLastHeader);
    const finished = await daemon.execute({ target: moduleTarget(loopId), policy: policy({ fuelLimit: atLastHeader + 1 }) });
    expect(finished.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(finished.fuelConsumed).to.equal(COUNTED_LOOP_FUEL);
  });

  it("the same Rust run three times gives identical fuel", async () => {
    const request = {
      target: moduleTarget(echoId),
      stdin: Buffer.from('{"a":[1,2,3]}'),
      args: ["x", "y"],
      env: new Map([["GREETING", "hi"]]),
      policy: policy({ fuelLimit: 100_000_000 }),
    };
    const runs = [await daemon.execute(request), await daemon.execute(request), await daemon.execute(request)];
    for (const r of runs) expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
    expect(runs[0]!.stdout.toString()).to.equal('{"input":{"a":[1,2,3]},"args":["x","y"],"greeting":"hi"}\n');
    expect(runs[0]!.fuelConsumed).to.be.above(1000);
    expect(runs.map((r) => r.fuelConsumed)).to.deep.equal([runs[0]!.fuelConsumed, runs[0]!.fuelConsumed, runs[0]!.fuelConsumed]);
  });

  it("a run without a fuel limit is not metered: fuel_consumed is 0", async () => {
    const r = await daemon.execute({ target: moduleTarget(loopId), policy: policy() });
    expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.fuelConsumed).to.equal(0);
  });

  it("a policy above --max-fuel is refused with POLICY_CEILING_EXCEEDED", async () => {
    const refused = await rejection(daemon.execute({ target: moduleTarget(loopId), policy: policy({ fuelLimit: MAX_FUEL + 1 }) }));
    expect(refused.code).to.equal(status.PERMISSION_DENIED);
    expect(refused.reason).to.equal("POLICY_CEILING_EXCEEDED");
    expect(refused.details).to.match(/fuel_limit=1000000001/);
  });

  describe("receipts", () => {
    it("Execute's receipt verifies and binds its stdin, args and env, stdout, policy bytes and fuel", async () => {
      const signedPolicy = policy({ fuelLimit: 100_000_000 });
      const stdin = Buffer.from('{"order":42}');
      const r = await daemon.execute({
        target: moduleTarget(echoId),
        stdin,
        args: ["a"],
        env: new Map([["GREETING", "hey"]]),
        policy: signedPolicy,
      });
      expect(r.receipt, "a receipt").to.not.equal(undefined);
      expect(r.receipt!.keyId).to.equal("receipts-2026");
      const check = verifyReceipt(r.receipt!, receiptKey.publicPem);
      if (!check.ok) expect.fail(check.error);
      const receipt = check.receipt;
      expect(receipt.moduleId).to.equal(echoId);
      expect(receipt.policyId).to.equal("fuel-test");
      expect(receipt.policyKeyId).to.equal("authority");
      expect(Buffer.from(receipt.policySha256)).to.deep.equal(sha256(signedPolicy.policy));
      expect(Buffer.from(receipt.stdinSha256)).to.deep.equal(sha256(stdin));
      expect(Buffer.from(receipt.stdoutSha256)).to.deep.equal(sha256(r.stdout));
      expect(Buffer.from(receipt.stderrSha256)).to.deep.equal(sha256(r.stderr));
      expect(receipt.outcome).to.equal(Outcome.OUTCOME_EXITED);
      expect(receipt.exitCode).to.equal(0);
      expect(receipt.fuelConsumed).to.equal(r.fuelConsumed);
      expect(receipt.fuelLimit).to.equal(100_000_000);
      expect(receipt.durationUs).to.equal(r.durationUs);
      expect(receipt.startedAtUnixMs).to.be.within(Date.now() - 60_000, Date.now());
      expect(receipt.daemonVersion).to.match(/^\d+\.\d+\.\d+/);
      // Another stdin, or other args, gives other digests.
      const other = await daemon.execute({
        target: moduleTarget(echoId),
        stdin,
        args: ["b"],
        env: new Map([["GREETING", "hey"]]),
        policy: signedPolicy,
      });
      const otherReceipt = verifyReceipt(other.receipt!, receiptKey.publicPem);
      if (!otherReceipt.ok) expect.fail(otherReceipt.error);
      expect(Buffer.from(otherReceipt.receipt.argsEnvSha256)).to.not.deep.equal(Buffer.from(receipt.argsEnvSha256));
      expect(Buffer.from(otherReceipt.receipt.stdinSha256)).to.deep.equal(Buffer.from(receipt.stdinSha256));
    });

    it("a streamed run's receipt is in its finished event and binds the streamed stdout", async () => {
      const events = await daemon.stream({
        target: moduleTarget(echoId),
        stdin: Buffer.from("[7]"),
        policy: policy({ fuelLimit: 100_000_000 }),
      });
      const stdout = Buffer.concat(events.flatMap((e) => (e.event.event?.$case === "stdout" ? [e.event.event.value] : [])));
      const started = events.find((e) => e.event.event?.$case === "started")?.event.event;
      const finished = events.at(-1)?.event.event;
      if (finished?.$case !== "finished" || started?.$case !== "started") return expect.fail("expected started ... finished");
      expect(finished.value.stdout.byteLength).to.equal(0);
      const check = verifyReceipt(finished.value.receipt!, receiptKey.publicPem);
      if (!check.ok) return expect.fail(check.error);
      expect(stdout.toString()).to.contain('"input":[7]');
      expect(Buffer.from(check.receipt.stdoutSha256)).to.deep.equal(sha256(stdout));
      expect(check.receipt.executionId).to.equal(started.value.executionId);
      expect(check.receipt.fuelConsumed).to.equal(finished.value.fuelConsumed);
    });

    it("a tampered receipt fails verification, in code and with sandboxctl receipt verify", async () => {
      const r = await daemon.execute({ target: moduleTarget(loopId), policy: policy({ fuelLimit: 1_000_000 }) });
      const good = r.receipt!;
      const file = join(tmp.path, "receipt.json");
      await writeFile(file, JSON.stringify(ExecuteResponse.toJSON(r)));
      const ok = await run(process.execPath, [SANDBOXCTL, "receipt", "verify", "--key", receiptPubFile, file]);
      expect(JSON.parse(ok.stdout)).to.include({ moduleId: loopId, fuelConsumed: COUNTED_LOOP_FUEL, outcome: "OUTCOME_EXITED" });

      // Claim more fuel than was consumed: flip the receipt's bytes, keep the signature.
      const tampered = Buffer.from(good.receipt);
      tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 1;
      expect(verifyReceipt({ ...good, receipt: tampered }, receiptKey.publicPem).ok).to.equal(false);
      expect(verifyReceipt(good, authority.publicPem).ok, "another key").to.equal(false);
      const badFile = join(tmp.path, "tampered.json");
      await writeFile(badFile, JSON.stringify(SignedReceipt.toJSON({ ...good, receipt: tampered })));
      const refused = await run(process.execPath, [SANDBOXCTL, "receipt", "verify", "--key", receiptPubFile, badFile]).then(
        () => expect.fail("sandboxctl accepted a tampered receipt"),
        (e: unknown) => e as { code: number; stderr: string },
      );
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.match(/signature does not verify/);
    });

    it("docs/receipts.md embeds the Python verifier verbatim", async () => {
      expect(await readFile(RECEIPTS_DOC, "utf8")).to.contain("```python\n" + (await readFile(PYTHON_VERIFIER, "utf8")) + "```");
    });

    it("the Python verifier of docs/receipts.md verifies a real receipt, computes args_env_sha256 alike, and refuses a tampered one", async function () {
      const python = DEBIAN_PYTHON;
      const stdin = Buffer.from('{"py":true}');
      const env = new Map([
        ["GREETING", "grüß"],
        ["A", "1"],
      ]);
      const r = await daemon.execute({
        target: moduleTarget(echoId),
        stdin,
        args: ["ä", ""],
        env,
        policy: policy({ fuelLimit: 100_000_000 }),
      });
      const file = join(tmp.path, "py-receipt.json");
      await writeFile(file, JSON.stringify(ExecuteResponse.toJSON(r)));
      const out = await run(python, [PYTHON_VERIFIER, receiptPubFile, file]);
      const decoded = JSON.parse(out.stdout) as Record<string, unknown>;
      expect(decoded).to.include({
        module_id: echoId,
        outcome: "EXITED",
        exit_code: 0,
        fuel_consumed: r.fuelConsumed,
        stdout_sha256: sha256(r.stdout).toString("hex"),
        stdin_sha256: sha256(stdin).toString("hex"),
      });
      const argsEnv = await run(python, [
        "-c",
        `import sys; sys.path.insert(0, sys.argv[1]); import verify_receipt as v; print(v.args_env_sha256(["ä", ""], {"GREETING": "grüß", "A": "1"}))`,
        join(PYTHON_VERIFIER, ".."),
      ]);
      expect(argsEnv.stdout.trim()).to.equal(decoded["args_env_sha256"]);
      const tampered = SignedReceipt.toJSON({ ...r.receipt!, receipt: Buffer.from(r.receipt!.receipt).fill(0, 0, 2) });
      await writeFile(file, JSON.stringify(tampered));
      const refused = await run(python, [PYTHON_VERIFIER, receiptPubFile, file]).then(
        () => expect.fail("the Python verifier accepted a tampered receipt"),
        (e: unknown) => e as { code: number },
      );
      expect(refused.code).to.equal(1);
    });

    it("a compile error's response carries a receipt too", async () => {
      const r = await daemon.execute({ target: { $case: "source", value: 'fn main() { let x: u32 = "no"; }' }, policy: policy() });
      expect(r.outcome).to.equal(Outcome.OUTCOME_COMPILE_ERROR);
      const check = verifyReceipt(r.receipt!, receiptKey.publicPem);
      if (!check.ok) return expect.fail(check.error);
      expect(check.receipt.outcome).to.equal(Outcome.OUTCOME_COMPILE_ERROR);
    });
  });

  it("a module the rewrite cannot meter is refused with INVALID_WASM for a metered run, and still runs unmetered", async () => {
    const wabt = await wabtInit();
    const module = wabt.parseWat(
      "simd.wat",
      `(module (memory (export "memory") 1) (func (export "_start") (drop (v128.const i64x2 0 0))))`,
      { simd: true },
    );
    const wasm = Buffer.from(module.toBinary({}).buffer);
    module.destroy();
    const simd = await daemon.compile({ input: { $case: "wasm", value: wasm } });
    expect(simd.ok).to.equal(true);
    const refused = await rejection(daemon.execute({ target: moduleTarget(simd.moduleId), policy: policy({ fuelLimit: 1000 }) }));
    expect(refused.code).to.equal(status.INVALID_ARGUMENT);
    expect(refused.reason).to.equal("INVALID_WASM");
    expect(refused.details).to.match(/unsupported for metering: operator 0xfd/);
    const plain = await daemon.execute({ target: moduleTarget(simd.moduleId), policy: policy() });
    expect(plain.outcome).to.equal(Outcome.OUTCOME_EXITED);
    // The daemon is still there for everyone else.
    expect((await daemon.execute({ target: moduleTarget(loopId), policy: policy({ fuelLimit: 1_000_000 }) })).fuelConsumed).to.equal(
      COUNTED_LOOP_FUEL,
    );
  });

  it("refuses to start with a receipt key it cannot use, rather than run without receipts", async () => {
    const rsa = join(tmp.path, "rsa.key");
    await writeFile(rsa, generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({ type: "pkcs8", format: "pem" }));
    for (const [file, why] of [
      [join(tmp.path, "absent.key"), /cannot read the receipt key/],
      [rsa, /not Ed25519/],
    ] as const) {
      const error = await startDaemon({ args: ["--allow-unsigned", "--receipt-key", file] }).then(
        async (d) => {
          await d.stop();
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(String(error)).to.match(/exited with 1 before listening/);
      expect(String(error)).to.match(why);
    }
  });

  it("a worker's instance made ahead is of the variant the next run needs: metered and plain runs alternate exactly", async () => {
    // One worker, so every run finds the instance its predecessor left made ahead.
    const single = await startDaemon({ args: ["--allow-unsigned", "--workers", "1", "--default-fuel-limit", "1000000"] });
    const plainDaemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "1"] });
    try {
      const wasm = await assemble(COUNTED_LOOP_WAT);
      const spin = await assemble(SPIN_WAT);
      const [a, b] = [
        await single.compile({ input: { $case: "wasm", value: wasm } }),
        await single.compile({ input: { $case: "wasm", value: spin } }),
      ];
      const fuel: number[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await single.execute({ target: moduleTarget(a.moduleId) });
        expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
        fuel.push(r.fuelConsumed);
        // A fuel-exhausted run in between leaves its worker serving, with an instance of the spinner made ahead.
        if (i === 1) expect((await single.execute({ target: moduleTarget(b.moduleId) })).outcome).to.equal(Outcome.OUTCOME_FUEL_EXHAUSTED);
      }
      expect(fuel).to.deep.equal([COUNTED_LOOP_FUEL, COUNTED_LOOP_FUEL, COUNTED_LOOP_FUEL, COUNTED_LOOP_FUEL]);
      const plain = await plainDaemon.compile({ input: { $case: "wasm", value: wasm } });
      for (let i = 0; i < 2; i++) expect((await plainDaemon.execute({ target: moduleTarget(plain.moduleId) })).fuelConsumed).to.equal(0);
    } finally {
      await single.stop();
      await plainDaemon.stop();
    }
  });

  it("alternating metered and unmetered runs of one module on one worker each get their own variant", async () => {
    const keys = join(tmp.path, "keys");
    const one = await startDaemon({ args: ["--trusted-keys", keys, "--workers", "1"] });
    try {
      const loop = await one.compile({ input: { $case: "wasm", value: await assemble(COUNTED_LOOP_WAT) } });
      const seen: number[] = [];
      for (const limit of [0, 1_000_000, 1_000_000, 0, 0, 1_000_000]) {
        const r = await one.execute({ target: moduleTarget(loop.moduleId), policy: policy({ fuelLimit: limit }) });
        expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
        seen.push(r.fuelConsumed);
      }
      expect(seen).to.deep.equal([0, COUNTED_LOOP_FUEL, COUNTED_LOOP_FUEL, 0, 0, COUNTED_LOOP_FUEL]);
    } finally {
      await one.stop();
    }
  });

  it("without --receipt-key there is no receipt", async () => {
    const plain = await startDaemon();
    try {
      const loop = await plain.compile({ input: { $case: "wasm", value: await assemble(COUNTED_LOOP_WAT) } });
      const r = await plain.execute({ target: moduleTarget(loop.moduleId) });
      expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
      expect(r.receipt).to.equal(undefined);
    } finally {
      await plain.stop();
    }
  });
});
