import { realpath, stat } from "node:fs/promises";
import { isAbsolute, posix, sep } from "node:path";
import { SandboxError } from "../errors/sandbox-error.js";
import type { Mount } from "../gen/pb/sandbox/v1/sandbox.js";
import type { WasiMount } from "../runtime/wasi/types.js";

/** A mount as the runtime must apply it: host path already resolved (realpath, symlinks followed and checked), guest path validated. */
export type EffectiveMount = WasiMount;

/**
 * Returns why `guestPath` is not an acceptable guest mount point, or undefined if
 * it is. Guest paths must be absolute and already normalized ("/data", not
 * "data", "/data/", "/a//b" or "/a/../b"): the runtime matches guest paths by
 * prefix, so two spellings of one directory would be two different mounts.
 */
export function guestPathProblem(guestPath: string): string | undefined {
  if (guestPath === "") return "guest_path is empty";
  if (guestPath.includes("\0")) return "guest_path contains a NUL byte";
  if (!guestPath.startsWith("/")) return "guest_path must be absolute";
  const normalized = posix.normalize(guestPath);
  const canonical = normalized.length > 1 && normalized.endsWith("/") ? normalized.slice(0, -1) : normalized;
  if (canonical !== guestPath) return `guest_path must be normalized (did you mean "${canonical}"?)`;
  return undefined;
}

/** True if one guest path is the other or lies beneath it. */
function guestPathsOverlap(a: string, b: string): boolean {
  if (a === b || a === "/" || b === "/") return true;
  return a.startsWith(b + "/") || b.startsWith(a + "/");
}

/**
 * The host-independent part of check 6 (also run by `sandboxctl policy sign` and
 * `verify`): every guest path is well-formed, and no two mounts share a guest path
 * or nest (nesting would make one mount shadow part of another, and which one
 * wins would depend on the runtime). Throws POLICY_MOUNT_DENIED naming the mount.
 */
export function checkGuestPaths(mounts: readonly Mount[]): void {
  for (const [i, mount] of mounts.entries()) {
    const problem = guestPathProblem(mount.guestPath);
    if (problem !== undefined) throw mountDenied(mount, problem);
    for (const earlier of mounts.slice(0, i)) {
      if (guestPathsOverlap(earlier.guestPath, mount.guestPath)) {
        const what = earlier.guestPath === mount.guestPath ? "is mounted twice" : `overlaps the mount at "${earlier.guestPath}"`;
        throw mountDenied(mount, `guest_path ${what}; mounts may neither repeat nor nest`);
      }
    }
  }
}

/**
 * Check 6: guest paths pass checkGuestPaths, and every host path exists, is a
 * directory, and lies inside an allowed root once every symlink is resolved.
 * Returns the mounts with host paths replaced by their realpath, so the runtime
 * opens the directory that was checked, not whatever the symlink names later.
 */
export async function resolveMounts(mounts: readonly Mount[], allowedRoots: readonly string[]): Promise<EffectiveMount[]> {
  // Guest paths first: that is pure validation and needs no host file system access.
  checkGuestPaths(mounts);
  const roots = await resolveRoots(allowedRoots);
  const resolved: EffectiveMount[] = [];
  for (const mount of mounts) {
    resolved.push({ hostPath: await resolveHostPath(mount, roots), guestPath: mount.guestPath, writable: mount.writable });
  }
  return resolved;
}

/** Realpaths of the operator's roots; a root that does not exist allows nothing. */
async function resolveRoots(allowedRoots: readonly string[]): Promise<string[]> {
  const roots: string[] = [];
  for (const root of allowedRoots) {
    if (!isAbsolute(root)) continue;
    try {
      roots.push(await realpath(root));
    } catch {
      // A root that vanished cannot contain anything; the mount check below reports the mount.
    }
  }
  return roots;
}

async function resolveHostPath(mount: Mount, roots: readonly string[]): Promise<string> {
  if (mount.hostPath === "" || mount.hostPath.includes("\0") || !isAbsolute(mount.hostPath)) {
    // Relative host paths would resolve against the daemon's working directory, which the signer cannot know.
    throw mountDenied(mount, "host_path must be a non-empty absolute path");
  }
  let real: string;
  try {
    real = await realpath(mount.hostPath);
  } catch (e: unknown) {
    const missing = e instanceof Error && "code" in e && (e.code === "ENOENT" || e.code === "ENOTDIR");
    throw mountDenied(mount, missing ? `host_path ${mount.hostPath} does not exist` : `host_path ${mount.hostPath} cannot be resolved`, e);
  }
  if (!roots.some((root) => isInside(real, root))) {
    throw mountDenied(mount, `host_path ${mount.hostPath} (resolved to ${real}) is outside the allowed roots`);
  }
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(real)).isDirectory();
  } catch (e: unknown) {
    throw mountDenied(mount, `host_path ${mount.hostPath} cannot be inspected`, e);
  }
  if (!isDirectory) throw mountDenied(mount, `host_path ${mount.hostPath} is not a directory`);
  return real;
}

function isInside(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

function mountDenied(mount: Mount, problem: string, cause?: unknown): SandboxError {
  return new SandboxError("POLICY_MOUNT_DENIED", `mount "${mount.guestPath}": ${problem}`, {
    cause,
    metadata: { mount: mount.guestPath },
  });
}
