#!/usr/bin/env node
/**
 * sandboxctl: the policy authority's tool. Generates Ed25519 key pairs, signs
 * policies written as JSON, and verifies signed policy files the way the daemon
 * does; and the operator's, managing a running daemon's module cache over its
 * admin socket. A thin adapter: all checks live in src/policy/ and the daemon.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { SandboxError } from "../errors/sandbox-error.js";
import { Policy } from "../gen/pb/sandbox/v1/sandbox.js";
import { checkNetworkGrant } from "../policy/authorize.js";
import { checkGuestPaths } from "../policy/mounts.js";
import { parsePolicyJson } from "../policy/policy-json.js";
import { formatSignedPolicyFile, parseSignedPolicyFile, signPolicy } from "../policy/signed-policy-file.js";
import { keyIdProblem, PUBLIC_KEY_SUFFIX, TrustedKeys } from "../policy/trusted-keys.js";
import { checkValidity } from "../policy/validity.js";
import { checkMountCount, checkPolicyBytes, verifySignedPolicy } from "../policy/verify-signature.js";
import { SANDBOXD_VERSION } from "../version.js";
import { ADMIN_USAGE, adminCommand } from "./sandboxctl-admin.js";
import { RECEIPT_USAGE, receiptCommand } from "./sandboxctl-receipt.js";
import { CLIENT_USAGE, clientCommand, noDaemonExit } from "./sandboxctl-client.js";
import { REPAIR_USAGE, repairCommand } from "./sandboxctl-repair.js";
import { UsageError } from "./usage-error.js";

/** File name suffix of a private key written by keygen. */
const PRIVATE_KEY_SUFFIX = ".key";
/** Private keys are readable by their owner only. */
const PRIVATE_KEY_MODE = 0o600;
/** Public keys are meant to be copied around. */
const PUBLIC_KEY_MODE = 0o644;

/** Exit status when a policy or key fails a check. */
const EXIT_FAILED = 1;
/** Exit status for a malformed command line. */
const EXIT_USAGE = 2;

/** Commands that talk to a running daemon's main socket (src/cli/sandboxctl-client.ts). */
const CLIENT_COMMANDS = new Set(["compile", "run", "module-id", "health", "info"]);

/** Units --expires-in takes after its number, in seconds. */
const DURATION_UNITS_S: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86_400 };

const USAGE = `usage:
${CLIENT_USAGE}
  sandboxctl keygen --id ID --out DIR
      writes DIR/ID.key (PKCS#8 PEM, mode 0600) and DIR/ID.pub (SPKI PEM); never overwrites
  sandboxctl policy sign --key FILE.key [--id ID] [--expires-in DURATION] [--out FILE] POLICY.json
      signs a policy written as JSON in the shape of sandbox.v1.Policy (camelCase or snake_case);
      --id defaults to the key file's name (ID.key); --expires-in sets expires_at_unix to now + DURATION
      (90s, 15m, 1h, 7d, or plain seconds); prints to stdout unless --out is given
  sandboxctl policy verify --keys DIR [--now UNIX_SECONDS] SIGNED.json
      checks key, signature, encoding and validity window; prints the decoded policy as JSON
${ADMIN_USAGE}
${RECEIPT_USAGE}
${REPAIR_USAGE}
  sandboxctl --version
See docs/policy.md and README.md ("Managing the module cache").`;

async function main(argv: string[]): Promise<number> {
  const [command, sub] = argv;
  if (command === "compile" && argv.includes("--repair")) return repairCommand(argv.slice(1));
  if (command !== undefined && CLIENT_COMMANDS.has(command)) return clientCommand(command, argv.slice(1));
  if (command === "--version" || command === "version") {
    process.stdout.write(`sandboxctl ${SANDBOXD_VERSION}\n`);
    return 0;
  }
  if (command === "keygen") return keygen(argv.slice(1));
  if (command === "policy" && sub === "sign") return policySign(argv.slice(2));
  if (command === "policy" && sub === "verify") return policyVerify(argv.slice(2));
  if (command === "admin") return adminCommand(argv.slice(1));
  if (command === "receipt") return receiptCommand(argv.slice(1));
  if (command === "help" || command === "--help" || command === "-h") {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  throw new UsageError(command === undefined ? "no command given" : `unknown command: ${argv.slice(0, 2).join(" ")}`);
}

async function keygen(args: string[]): Promise<number> {
  const { values } = parse(args, { id: { type: "string" }, out: { type: "string" } }, false);
  const id = required(values.id, "--id");
  const out = required(values.out, "--out");
  const problem = keyIdProblem(id);
  if (problem !== undefined) throw new UsageError(problem);
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  await mkdir(out, { recursive: true });
  const keyFile = join(out, id + PRIVATE_KEY_SUFFIX);
  const pubFile = join(out, id + PUBLIC_KEY_SUFFIX);
  // "wx": refuse to overwrite; replacing a signing key by accident would orphan every policy signed with it.
  // The mode is applied at creation, so the private key is never readable by others even for an instant.
  for (const file of [keyFile, pubFile]) {
    if (await stat(file).catch(() => undefined))
      return failed(
        `${file} already exists; keygen never replaces a key (every policy signed with it would stop verifying). Pick another --id or remove it yourself`,
      );
  }
  await writeKeyFile(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }), PRIVATE_KEY_MODE);
  await writeKeyFile(pubFile, publicKey.export({ type: "spki", format: "pem" }), PUBLIC_KEY_MODE);
  process.stderr.write(`wrote ${keyFile} (private, keep secret) and ${pubFile} (copy into the daemon's --trusted-keys directory)\n`);
  return 0;
}

