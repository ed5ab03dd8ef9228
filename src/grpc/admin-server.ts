/**
 * The admin socket: AdminService (plus reflection of it) on its own unix
 * socket and its own grpc-js server, so the main listener never serves it.
 *
 * We accept the connections ourselves and hand them to grpc-js through a
 * connection injector, which lets us learn each connection's peer credentials
 * (SO_PEERCRED) for the audit log: the connection is tagged through its
 * `remoteAddress`, which grpc-js reports as the call's peer.
 */
import { Server, ServerCredentials, type ConnectionInjector, type ServerUnaryCall } from "@grpc/grpc-js";
import { createServer, type Server as NetServer, type Socket } from "node:net";
import { chmod, chown, mkdtemp, rename, rm, unlink } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../logger.js";
import { PEER_CREDENTIALS_TIMEOUT_MS } from "../limits.js";
import type { ModuleAdmin } from "../admin/module-admin.js";
import { AdminServiceService } from "../gen/grpc/sandbox/v1/admin.js";
import { adminService, type Caller } from "./admin-service.js";
import { peerCredentials } from "./peer-credentials.js";
import { prepareSocketPath } from "./server.js";
import { tolerantDecoder } from "./translate.js";

/** The operator's service, as reflection on the admin socket lists it. */
const ADMIN_SERVICE_NAME = "sandbox.v1.AdminService";

/** Admin socket mode: the daemon's user only (root can always connect). */
const ADMIN_SOCKET_MODE = 0o600;
/** Admin socket mode with --admin-socket-group: that group too. */
const ADMIN_SOCKET_GROUP_MODE = 0o660;

/** Prefix of each connection's tag; see the file comment. */
const CONNECTION_TAG_PREFIX = "sandboxd-admin-connection-";

/** Where and to whom the admin socket is offered. */
export interface AdminListenOptions {
  /** Absolute path of the socket. */
  readonly path: string;
  /** Group (gid) that may connect too; undefined keeps the socket to the daemon's user. */
  readonly gid: number | undefined;
}

/** A running admin socket. */
export class AdminServer {
  private readonly server: Server;
  private readonly injector: ConnectionInjector;
  private readonly listener: NetServer;
  /** Connection tag → its peer credentials (being read, or read). */
  private readonly callers = new Map<string, Promise<Caller>>();
  private readonly sockets = new Set<Socket>();
  private nextConnection = 1;
  private socketPath: string | undefined;

  constructor(admin: ModuleAdmin, logger: Logger) {
    this.server = new Server();
    const service = Object.fromEntries(
      Object.entries(AdminServiceService).map(([name, method]) => [
        name,
        { ...method, requestDeserialize: tolerantDecoder(method.requestDeserialize) },
      ]),
    ) as unknown as typeof AdminServiceService;
    this.server.addService(
      service,
      adminService(admin, logger, (call) => this.callerOf(call)),
    );
    this.injector = this.server.createConnectionInjector(ServerCredentials.createInsecure());
    this.listener = createServer((socket) => this.accept(socket));
  }

  /**
   * Binds the socket with its final mode and group before anyone can reach it: it is
   * created in a private directory beside its path, fixed up, then renamed into place.
   */
  async listen(options: AdminListenOptions): Promise<string> {
    // Imported here, not at the top: a daemon without an admin socket never loads the descriptors.
    const { addReflection, DescriptorIndex } = await import("./reflection-service.js");
    addReflection(this.server, DescriptorIndex.load([ADMIN_SERVICE_NAME]));
    await prepareSocketPath(options.path);
    const privateDir = await mkdtemp(path.join(path.dirname(options.path), ".admin-"));
    try {
      const temp = path.join(privateDir, "s");
      await new Promise<void>((resolve, reject) => {
        this.listener.once("error", reject);
        this.listener.listen(temp, () => {
          this.listener.off("error", reject);
          resolve();
        });
      });
      if (options.gid !== undefined) {
        try {
          await chown(temp, -1, options.gid);
        } catch (e: unknown) {
          throw new Error(
            `cannot give the admin socket to group ${options.gid} (the daemon must be a member of it): ${e instanceof Error ? e.message : String(e)}`,
            {
              cause: e,
            },
          );
        }
      }
      await chmod(temp, options.gid === undefined ? ADMIN_SOCKET_MODE : ADMIN_SOCKET_GROUP_MODE);
      await rename(temp, options.path);
      this.socketPath = options.path;
    } catch (e: unknown) {
      await new Promise<void>((resolve) => (this.listener.listening ? this.listener.close(() => resolve()) : resolve()));
      throw e;
    } finally {
      await rm(privateDir, { recursive: true, force: true });
    }
    return `unix://${options.path}`;
  }

  /** Stops accepting, gives calls under way `graceMs`, then ends them and removes the socket. */
  async close(graceMs: number): Promise<void> {
    this.listener.close();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
      this.injector.drain(graceMs);
    });
    for (const socket of this.sockets) socket.destroy();
    if (this.socketPath) await unlink(this.socketPath).catch(() => undefined);
  }

  private accept(socket: Socket): void {
    const tag = `${CONNECTION_TAG_PREFIX}${this.nextConnection++}`;
    // grpc-js reports a call's peer as its connection's remoteAddress, which a unix socket lacks.
    Object.defineProperty(socket, "remoteAddress", { value: tag, configurable: true });
    this.callers.set(tag, peerCredentials(socket, PEER_CREDENTIALS_TIMEOUT_MS));
    this.sockets.add(socket);
    socket.once("close", () => {
      this.callers.delete(tag);
      this.sockets.delete(socket);
    });
    this.injector.injectConnection(socket);
  }

  private callerOf(call: ServerUnaryCall<unknown, unknown>): Promise<Caller> {
    return this.callers.get(call.getPeer()) ?? Promise.resolve(new Error(`no connection is known for peer ${call.getPeer()}`));
  }
}
