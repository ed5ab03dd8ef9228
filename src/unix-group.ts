import { execa } from "execa";

/** Wall-clock budget of looking a group up (getent may ask a directory service). */
const GROUP_LOOKUP_TIMEOUT_MS = 5_000;

/**
 * The gid of a group given by number or by name. Names go through `getent group`,
 * so groups from LDAP or systemd-userdb resolve as they do for every other tool.
 */
export async function resolveGroup(group: string): Promise<number | Error> {
  if (/^\d+$/.test(group)) return Number(group);
  try {
    const { stdout } = await execa("getent", ["group", group], {
      timeout: GROUP_LOOKUP_TIMEOUT_MS,
      extendEnv: false,
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" },
    });
    const gid = stdout.split("\n")[0]?.split(":")[2];
    if (gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  } catch {
    // exit 2: no such group; anything else is reported the same way below
  }
  return new Error(`no group named ${JSON.stringify(group)} (getent group ${group} found none)`);
}
