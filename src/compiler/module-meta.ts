/**
 * Where a cache entry came from: fields written into every entry's metadata beside the
 * compiler's own (see StoredMeta in compiler.ts), for the operator's view of the cache.
 */

/** Where a module came from: compiled here from Rust source, or registered precompiled. */
export type ModuleOrigin = "source" | "upload";

/** The toolchain that built a module from source. */
export interface ToolchainRecord {
  /** Lowercase hex SHA-256 of everything but the source that went into the module id. */
  readonly fingerprint: string;
  /** The same in words, for operators. */
  readonly description: string;
}

/** The provenance fields an entry's metadata carries (all optional: older entries lack them). */
export interface ProvenanceFields {
  readonly origin?: ModuleOrigin;
  /** When the entry was written (Unix ms). */
  readonly createdUnixMs?: number;
  readonly toolchain?: ToolchainRecord;
}

/** What an entry's metadata says about it. */
export interface Provenance {
  /** Undefined for entries written before the origin was recorded. */
  readonly origin: ModuleOrigin | undefined;
  /** 0 when not recorded. */
  readonly createdUnixMs: number;
  readonly toolchain: ToolchainRecord | undefined;
  /** A cached compile failure of a source: no module, only its diagnostics. */
  readonly compileFailed: boolean;
}

/**
 * Reads provenance back, field by field: an entry whose metadata is damaged or older than a field
 * still describes what it can (the module itself is verified separately, by its hash).
 */
export function decodeProvenance(bytes: Uint8Array | undefined): Provenance {
  const empty: Provenance = { origin: undefined, createdUnixMs: 0, toolchain: undefined, compileFailed: false };
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
    origin: parsed["origin"] === "source" || parsed["origin"] === "upload" ? parsed["origin"] : undefined,
    createdUnixMs: Number.isSafeInteger(parsed["createdUnixMs"]) ? (parsed["createdUnixMs"] as number) : 0,
    toolchain:
      typeof toolchain?.fingerprint === "string" && typeof toolchain.description === "string"
        ? { fingerprint: toolchain.fingerprint, description: toolchain.description }
        : undefined,
    compileFailed: parsed["ok"] === false,
  };
}
