/**
 * A SandboxService client that sends whatever bytes it is given as the request:
 * hostile tests use it to put messages on the wire that no typed client would build.
 */
import { credentials, makeGenericClientConstructor, Metadata, type ServiceError } from "@grpc/grpc-js";
import { errorInfoOf } from "../../src/grpc/status.js";

/** What a raw call came back with: the status (0 = OK), its message and its ErrorInfo reason. */
export interface RawAnswer {
  readonly code: number;
  readonly details: string;
  readonly reason: string | undefined;
}

/** A raw client of Compile, Execute and StreamOutput. */
export interface RawSandboxClient {
  compile(bytes: Buffer): Promise<RawAnswer>;
  execute(bytes: Buffer): Promise<RawAnswer>;
  /** Reads the stream to its end (events are dropped) and answers with its final status. */
  streamOutput(bytes: Buffer): Promise<RawAnswer>;
  close(): void;
}

const identity = (b: Buffer): Buffer => b;

function method(name: string, responseStream: boolean, service = "sandbox.v1.SandboxService") {
  return {
    path: `/${service}/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

type RawStub = {
  compile(b: Buffer, m: Metadata, cb: (e: ServiceError | null) => void): void;
  execute(b: Buffer, m: Metadata, cb: (e: ServiceError | null) => void): void;
  streamOutput(b: Buffer): NodeJS.EventEmitter;
};

function answer(e: ServiceError | null): RawAnswer {
  return e ? { code: e.code, details: e.details, reason: errorInfoOf(e.metadata)?.reason } : { code: 0, details: "", reason: undefined };
}

/** Connects to a daemon's unix socket; `options` are grpc-js channel options. */
export function rawSandboxClient(socketPath: string, options: Record<string, unknown> = {}): RawSandboxClient {
  const Raw = makeGenericClientConstructor(
    { compile: method("Compile", false), execute: method("Execute", false), streamOutput: method("StreamOutput", true) },
    "RawSandbox",
  );
  const client = new Raw(`unix://${socketPath}`, credentials.createInsecure(), { "grpc.max_send_message_length": -1, ...options });
  const stub = client as unknown as RawStub;
  return {
    compile: (bytes) => new Promise((resolve) => stub.compile(bytes, new Metadata(), (e) => resolve(answer(e)))),
    execute: (bytes) => new Promise((resolve) => stub.execute(bytes, new Metadata(), (e) => resolve(answer(e)))),
    streamOutput: (bytes) =>
      new Promise((resolve) => {
        const call = stub.streamOutput(bytes);
        call.on("data", () => undefined);
        call.on("error", (e: ServiceError) => resolve(answer(e)));
        call.on("end", () => resolve(answer(null)));
      }),
    close: () => client.close(),
  };
}

/** One unary call of `service`'s `name` (e.g. "sandbox.v1.AdminService", "GetModule") with `bytes` as its request. */
export async function rawUnaryCall(socketPath: string, service: string, name: string, bytes: Buffer): Promise<RawAnswer> {
  const Raw = makeGenericClientConstructor({ call: method(name, false, service) }, "RawUnary");
  const client = new Raw(`unix://${socketPath}`, credentials.createInsecure());
  try {
    const stub = client as unknown as { call(b: Buffer, m: Metadata, cb: (e: ServiceError | null) => void): void };
    return await new Promise((resolve) => stub.call(bytes, new Metadata(), (e) => resolve(answer(e))));
  } finally {
    client.close();
  }
}
