import { expect } from "chai";
import { createHash, generateKeyPairSync } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseReceiptFile } from "../../src/cli/sandboxctl-receipt.js";
import { Outcome, Receipt, SignedReceipt } from "../../src/gen/pb/sandbox/v1/sandbox.js";
import { argsEnvSha256, OutputDigest, ReceiptSigner, verifyReceipt } from "../../src/receipt/receipt.js";
import { tempDir } from "./policy-fixtures.js";

describe("receipts", () => {
  let tmp: { path: string; remove: () => Promise<void> };
  let signer: ReceiptSigner;
  let publicPem: string;

  before(async () => {
    tmp = await tempDir("receipt-unit");
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const file = join(tmp.path, "daemon-receipts.key");
    await writeFile(file, privateKey.export({ type: "pkcs8", format: "pem" }));
    signer = await ReceiptSigner.load(file);
    publicPem = publicKey.export({ type: "spki", format: "pem" }).toString();
  });

  after(async () => {
    await tmp.remove();
  });

  const receipt = (extra: Partial<Receipt> = {}): Receipt =>
    Receipt.fromPartial({ executionId: "e", moduleId: "m", outcome: Outcome.OUTCOME_EXITED, exitCode: 0, fuelConsumed: 42, ...extra });

  it("the key id is the key file's name without .key; a receipt signs and verifies as-is", () => {
    expect(signer.keyId).to.equal("daemon-receipts");
    const signed = signer.sign(receipt());
    const check = verifyReceipt(signed, publicPem);
    if (!check.ok) expect.fail(check.error);
    expect(check.receipt).to.include({ executionId: "e", fuelConsumed: 42, exitCode: 0 });
  });

  it("any changed byte, another key, or a signature of other bytes fails verification", () => {
    const signed = signer.sign(receipt());
    for (let i = 0; i < signed.receipt.length; i++) {
      const bytes = Buffer.from(signed.receipt);
      bytes[i] = (bytes[i] ?? 0) ^ 0x01;
      expect(verifyReceipt({ ...signed, receipt: bytes }, publicPem).ok, `byte ${i}`).to.equal(false);
    }
    const other = generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }).toString();
    expect(verifyReceipt(signed, other).ok).to.equal(false);
    const more = signer.sign(receipt({ fuelConsumed: 43 }));
    expect(verifyReceipt({ ...more, signature: signed.signature }, publicPem).ok).to.equal(false);
  });

  it("refuses a key that is not an Ed25519 public key, with a reason", () => {
    expect(verifyReceipt(signer.sign(receipt()), "not a key")).to.deep.include({ ok: false });
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ type: "spki", format: "pem" }).toString();
    const check = verifyReceipt(signer.sign(receipt()), rsa);
    expect(check.ok).to.equal(false);
    if (!check.ok) expect(check.error).to.match(/rsa, not Ed25519/);
  });

  it("a signed receipt of bytes that are not a Receipt is refused after its signature verified", async () => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const file = join(tmp.path, "junk.key");
    await writeFile(file, privateKey.export({ type: "pkcs8", format: "pem" }));
    const junk = Buffer.from([0xff, 0xff, 0xff]);
    const { sign } = await import("node:crypto");
    const check = verifyReceipt(
      { receipt: junk, keyId: "junk", signature: sign(null, junk, privateKey) },
      publicKey.export({ type: "spki", format: "pem" }).toString(),
    );
    expect(check.ok).to.equal(false);
    if (!check.ok) expect(check.error).to.match(/do not decode as a Receipt/);
  });

  it("the daemon's key must exist, be PEM, and be Ed25519", async () => {
    await expectLoadError(join(tmp.path, "missing.key"), /cannot read the receipt key/);
    const junk = join(tmp.path, "junk.pem");
    await writeFile(junk, "hello");
    await expectLoadError(junk, /not a PEM private key/);
    const rsa = join(tmp.path, "rsa.key");
    await writeFile(rsa, generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({ type: "pkcs8", format: "pem" }));
    await expectLoadError(rsa, /rsa key, not Ed25519/);
  });

  it("args and env: the canonical encoding is independent of env order and tells args from env", () => {
    const a = argsEnvSha256(
      ["x"],
      new Map([
        ["B", "2"],
        ["A", "1"],
      ]),
    );
    expect(Buffer.from(a)).to.deep.equal(
      Buffer.from(
        argsEnvSha256(
          ["x"],
          new Map([
            ["A", "1"],
            ["B", "2"],
          ]),
        ),
      ),
    );
    expect(Buffer.from(argsEnvSha256(["x", "y"], new Map()))).to.not.deep.equal(Buffer.from(argsEnvSha256(["xy"], new Map())));
    expect(Buffer.from(argsEnvSha256(["A", "1"], new Map()))).to.not.deep.equal(Buffer.from(argsEnvSha256([], new Map([["A", "1"]]))));
    // The documented layout, spelled out.
    const u32 = (n: number): Buffer => Buffer.from([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
    const s = (t: string): Buffer => Buffer.concat([u32(Buffer.byteLength(t)), Buffer.from(t)]);
    const expected = createHash("sha256")
      .update(Buffer.concat([u32(1), s("x"), u32(2), s("A"), s("1"), s("B"), s("2")]))
      .digest();
    expect(Buffer.from(a)).to.deep.equal(expected);
  });

  it("an output digest over chunks equals the digest of their concatenation", () => {
    const d = new OutputDigest();
    d.update(Buffer.from("hel"));
    d.update(Buffer.from("lo"));
    expect(Buffer.from(d.digest())).to.deep.equal(createHash("sha256").update("hello").digest());
  });

  it("receipt files: a SignedReceipt or an ExecuteResponse in proto3 JSON; anything else is an error sentence", () => {
    const signed = signer.sign(receipt());
    const json = SignedReceipt.toJSON(signed) as Record<string, unknown>;
    expect(parseReceiptFile(JSON.stringify(json))).to.deep.include({ keyId: "daemon-receipts" });
    expect(parseReceiptFile(JSON.stringify({ outcome: "OUTCOME_EXITED", receipt: json }))).to.deep.include({ keyId: "daemon-receipts" });
    expect(parseReceiptFile("{")).to.match(/^not JSON/);
    expect(parseReceiptFile("[]")).to.match(/JSON object/);
    expect(parseReceiptFile(JSON.stringify({ outcome: "OUTCOME_EXITED" }))).to.match(/no receipt/);
    expect(parseReceiptFile(JSON.stringify({ receipt: "AAAA" }))).to.match(/no signature/);
  });
});

async function expectLoadError(file: string, pattern: RegExp): Promise<void> {
  const error = await ReceiptSigner.load(file).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).to.be.instanceOf(Error);
  expect((error as Error).message).to.match(pattern);
}
