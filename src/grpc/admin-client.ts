/**
 * A promise-based client for AdminService on the admin socket, used by
 * `sandboxctl admin` and the tests.
 */
import { credentials, Metadata, type CallOptions, type ServiceError } from "@grpc/grpc-js";
import {
  AdminServiceClient,
  type ClearCacheResponse,
  type EvictModuleResponse,
  type GetModuleResponse,
  type ListModulesRequest,
  type ListModulesResponse,
  type ModuleInfo,
} from "../gen/grpc/sandbox/v1/admin.js";

/** Promise wrappers over the generated admin client. */
export interface AdminClient {
  readonly raw: AdminServiceClient;
  listModules(request?: Partial<ListModulesRequest>, options?: Partial<CallOptions>): Promise<ListModulesResponse>;
  /** Every page of ListModules, concatenated. */
  listAllModules(options?: Partial<CallOptions>): Promise<ModuleInfo[]>;
  getModule(moduleId: string, options?: Partial<CallOptions>): Promise<GetModuleResponse>;
  evictModule(moduleId: string, options?: Partial<CallOptions>): Promise<EvictModuleResponse>;
  clearCache(options?: Partial<CallOptions>): Promise<ClearCacheResponse>;
  pinModule(moduleId: string, options?: Partial<CallOptions>): Promise<ModuleInfo>;
  unpinModule(moduleId: string, options?: Partial<CallOptions>): Promise<ModuleInfo>;
  blockModule(moduleId: string, reason?: string, options?: Partial<CallOptions>): Promise<ModuleInfo>;
  unblockModule(moduleId: string, options?: Partial<CallOptions>): Promise<ModuleInfo>;
  close(): void;
}

type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (e: ServiceError | null, v: Res) => void,
) => unknown;

/** Connects to an admin socket, e.g. `unix:///run/sandboxd/admin.sock`. */
export function connectAdmin(target: string): AdminClient {
  const raw = new AdminServiceClient(target, credentials.createInsecure());
  const call = <Req, Res>(method: Unary<Req, Res>, request: Req, options: Partial<CallOptions> = {}): Promise<Res> =>
    new Promise((resolve, reject) => method.call(raw, request, new Metadata(), options, (e, v) => (e ? reject(e) : resolve(v))));
  const module = (r: { module?: ModuleInfo | undefined }): ModuleInfo => {
    if (!r.module) throw new Error("the daemon answered without a module");
    return r.module;
  };
  const client: AdminClient = {
    raw,
    listModules: (request = {}, options) => call(raw.listModules, { pageSize: 0, pageToken: "", ...request }, options),
    listAllModules: async (options) => {
      const all: ModuleInfo[] = [];
      let pageToken = "";
      do {
        const page = await client.listModules({ pageToken }, options);
        all.push(...page.modules);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      return all;
    },
    getModule: (moduleId, options) => call(raw.getModule, { moduleId }, options),
    evictModule: (moduleId, options) => call(raw.evictModule, { moduleId }, options),
    clearCache: (options) => call(raw.clearCache, {}, options),
    pinModule: async (moduleId, options) => module(await call(raw.pinModule, { moduleId }, options)),
    unpinModule: async (moduleId, options) => module(await call(raw.unpinModule, { moduleId }, options)),
    blockModule: async (moduleId, reason = "", options) => module(await call(raw.blockModule, { moduleId, reason }, options)),
    unblockModule: async (moduleId, options) => module(await call(raw.unblockModule, { moduleId }, options)),
    close: () => raw.close(),
  };
  return client;
}
