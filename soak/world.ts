/**
 * Everything a soak runs against, in one mkdtemp directory: the trusted keys,
 * the mount root with a read-only, a writable and a shared mount, files around
 * them whose hash must not change, the daemon's own temp dir, and the daemon
 * itself (the real CLI, a child process on a throwaway unix socket).
 */
import { createHash } from "node:crypto";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type SandboxClient } from "../src/grpc/client.js";
import type { Mount, Policy, SignedPolicy } from "../src/gen/grpc/sandbox/v1/sandbox.js";
import { startDaemon, type TestDaemon } from "../test/helpers/daemon.js";
import { makeKey, signed, wire, writePublicKeys, type TestKey } from "../test/unit/policy-fixtures.js";

/** The soak guest's source (read from the repo, not from dist/). */
export const GUEST_SOURCE_PATH = fileURLToPath(new URL("../../soak/fixtures/soak_guest.rs", import.meta.url));
/** Key id every ordinary call's policy is signed with; trusted for the whole soak. */
export const MAIN_KEY_ID = "soak";
/** Key id that key-rotation calls add to and remove from the trusted set mid-load. */
export const ROTATING_KEY_ID = "soak-rotating";
/** How long each policy the soak signs stays valid (each call signs its own). */
const POLICY_LIFETIME_S = 3600;
/** Operator ceiling on timeout_ms the soak's daemon runs with (a policy above it is a refusal the soak expects). */
export const SOAK_MAX_TIMEOUT_MS = 120_000;
/** Worker threads of the soak's daemon: fewer than the calls in flight, so runs also queue. */
export const SOAK_WORKERS = 4;

/** The soak's directories. */
export interface WorldPaths {
  readonly root: string;
  readonly keys: string;
  /** The daemon's only --allow-mount-root. */
  readonly mounts: string;
  readonly ro: string;
  readonly rw: string;
  readonly shared: string;
  /** Outside every mount (and outside the mount root); a symlink in rw points here. */
  readonly outside: string;
  /** The daemon's TMPDIR (rustc's work dirs): must be empty once the soak has settled. */
  readonly tmp: string;
}

/** A started soak world. */
export interface World {
  readonly paths: WorldPaths;
  readonly daemon: TestDaemon;
  /** A second client with call options (deadlines) and raw streams (cancel, pause). */
  readonly client: SandboxClient;
  readonly mainKey: TestKey;
  readonly rotatingKey: TestKey;
  /** Contents of ro/input.txt, which guests hash. */
  readonly roInput: Buffer;
  /** A policy signed with the main key (or `key`), valid for the next hour. */
  policy(fields: Partial<Policy>, key?: TestKey): SignedPolicy;
  /** Read-only /ro and writable /rw. */
  readonly roRwMounts: Mount[];
  /** The shared writable /shared that append runs write to. */
  readonly sharedMounts: Mount[];
  /** Stops the daemon and removes every directory. */
  close(): Promise<void>;
}