async function policySign(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    { key: { type: "string" }, id: { type: "string" }, out: { type: "string" }, "expires-in": { type: "string" } },
    true,
  );
  const keyFile = required(values.key, "--key");
  const id = values.id ?? basename(keyFile).replace(/\.key$/, "");
  const problem = keyIdProblem(id);
  if (problem !== undefined) throw new UsageError(problem);
  const input = single(positionals, "POLICY.json");

  const privateKey = await readPrivateKey(keyFile);
  const json = await readJson(input);
  const parsed = parsePolicyJson(json);
  if (!parsed.ok) return failed(`${input}: ${parsed.error}`);
  const policy = parsed.value;
  if (values["expires-in"] !== undefined) {
    const seconds = parseDurationS(values["expires-in"]);
    if (seconds instanceof Error) throw new UsageError(seconds.message);
    policy.expiresAtUnix = Math.floor(Date.now() / 1000) + seconds;
  }
  if (policy.expiresAtUnix === 0) {
    throw new SandboxError(
      "POLICY_EXPIRED",
      `${input} has no expires_at_unix; an expiry is required: sign it at use with --expires-in (e.g. --expires-in 15m)`,
    );
  }
  // Refuse to sign what every daemon would refuse anyway: better to learn it here than at run time.
  checkValidity(policy, Date.now());
  checkMountCount(policy);
  checkGuestPaths(policy.mounts);
  checkNetworkGrant(policy);
  const signed = signPolicy(policy, privateKey, id);
  checkPolicyBytes(signed.policy, id);

  const text = formatSignedPolicyFile(signed);
  if (values.out === undefined) process.stdout.write(text);
  else await writeFile(values.out, text);
  return 0;
}

async function policyVerify(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { keys: { type: "string" }, now: { type: "string" } }, true);
  const dir = required(values.keys, "--keys");
  const input = single(positionals, "SIGNED.json");
  let nowMs = Date.now();
  if (values.now !== undefined) {
    const now = Number(values.now);
    if (!Number.isSafeInteger(now)) throw new UsageError("--now must be unix seconds");
    nowMs = now * 1000;
  }
  const keys = await TrustedKeys.load(dir, (message) => process.stderr.write(`sandboxctl: warning: ${message}\n`));
  const parsed = parseSignedPolicyFile(await readText(input));
  if (!parsed.ok) return failed(`${input}: ${parsed.error}`);
  const policy = verifySignedPolicy(parsed.value, keys);
  checkValidity(policy, nowMs);
  checkGuestPaths(policy.mounts);
  checkNetworkGrant(policy);
  process.stdout.write(JSON.stringify(Policy.toJSON(policy), null, 2) + "\n");
  process.stderr.write(`OK: signed by "${parsed.value.keyId}", valid until ${new Date(policy.expiresAtUnix * 1000).toISOString()}\n`);
  return 0;
}

/** Parses `90s`, `15m`, `1h`, `7d` or plain seconds into a positive number of seconds. */
export function parseDurationS(text: string): number | Error {
  const match = /^(\d+)([smhd]?)$/.exec(text.trim());
  const seconds = match ? Number(match[1]) * (DURATION_UNITS_S[match[2] || "s"] ?? 1) : NaN;
  if (!Number.isSafeInteger(seconds) || seconds <= 0)
    return new Error(`--expires-in takes a positive duration such as 90s, 15m, 1h or 7d (or seconds), got ${JSON.stringify(text)}`);
  return seconds;
}

/** Writes a new key file with its mode from the start; "wx" refuses a file that appeared since the check. */
async function writeKeyFile(file: string, pem: string | Buffer, mode: number): Promise<void> {
  try {
    await writeFile(file, pem, { mode, flag: "wx" });
  } catch (e: unknown) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST")
      throw new Error(`${file} already exists; keygen never replaces a key`, { cause: e });
    throw e;
  }
}

type Options = NonNullable<Parameters<typeof parseArgs>[0]>["options"];

function parse<O extends Options>(args: string[], options: O, allowPositionals: boolean) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (e: unknown) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

function required(value: string | boolean | undefined, flag: string): string {
  if (typeof value !== "string" || value === "") throw new UsageError(`${flag} is required`);
  return value;
}

function single(positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected exactly one ${what} argument`);
  return positionals[0] as string;
}

async function readText(file: string): Promise<string> {
  // "-" reads stdin so policies can be piped from a generator without a temp file.
  if (file !== "-") return readFile(file, "utf8");
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks).toString("utf8");
}

async function readJson(file: string): Promise<unknown> {
  const text = await readText(file);
  try {
    return JSON.parse(text);
  } catch (e: unknown) {
    throw new UsageError(`${file} is not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
}

async function readPrivateKey(file: string): Promise<KeyObject> {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: await readFile(file, "utf8"), format: "pem" });
  } catch (e: unknown) {
    throw new UsageError(`${file} is not a PEM private key: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (key.asymmetricKeyType !== "ed25519") throw new UsageError(`${file} is a ${key.asymmetricKeyType ?? "unknown"} key, expected ed25519`);
  return key;
}

function failed(message: string): number {
  process.stderr.write(`sandboxctl: ${message}\n`);
  return EXIT_FAILED;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const noDaemon = noDaemonExit(e);
    if (noDaemon !== undefined) {
      process.exitCode = noDaemon;
    } else if (e instanceof UsageError) {
      process.stderr.write(`sandboxctl: ${e.message}\n\n${USAGE}\n`);
      process.exitCode = EXIT_USAGE;
    } else if (e instanceof SandboxError) {
      process.stderr.write(`sandboxctl: ${e.reason}: ${e.message}\n`);
      process.exitCode = EXIT_FAILED;
    } else {
      process.stderr.write(`sandboxctl: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = EXIT_FAILED;
    }
  },
);
