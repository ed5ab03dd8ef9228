/** Sockets: none is ever granted (a network grant is outbound HTTP through sandboxd_http_v1, each request vetted). */
import { Errno } from "../abi.js";
import type { WasiContext } from "../context.js";
import type { Preview1Calls } from "../types.js";

/** The calls of this family. */
export type SockCalls = Pick<Preview1Calls, "sock_accept" | "sock_recv" | "sock_send" | "sock_shutdown">;

/**
 * Accepting is the capability we withhold (ENOTCAPABLE); and since no descriptor can ever be a socket, the
 * calls on an existing one say so (ENOTSOCK), as the WASI test suite expects. A closed fd is EBADF.
 */
export function sockCalls(ctx: WasiContext): SockCalls {
  const { fds } = ctx;
  return {
    sock_accept: (fd) => {
      fds.get(fd);
      return Errno.NOTCAPABLE;
    },
    sock_recv: (fd) => {
      fds.get(fd);
      return Errno.NOTSOCK;
    },
    sock_send: (fd) => {
      fds.get(fd);
      return Errno.NOTSOCK;
    },
    sock_shutdown: (fd) => {
      fds.get(fd);
      return Errno.NOTSOCK;
    },
  };
}