/** Makes the directories and files, starts the daemon, and returns the world. */
export async function createWorld(): Promise<World> {
  const root = await mkdtemp(path.join(tmpdir(), "sandboxd-soak-"));
  const paths: WorldPaths = {
    root,
    keys: path.join(root, "keys"),
    mounts: path.join(root, "mounts"),
    ro: path.join(root, "mounts", "ro"),
    rw: path.join(root, "mounts", "rw"),
    shared: path.join(root, "mounts", "shared"),
    outside: path.join(root, "outside"),
    tmp: path.join(root, "tmp"),
  };
  let daemon: TestDaemon | undefined;
  try {
    for (const dir of [
      paths.keys,
      paths.ro,
      paths.rw,
      paths.shared,
      path.join(paths.ro, "sub"),
      path.join(paths.outside, "dir"),
      paths.tmp,
    ]) {
      await mkdir(dir, { recursive: true });
    }
    const roInput = Buffer.from(`read-only input of this soak, ${root}\n`);
    await writeFile(path.join(paths.ro, "input.txt"), roInput);
    await writeFile(path.join(paths.ro, "sub", "nested.txt"), "nested\n");
    await writeFile(path.join(paths.mounts, "sentinel.txt"), "beside the mounts, never mounted\n");
    await writeFile(path.join(paths.outside, "secret.txt"), "outside every mount\n");
    await writeFile(path.join(paths.outside, "dir", "x.txt"), "x\n");
    // A way out for a guest that follows symlinks itself: the host must refuse it.
    await symlink("../../outside", path.join(paths.rw, "escape"));
    const mainKey = makeKey(MAIN_KEY_ID);
    const rotatingKey = makeKey(ROTATING_KEY_ID);
    await writePublicKeys(paths.keys, [mainKey]);
    daemon = await startDaemon({
      args: [
        "--trusted-keys",
        paths.keys,
        "--allow-mount-root",
        paths.mounts,
        "--workers",
        String(SOAK_WORKERS),
        "--max-timeout-ms",
        String(SOAK_MAX_TIMEOUT_MS),
      ],
      env: { TMPDIR: paths.tmp },
    });
    const client = connect(`unix://${daemon.socketPath}`);
    const started = daemon;
    return {
      paths,
      daemon,
      client,
      mainKey,
      rotatingKey,
      roInput,
      policy: (fields, key = mainKey) =>
        wire(signed({ policyId: "soak", expiresAtUnix: Math.floor(Date.now() / 1000) + POLICY_LIFETIME_S, ...fields }, key)),
      roRwMounts: [
        { hostPath: paths.ro, guestPath: "/ro", writable: false },
        { hostPath: paths.rw, guestPath: "/rw", writable: true },
      ],
      sharedMounts: [{ hostPath: paths.shared, guestPath: "/shared", writable: true }],
      close: async () => {
        client.close();
        await started.stop();
        await rm(root, { recursive: true, force: true });
      },
    };
  } catch (e: unknown) {
    await daemon?.stop();
    await rm(root, { recursive: true, force: true });
    throw e;
  }
}

/** Adds (true) or removes (false) the rotating key's file; the daemon sees the change at its next SIGHUP. */
export async function setRotatingKeyTrusted(world: World, trusted: boolean): Promise<void> {
  if (trusted) await writePublicKeys(world.paths.keys, [world.rotatingKey]);
  else await unlink(path.join(world.paths.keys, `${ROTATING_KEY_ID}.pub`));
}

/**
 * A hash of everything guests must not change: the whole world except the writable mounts' contents,
 * the keys (rotated on purpose) and the daemon's temp dir. Names, types, modes, sizes, mtimes, contents
 * and symlink targets all count, so a file created, removed, written or touched outside a grant shows.
 */
export async function sentinelHash(paths: WorldPaths): Promise<string> {
  const skip = new Set([paths.keys, paths.tmp]);
  const contentsSkipped = new Set([paths.rw, paths.shared]);
  const hash = createHash("sha256");
  const walk = async (dir: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const full = path.join(dir, name);
      if (skip.has(full)) continue;
      const st = await lstat(full);
      hash.update(`${path.relative(paths.root, full)}\0${st.mode}\0`);
      if (contentsSkipped.has(full)) continue;
      hash.update(`${st.size}\0${st.mtimeMs}\0`);
      if (st.isSymbolicLink()) hash.update(await readlink(full));
      else if (st.isFile()) hash.update(await readFile(full));
      else if (st.isDirectory()) await walk(full);
    }
  };
  await walk(paths.root);
  return hash.digest("hex");
}

/** Files left anywhere under `dir` (recursively), as paths relative to it. */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const full = path.join(d, entry.name);
      out.push(path.relative(dir, full));
      if (entry.isDirectory()) await walk(full);
    }
  };
  await walk(dir);
  return out;
}

/** The soak guest's Rust source. */
export async function guestSource(): Promise<string> {
  return readFile(GUEST_SOURCE_PATH, "utf8");
}
