import type { Diagnostic } from "./diagnostics.js";

/** Where a module came from: compiled here from Rust source, or registered precompiled. */
export type ModuleOrigin = "source" | "upload";

/** The toolchain that built a module from source. */
export interface ToolchainRecord {
  /** Lowercase hex SHA-256 of everything but the source that went into the module id. */
  readonly fingerprint: string;
  /** The same in words, for operators. */
  readonly description: string;
}

/** What is stored beside a module in its cache entry (written with it, atomically). */
export interface ModuleMeta {
  /** The warnings of its successful compile. */
  readonly diagnostics: readonly Diagnostic[];
  /** Undefined for entries written before the origin was recorded. */
  readonly origin: ModuleOrigin | undefined;
  /** When the entry was written (Unix ms); 0 when not recorded. */
  readonly createdUnixMs: number;
  readonly toolchain: ToolchainRecord | undefined;
}

/** Serializes a module's metadata for the module store. */
export function encodeModuleMeta(meta: ModuleMeta): Uint8Array {
  return Buffer.from(JSON.stringify(meta));
}

/**
 * Reads metadata back, field by field: an entry whose metadata is damaged or older than a field
 * still describes what it can (the module itself is verified separately, by its hash).
 */
export function decodeModuleMeta(bytes: Uint8Array | undefined): ModuleMeta {
  const empty: ModuleMeta = { diagnostics: [], origin: undefined, createdUnixMs: 0, toolchain: undefined };
  if (!bytes || bytes.byteLength === 0) return empty;
  let parsed: Record<string, unknown>;
  try {
    const json: unknown = JSON.parse(Buffer.from(bytes).toString("utf8"));
    if (typeof json !== "object" || json === null) return empty;
    parsed = json as Record<string, unknown>;
  } catch {
    return empty;
  }
  const toolchain = parsed["toolchain"] as Partial<ToolchainRecord> | undefined;
  return {
    diagnostics: Array.isArray(parsed["diagnostics"]) ? (parsed["diagnostics"] as Diagnostic[]) : [],
    origin: parsed["origin"] === "source" || parsed["origin"] === "upload" ? parsed["origin"] : undefined,
    createdUnixMs: Number.isSafeInteger(parsed["createdUnixMs"]) ? (parsed["createdUnixMs"] as number) : 0,
    toolchain:
      typeof toolchain?.fingerprint === "string" && typeof toolchain.description === "string"
        ? { fingerprint: toolchain.fingerprint, description: toolchain.description }
        : undefined,
  };
}
