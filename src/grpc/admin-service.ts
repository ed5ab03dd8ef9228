/**
 * AdminService handlers: decode, call the core's ModuleAdmin, encode. Every
 * call is logged at warn level with who made it: whoever reaches the admin
 * socket changes what every client of the daemon may run.
 */
import type { ServerUnaryCall, sendUnaryData, ServiceError } from "@grpc/grpc-js";
import { SandboxError } from "../errors/sandbox-error.js";
import type { Logger } from "../logger.js";
import type { ModuleAdmin, ModuleDetails, ModuleInfo } from "../admin/module-admin.js";
import {
  ModuleOrigin,
  type AdminServiceServer,
  type BlockModuleRequest,
  type BlockModuleResponse,
  type ClearCacheRequest,
  type ClearCacheResponse,
  type EvictModuleRequest,
  type EvictModuleResponse,
  type GetModuleRequest,
  type GetModuleResponse,
  type ListModulesRequest,
  type ListModulesResponse,
  type ModuleInfo as ModuleInfoMessage,
  type PinModuleRequest,
  type PinModuleResponse,
  type UnblockModuleRequest,
  type UnblockModuleResponse,
  type UnpinModuleRequest,
  type UnpinModuleResponse,
} from "../gen/grpc/sandbox/v1/admin.js";
import type { PeerCredentials } from "./peer-credentials.js";
import { toServiceError } from "./status.js";
import { rejectRefused } from "./translate.js";

/** Who made an admin call, or why that is unknown. */
export type Caller = PeerCredentials | Error;

/** Core ModuleInfo → wire ModuleInfo. */
export function moduleInfoMessage(info: ModuleInfo): ModuleInfoMessage {
  return {
    moduleId: info.moduleId,
    cached: info.cached,
    sizeBytes: info.sizeBytes,
    origin:
      info.origin === "source"
        ? ModuleOrigin.MODULE_ORIGIN_SOURCE
        : info.origin === "upload"
          ? ModuleOrigin.MODULE_ORIGIN_UPLOAD
          : ModuleOrigin.MODULE_ORIGIN_UNSPECIFIED,
    createdUnixMs: info.createdUnixMs,
    lastUsedUnixMs: info.lastUsedUnixMs,
    hitCount: info.hits,
    pinned: info.pinned,
    blocked: info.block !== undefined,
    blockedUnixMs: info.block?.blockedUnixMs ?? 0,
    blockReason: info.block?.reason ?? "",
    compileFailed: info.compileFailed,
  };
}

function callerFields(caller: Caller): Record<string, unknown> {
  if (caller instanceof Error) return { callerUid: null, callerUnknownBecause: caller.message };
  return { callerUid: caller.uid, callerGid: caller.gid, callerPid: caller.pid };
}

/**
 * Builds the AdminService implementation. `callerOf` resolves the credentials
 * of the connection a call came in on (see admin-server.ts).
 */
export function adminService(
  admin: ModuleAdmin,
  logger: Logger,
  callerOf: (call: ServerUnaryCall<unknown, unknown>) => Promise<Caller>,
): AdminServiceServer {
  /** One unary admin call: log who asked for what and how it ended, answer or map the error. */
  function handle<Req extends object, Res>(
    method: string,
    moduleIdOf: (request: Req) => string | undefined,
    run: (request: Req) => Promise<Res>,
  ) {
    return async (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): Promise<void> => {
      const caller = await callerOf(call as ServerUnaryCall<unknown, unknown>);
      const moduleId = moduleIdOf(call.request);
      const fields = { method, ...(moduleId ? { moduleId } : {}), ...callerFields(caller) };
      try {
        rejectRefused(call.request);
        const response = await run(call.request);
        logger.warn(`admin ${method}`, { ...fields, result: "OK" });
        callback(null, response);
      } catch (e: unknown) {
        const error = SandboxError.from(e);
        logger.warn(`admin ${method}`, { ...fields, result: error.reason, error: error.message });
        if (error.reason === "INTERNAL")
          logger.error(`admin ${method} failed`, { error: String(error.cause), stack: (error.cause as Error | undefined)?.stack });
        callback(toServiceError(error) as ServiceError, null);
      }
    };
  }
  // An undecodable request has no fields at all.
  const byId = (request: { moduleId: string }): string | undefined => (typeof request.moduleId === "string" ? request.moduleId : undefined);
  const none = (): undefined => undefined;
  const details = (d: ModuleDetails): GetModuleResponse => ({
    module: moduleInfoMessage(d),
    toolchainFingerprint: d.toolchain?.fingerprint ?? "",
    toolchain: d.toolchain?.description ?? "",
  });

  return {
    listModules: handle<ListModulesRequest, ListModulesResponse>("ListModules", none, async (r) => {
      const page = await admin.list(r.pageSize, r.pageToken);
      return {
        modules: page.modules.map(moduleInfoMessage),
        nextPageToken: page.nextPageToken,
        cachedModules: page.cachedModules,
        cachedBytes: page.cachedBytes,
        cacheMaxBytes: page.cacheMaxBytes,
        blockedModules: page.blockedModules,
      };
    }),
    getModule: handle<GetModuleRequest, GetModuleResponse>("GetModule", byId, async (r) => details(await admin.get(r.moduleId))),
    evictModule: handle<EvictModuleRequest, EvictModuleResponse>("EvictModule", byId, async (r) => {
      const evicted = await admin.evict(r.moduleId);
      return { evictedFromDisk: evicted.fromDisk, evictedFromMemory: evicted.fromMemory };
    }),
    clearCache: handle<ClearCacheRequest, ClearCacheResponse>("ClearCache", none, async () => {
      const cleared = await admin.clear();
      return { modulesRemoved: cleared.removed, bytesRemoved: cleared.bytes };
    }),
    pinModule: handle<PinModuleRequest, PinModuleResponse>("PinModule", byId, async (r) => ({
      module: moduleInfoMessage(await admin.setPinned(r.moduleId, true)),
    })),
    unpinModule: handle<UnpinModuleRequest, UnpinModuleResponse>("UnpinModule", byId, async (r) => ({
      module: moduleInfoMessage(await admin.setPinned(r.moduleId, false)),
    })),
    blockModule: handle<BlockModuleRequest, BlockModuleResponse>("BlockModule", byId, async (r) => ({
      module: moduleInfoMessage(await admin.block(r.moduleId, r.reason, Date.now())),
    })),
    unblockModule: handle<UnblockModuleRequest, UnblockModuleResponse>("UnblockModule", byId, async (r) => ({
      module: moduleInfoMessage(await admin.unblock(r.moduleId)),
    })),
  };
}
