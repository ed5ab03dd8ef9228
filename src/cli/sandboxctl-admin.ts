/**
 * `sandboxctl admin`: the operator's view of a running daemon's module cache,
 * over its admin socket. A thin adapter: the daemon does the work.
 */
import type { ServiceError, Metadata } from "@grpc/grpc-js";
import path from "node:path";
import { parseArgs } from "node:util";
import { connectAdmin, type AdminClient } from "../grpc/admin-client.js";
import { errorInfoOf } from "../grpc/status.js";
import { moduleOriginToJSON, ModuleOrigin, type GetModuleResponse, type ModuleInfo } from "../gen/grpc/sandbox/v1/admin.js";
import { UsageError } from "./usage-error.js";

/** Usage of the admin commands, part of sandboxctl's. */
export const ADMIN_USAGE = `  sandboxctl admin --socket PATH [--json] COMMAND
      talks to a running daemon's admin socket (sandboxd --admin-listen); COMMAND is one of
        modules                  every cached module and blocked id (a table, or JSON with --json)
        module ID                one module, with the toolchain that built it
        evict ID                 remove a module from memory and disk
        clear                    remove every module from memory and disk (blocks stay)
        pin ID | unpin ID        keep a cached module out of LRU eviction, or stop doing so
        block ID [--reason TEXT] refuse the id in Compile and Execute (MODULE_BLOCKED), across restarts
        unblock ID               lift a block`;

/** An admin call's deadline: ClearCache of a large cache deletes many files. */
const ADMIN_CALL_DEADLINE_MS = 60_000;

/** What the one-line confirmation of a command says was done. */
const PAST_TENSE: Readonly<Record<string, string>> = { pin: "pinned", unpin: "unpinned", block: "blocked", unblock: "unblocked" };

/** Exit status when the daemon refuses or cannot be reached. */
const EXIT_FAILED = 1;

/** Runs `sandboxctl admin ...`; returns the exit status. */
export async function adminCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: { socket: { type: "string" }, json: { type: "boolean", default: false }, reason: { type: "string" } },
    });
  } catch (e: unknown) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const { values, positionals } = parsed;
  if (!values.socket) throw new UsageError("--socket is required (the daemon's --admin-listen path)");
  const [command, id, ...extra] = positionals;
  if (command === undefined) throw new UsageError("no admin command given");
  const needsId = ["module", "evict", "pin", "unpin", "block", "unblock"].includes(command);
  if (!needsId && !["modules", "clear"].includes(command)) throw new UsageError(`unknown admin command: ${command}`);
  if (needsId && id === undefined) throw new UsageError(`admin ${command} needs a module id`);
  if (extra.length > 0 || (!needsId && id !== undefined))
    throw new UsageError(`unexpected argument: ${[id, ...extra].filter(Boolean).join(" ")}`);
  if (values.reason !== undefined && command !== "block") throw new UsageError("--reason goes with admin block only");

  const target = values.socket.startsWith("unix:") ? values.socket : `unix://${path.resolve(values.socket)}`;
  const client = connectAdmin(target);
  const out = (text: string): boolean => process.stdout.write(text + "\n");
  const json = (value: unknown): boolean => out(JSON.stringify(value, null, 2));
  try {
    const options = { deadline: Date.now() + ADMIN_CALL_DEADLINE_MS };
    const moduleId = id ?? "";
    switch (command) {
      case "modules":
        return await listModules(client, options, values.json, out);
      case "module": {
        const response = await client.getModule(moduleId, options);
        if (values.json) json({ ...response, module: response.module && moduleJson(response.module) });
        else out(describeModule(response));
        return 0;
      }
      case "evict": {
        const response = await client.evictModule(moduleId, options);
        if (values.json) json(response);
        else
          out(
            `evicted ${moduleId} (disk: ${response.evictedFromDisk ? "removed" : "was not there"}, memory: ${response.evictedFromMemory ? "removed" : "was not there"})`,
          );
        return 0;
      }
      case "clear": {
        const response = await client.clearCache(options);
        if (values.json) json(response);
        else out(`cleared ${response.modulesRemoved} modules (${formatBytes(response.bytesRemoved)})`);
        return 0;
      }
      default: {
        const info =
          command === "pin"
            ? await client.pinModule(moduleId, options)
            : command === "unpin"
              ? await client.unpinModule(moduleId, options)
              : command === "block"
                ? await client.blockModule(moduleId, values.reason ?? "", options)
                : await client.unblockModule(moduleId, options);
        if (values.json) json(moduleJson(info));
        else out(`${PAST_TENSE[command] ?? command} ${moduleId} (now: ${flags(info) || "cached, not pinned"})`);
        return 0;
      }
    }
  } catch (e: unknown) {
    const error = e as Partial<ServiceError>;
    if (typeof error.code !== "number") throw e;
    const reason = errorInfoOf(error.metadata as Metadata | undefined)?.reason;
    process.stderr.write(`sandboxctl: ${reason ? `${reason}: ` : `cannot reach ${values.socket}: `}${error.details ?? String(e)}\n`);
    return EXIT_FAILED;
  } finally {
    client.close();
  }
}

