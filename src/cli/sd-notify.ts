/**
 * sd_notify(3) for `Type=notify` units: tells systemd the daemon is ready (so
 * dependent units never race the socket), reloading, or stopping. Node cannot
 * send on a unix datagram socket, so a short perl process (Debian's perl-base,
 * always installed) sends the datagram for us, naming our pid as MAINPID; the
 * unit therefore says NotifyAccess=all.
 */
import { spawn } from "node:child_process";

/** How long the helper may take to send one datagram. */
const NOTIFY_TIMEOUT_MS = 5_000;

/** Sends one datagram to $1 (a path, or @name for the abstract namespace) with stdin as its payload. */
const SEND_SCRIPT = `use Socket;
my $path = $ARGV[0]; $path =~ s/^@/\\0/;
local $/; my $msg = <STDIN>;
socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die "socket: $!\\n";
defined(send($s, $msg, 0, pack_sockaddr_un($path))) or die "send: $!\\n";`;

/**
 * Sends `state` (e.g. "READY=1\\nSTATUS=listening") to $NOTIFY_SOCKET with our MAINPID;
 * does nothing without NOTIFY_SOCKET. Resolves to an Error it could not send, never rejects.
 */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): Promise<Error | undefined> {
  const socket = env["NOTIFY_SOCKET"];
  if (!socket) return Promise.resolve(undefined);
  if (!socket.startsWith("/") && !socket.startsWith("@"))
    return Promise.resolve(new Error(`NOTIFY_SOCKET is neither a path nor @abstract: ${socket}`));
  return new Promise((resolve) => {
    const child = spawn("perl", ["-e", SEND_SCRIPT, socket], {
      stdio: ["pipe", "ignore", "pipe"],
      timeout: NOTIFY_TIMEOUT_MS,
      env: { PATH: env["PATH"] ?? "/usr/bin:/bin" },
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", (e) => resolve(e));
    child.once("close", (code) => resolve(code === 0 ? undefined : new Error(`sd_notify failed: ${stderr.trim() || `exit ${code}`}`)));
    child.stdin.end(`${state}\nMAINPID=${process.pid}`);
  });
}
