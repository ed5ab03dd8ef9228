/**
 * A SandboxService client below any typed one, for fuzzing: it sends exactly the
 * bytes it is given as the request of Compile, Execute or StreamOutput, with a
 * deadline, and reports how the call ended (status, details, ErrorInfo reason and
 * domain) whatever it was; raw-grpc.ts is the simpler one the hostile tests use.
 */
import { Client, credentials, Metadata, type ChannelOptions, type StatusObject } from "@grpc/grpc-js";
import { errorInfoOf } from "../../src/grpc/status.js";

/** The SandboxService methods, as paths. */
export const SANDBOX_METHODS = {
  Compile: "/sandbox.v1.SandboxService/Compile",
  Execute: "/sandbox.v1.SandboxService/Execute",
  StreamOutput: "/sandbox.v1.SandboxService/StreamOutput",
} as const;

/** A method name of SandboxService. */
export type SandboxMethod = keyof typeof SANDBOX_METHODS;

/** How a raw call ended. */
export interface RawCallEnd {
  readonly code: number;
  readonly details: string;
  /** ErrorInfo.reason from the status details, when there is one. */
  readonly reason: string | undefined;
  /** ErrorInfo.domain, when there is one. */
  readonly domain: string | undefined;
  /** Response messages received (1 for a successful unary call). */
  readonly messages: number;
}

/** The raw client. */
export interface RawCallClient {
  /** Sends `bytes` as the request of `method`; resolves when the call has ended, whatever its status. */
  call(method: SandboxMethod, bytes: Uint8Array, deadlineMs: number): Promise<RawCallEnd>;
  close(): void;
}

const identity = (b: Buffer): Buffer => b;

/** Connects to a daemon's unix socket. */
export function rawCallClient(socketPath: string, options: ChannelOptions = {}): RawCallClient {
  const client = new Client(`unix://${socketPath}`, credentials.createInsecure(), options);
  const ended = (status: StatusObject, messages: number): RawCallEnd => {
    let info: ReturnType<typeof errorInfoOf>;
    try {
      info = errorInfoOf(status.metadata);
    } catch {
      info = undefined;
    }
    return { code: status.code, details: status.details, reason: info?.reason, domain: info?.domain, messages };
  };
  return {
    call: (method, bytes, deadlineMs) =>
      new Promise((resolve) => {
        const path = SANDBOX_METHODS[method];
        const request = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const options = { deadline: Date.now() + deadlineMs };
        let messages = 0;
        if (method === "StreamOutput") {
          const call = client.makeServerStreamRequest(path, identity, identity, request, new Metadata(), options);
          call.on("data", () => messages++);
          call.on("error", () => undefined);
          call.on("status", (s: StatusObject) => resolve(ended(s, messages)));
        } else {
          const call = client.makeUnaryRequest(path, identity, identity, request, new Metadata(), options, (e) => {
            if (!e) messages++;
          });
          call.on("status", (s: StatusObject) => resolve(ended(s, messages)));
        }
      }),
    close: () => client.close(),
  };
}
