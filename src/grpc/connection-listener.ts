/**
 * The daemon's own accept loop in front of grpc-js: grpc-js has an idle
 * timeout (`grpc.max_connection_idle_ms`) but no cap on connections, and a
 * connection it closes gracefully stays open until the peer closes its end,
 * which a silent peer never does. Owning the listening socket lets the daemon
 * cap connections (each costs a descriptor) and destroy what a peer leaves
 * half-closed; accepted sockets are handed to grpc-js unchanged.
 */
import { createServer, type ListenOptions, type Server, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import type { Logger } from "../logger.js";
import { CONNECTION_CAP_LOG_INTERVAL_MS, CONNECTION_CLOSE_GRACE_MS } from "../limits.js";

/** The operator's connection limits (`--max-connections`, `--idle-timeout-ms`). */
export interface ConnectionLimits {
  /** Connections open at once; a new one beyond this is closed on arrival. */
  readonly maxConnections: number;
  /** A connection with no call in flight this long is closed. */
  readonly idleTimeoutMs: number;
}

/** A listening socket whose accepted connections go to `serve`, at most `maxConnections` at once. */
export class ConnectionListener {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #maxConnections: number;
  readonly #logger: Logger;
  #refusedSinceLog = 0;
  #lastRefusalLogMs = -Infinity;

  constructor(serve: (socket: Socket) => void, maxConnections: number, logger: Logger) {
    this.#maxConnections = maxConnections;
    this.#logger = logger;
    this.#server = createServer((socket) => {
      this.#track(socket);
      serve(socket);
    });
    // Node closes a connection that arrives at the cap before anyone sees it.
    this.#server.maxConnections = maxConnections;
    this.#server.on("drop", () => this.#refused());
  }

  /** Starts listening; resolves with the bound TCP port (undefined for a unix socket). */
  listen(options: ListenOptions): Promise<number | undefined> {
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(options, () => {
        this.#server.off("error", reject);
        const bound = this.#server.address();
        resolve(bound !== null && typeof bound === "object" ? bound.port : undefined);
      });
    });
  }

  /** Stops accepting new connections; open ones are left to their owner (grpc-js) to close. */
  stopAccepting(): void {
    this.#server.close();
  }

  /** Destroys every connection still open (the end of a forced shutdown). */
  destroyAll(): void {
    for (const socket of this.#sockets) socket.destroy();
  }

  /** Connections open now. */
  get size(): number {
    return this.#sockets.size;
  }

  #track(socket: Socket): void {
    this.#sockets.add(socket);
    // A socket error is this connection's end, never the daemon's: the HTTP/2
    // session reports it too, and an unhandled 'error' would be fatal.
    socket.on("error", () => undefined);
    let destroyTimer: NodeJS.Timeout | undefined;
    // 'finish': the daemon has sent its last bytes (GOAWAY) and its FIN. A
    // peer that does not close its end in time is cut off, so closing a
    // connection always frees its descriptor.
    socket.once("finish", () => {
      destroyTimer = setTimeout(() => socket.destroy(), CONNECTION_CLOSE_GRACE_MS);
      destroyTimer.unref();
    });
    socket.once("close", () => {
      clearTimeout(destroyTimer);
      this.#sockets.delete(socket);
    });
  }

  #refused(): void {
    this.#refusedSinceLog++;
    const now = performance.now();
    if (now - this.#lastRefusalLogMs < CONNECTION_CAP_LOG_INTERVAL_MS) return;
    this.#logger.warn(`refused ${this.#refusedSinceLog} connection(s): ${this.#maxConnections} are open, the --max-connections cap`);
    this.#refusedSinceLog = 0;
    this.#lastRefusalLogMs = now;
  }
}
