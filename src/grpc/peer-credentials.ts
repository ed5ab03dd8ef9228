/**
 * Who is on the other end of a unix socket, as the kernel recorded it at connect
 * (SO_PEERCRED): the admin socket logs each call with its caller's uid.
 *
 * Node has no getsockopt, and a native addon is a build dependency we do not
 * want, so a short perl process (perl-base is Essential on Debian, and its Socket
 * module knows SO_PEERCRED) inherits the connection as fd 3 and prints the
 * credentials. It is handed the descriptor by number, not the Socket: given a
 * Socket as stdio, Node stops reading it for good (it assumes the child reads). That costs one process per admin connection, not per call, and
 * nothing on the main socket. Scanning /proc/net/unix and every /proc/PID/fd for
 * the peer's inode would cost far more and need more privilege.
 */
import { spawn } from "node:child_process";
import type { Socket } from "node:net";

/** The connecting process's credentials at connect time. */
export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** Prints `pid uid gid` of the socket on fd 3 (struct ucred: int32 pid, uint32 uid, uint32 gid). */
const PRINT_PEER_CREDENTIALS =
  'use Socket; open(my $s, "+<&=", 3) or die "fd 3: $!\\n"; ' +
  'my $c = getsockopt($s, SOL_SOCKET, SO_PEERCRED) or die "getsockopt(SO_PEERCRED): $!\\n"; ' +
  'print join(" ", unpack("lLL", $c)), "\\n";';

/** Output of the helper beyond which it is not the helper talking. */
const MAX_HELPER_OUTPUT_BYTES = 4096;

/** The peer's credentials, or an Error saying why they are unavailable (never throws). */
export function peerCredentials(socket: Socket, timeoutMs: number): Promise<PeerCredentials | Error> {
  return new Promise((resolve) => {
    let output = "";
    let settled = false;
    const settle = (result: PeerCredentials | Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    // Not public API, but the only way to name the descriptor; read while the connection is open.
    const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
    if (typeof fd !== "number" || fd < 0) {
      resolve(new Error("the connection's descriptor is not available"));
      return;
    }
    let child;
    try {
      child = spawn("perl", ["-e", PRINT_PEER_CREDENTIALS], {
        // The daemon's environment is nobody's business, perl's included.
        env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" },
        stdio: ["ignore", "pipe", "pipe", fd],
      });
    } catch (e: unknown) {
      resolve(new Error(`cannot start perl to read SO_PEERCRED: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      settle(new Error(`reading SO_PEERCRED took over ${timeoutMs} ms`));
    }, timeoutMs);
    const collect = (d: Buffer): void => {
      if (output.length < MAX_HELPER_OUTPUT_BYTES) output += d.toString("utf8");
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    child.once("error", (e) => settle(new Error(`cannot run perl to read SO_PEERCRED: ${e.message}`)));
    child.once("close", (code) => {
      const m = /^(-?\d+) (\d+) (\d+)\n$/.exec(output);
      if (code === 0 && m) settle({ pid: Number(m[1]), uid: Number(m[2]), gid: Number(m[3]) });
      else settle(new Error(`perl could not read SO_PEERCRED (exit ${code}): ${output.trim().slice(0, 200)}`));
    });
  });
}