async function listModules(
  client: AdminClient,
  options: { deadline: number },
  asJson: boolean,
  out: (text: string) => void,
): Promise<number> {
  const modules: ModuleInfo[] = [];
  let pageToken = "";
  let totals = { cachedModules: 0, cachedBytes: 0, cacheMaxBytes: 0, blockedModules: 0 };
  do {
    const page = await client.listModules({ pageToken }, options);
    modules.push(...page.modules);
    totals = {
      cachedModules: page.cachedModules,
      cachedBytes: page.cachedBytes,
      cacheMaxBytes: page.cacheMaxBytes,
      blockedModules: page.blockedModules,
    };
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  if (asJson) {
    out(JSON.stringify({ modules: modules.map(moduleJson), ...totals }, null, 2));
    return 0;
  }
  // Most recently used first: what an operator looking at a cache usually wants on top.
  const rows = [...modules]
    .sort((a, b) => b.lastUsedUnixMs - a.lastUsedUnixMs)
    .map((m) => [
      m.moduleId,
      m.cached ? formatBytes(m.sizeBytes) : "-",
      originName(m.origin),
      formatTime(m.createdUnixMs),
      formatTime(m.lastUsedUnixMs),
      m.cached ? String(m.hitCount) : "-",
      flags(m),
    ]);
  out(table(["MODULE", "SIZE", "ORIGIN", "CREATED", "LAST USED", "HITS", "FLAGS"], rows));
  out(
    `${totals.cachedModules} cached (${formatBytes(totals.cachedBytes)} of ${formatBytes(totals.cacheMaxBytes)}), ${totals.blockedModules} blocked`,
  );
  return 0;
}

function describeModule(response: GetModuleResponse): string {
  const m = response.module;
  if (!m) return "";
  const lines: [string, string][] = [
    ["module", m.moduleId],
    ["cached", m.cached ? `yes, ${formatBytes(m.sizeBytes)}` : "no"],
    ["origin", originName(m.origin)],
    ["created", formatTime(m.createdUnixMs)],
    ["last used", formatTime(m.lastUsedUnixMs)],
    ["hits", String(m.hitCount)],
    ["pinned", m.pinned ? "yes" : "no"],
    ["blocked", m.blocked ? `since ${formatTime(m.blockedUnixMs)}${m.blockReason ? `: ${m.blockReason}` : ""}` : "no"],
    ["toolchain", response.toolchain || "-"],
    ["fingerprint", response.toolchainFingerprint || "-"],
  ];
  return lines.map(([k, v]) => `${(k + ":").padEnd(13)}${v}`).join("\n");
}

/** Every field, defaults included (proto3 JSON would drop them), the origin by its enum name. */
function moduleJson(m: ModuleInfo): Record<string, unknown> {
  return { ...m, origin: moduleOriginToJSON(m.origin) };
}

function flags(m: ModuleInfo): string {
  return [m.pinned ? "pinned" : "", m.blocked ? "blocked" : "", m.cached ? "" : "not-cached", m.compileFailed ? "compile-failed" : ""]
    .filter(Boolean)
    .join(",");
}

function originName(origin: ModuleOrigin): string {
  return origin === ModuleOrigin.MODULE_ORIGIN_SOURCE ? "source" : origin === ModuleOrigin.MODULE_ORIGIN_UPLOAD ? "upload" : "-";
}

/** UTC, to the second; "-" for unknown. */
function formatTime(unixMs: number): string {
  return unixMs > 0
    ? new Date(unixMs)
        .toISOString()
        .replace("T", " ")
        .replace(/\.\d+Z$/, "Z")
    : "-";
}

function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}
