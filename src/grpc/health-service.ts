/**
 * The standard grpc.health.v1.Health service (Check, Watch, List), written
 * against its two tiny messages by hand: the grpc-health-check package parses
 * its .proto with proto-loader when it is imported, which cost the daemon's
 * start-up more than the rest of the gRPC layer.
 */
import {
  status as GrpcStatus,
  type Server,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  type ServiceDefinition,
} from "@grpc/grpc-js";

/** A service's serving status, as grpc.health.v1.HealthCheckResponse.ServingStatus names it. */
export type ServingStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

const STATUS_NUMBERS: Record<ServingStatus, number> = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 };

/** Services List reports at most; beyond it List is RESOURCE_EXHAUSTED (as the reference implementation). */
const LIST_MAX_SERVICES = 100;

/** Protobuf wire types used here. */
const WIRE_VARINT = 0;
const WIRE_LEN = 2;

interface CheckRequest {
  readonly service: string;
}
interface CheckResponse {
  readonly status: ServingStatus;
}
interface ListResponse {
  readonly statuses: ReadonlyMap<string, ServingStatus>;
}

function varint(value: number, out: number[]): void {
  let v = value;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

function readVarint(bytes: Buffer, pos: number): { value: number; next: number } {
  let value = 0;
  let shift = 0;
  for (let i = pos; i < bytes.length && shift < 35; i++) {
    const b = bytes[i]!;
    value += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return { value, next: i + 1 };
    shift += 7;
  }
  throw new Error("malformed varint");
}

/** Decodes HealthCheckRequest / HealthListRequest: field 1 is the service name; unknown fields are skipped. */
function decodeRequest(bytes: Buffer): CheckRequest {
  let service = "";
  let pos = 0;
  while (pos < bytes.length) {
    const key = readVarint(bytes, pos);
    const field = Math.floor(key.value / 8);
    const wire = key.value & 7;
    pos = key.next;
    if (wire === WIRE_VARINT) {
      pos = readVarint(bytes, pos).next;
    } else if (wire === WIRE_LEN) {
      const length = readVarint(bytes, pos);
      const end = length.next + length.value;
      if (end > bytes.length) throw new Error("truncated field");
      if (field === 1) service = bytes.toString("utf8", length.next, end);
      pos = end;
    } else if (wire === 1 || wire === 5) {
      pos += wire === 1 ? 8 : 4;
    } else {
      throw new Error(`unsupported wire type ${wire}`);
    }
  }
  return { service };
}

function checkResponseBytes(status: ServingStatus): number[] {
  const out: number[] = [];
  const n = STATUS_NUMBERS[status];
  // proto3 leaves a zero enum out.
  if (n !== 0) out.push((1 << 3) | WIRE_VARINT, n);
  return out;
}

function encodeCheckResponse(response: CheckResponse): Buffer {
  return Buffer.from(checkResponseBytes(response.status));
}

/** HealthListResponse: field 1 is map<string, HealthCheckResponse>, each entry {1: key, 2: value}. */
function encodeListResponse(response: ListResponse): Buffer {
  const out: number[] = [];
  for (const [name, status] of response.statuses) {
    const key = [...Buffer.from(name, "utf8")];
    const value = checkResponseBytes(status);
    const entry: number[] = [(1 << 3) | WIRE_LEN];
    varint(key.length, entry);
    entry.push(...key, (2 << 3) | WIRE_LEN);
    varint(value.length, entry);
    entry.push(...value);
    out.push((1 << 3) | WIRE_LEN);
    varint(entry.length, out);
    out.push(...entry);
  }
  return Buffer.from(out);
}

const HEALTH_SERVICE = {
  check: {
    path: "/grpc.health.v1.Health/Check",
    requestStream: false,
    responseStream: false,
    requestSerialize: () => Buffer.alloc(0),
    requestDeserialize: decodeRequest,
    responseSerialize: encodeCheckResponse,
    responseDeserialize: () => ({ status: "UNKNOWN" }),
  },
  watch: {
    path: "/grpc.health.v1.Health/Watch",
    requestStream: false,
    responseStream: true,
    requestSerialize: () => Buffer.alloc(0),
    requestDeserialize: decodeRequest,
    responseSerialize: encodeCheckResponse,
    responseDeserialize: () => ({ status: "UNKNOWN" }),
  },
  list: {
    path: "/grpc.health.v1.Health/List",
    requestStream: false,
    responseStream: false,
    requestSerialize: () => Buffer.alloc(0),
    requestDeserialize: decodeRequest,
    responseSerialize: encodeListResponse,
    responseDeserialize: () => ({ statuses: new Map() }),
  },
} as const;

/** Serving statuses by service name ("" is the whole server), served as grpc.health.v1.Health. */
export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Map<string, Set<(status: ServingStatus) => void>>();

  constructor(initial: Readonly<Record<string, ServingStatus>>) {
    for (const [name, status] of Object.entries(initial)) this.statuses.set(name, status);
  }

  /** Sets a service's status and tells its watchers. */
  setStatus(service: string, status: ServingStatus): void {
    this.statuses.set(service, status);
    for (const watcher of this.watchers.get(service) ?? []) watcher(status);
  }

  /** Registers the service on a grpc-js server. */
  addToServer(server: Server): void {
    server.addService(HEALTH_SERVICE as unknown as ServiceDefinition, {
      check: (call: ServerUnaryCall<CheckRequest, CheckResponse>, callback: sendUnaryData<CheckResponse>) => {
        const status = this.statuses.get(call.request.service);
        if (status) callback(null, { status });
        else callback({ code: GrpcStatus.NOT_FOUND, details: `Health status unknown for service ${call.request.service}` }, null);
      },
      watch: (call: ServerWritableStream<CheckRequest, CheckResponse>) => {
        const service = call.request.service;
        const watcher = (status: ServingStatus): void => void call.write({ status });
        const set = this.watchers.get(service) ?? new Set();
        this.watchers.set(service, set);
        set.add(watcher);
        call.on("cancelled", () => {
          set.delete(watcher);
          if (set.size === 0 && this.watchers.get(service) === set) this.watchers.delete(service);
        });
        call.write({ status: this.statuses.get(service) ?? "SERVICE_UNKNOWN" });
      },
      list: (_call: ServerUnaryCall<CheckRequest, ListResponse>, callback: sendUnaryData<ListResponse>) => {
        if (this.statuses.size > LIST_MAX_SERVICES) {
          callback({ code: GrpcStatus.RESOURCE_EXHAUSTED, details: "Too many services to list." }, null);
          return;
        }
        callback(null, { statuses: this.statuses });
      },
    });
  }
}
