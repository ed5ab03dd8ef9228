/**
 * The `sandboxd_http_v1` import functions a guest calls (the ABI is in
 * http-abi.ts and docs/network.md). Everything the guest hands over is checked
 * here before it leaves its memory: pointers, lengths and size caps. A refusal
 * is a result code the guest can act on, never a trap, and every refusal of a
 * request the policy or our rules made is reported as a Denial.
 */
import { MAX_HTTP_REQUEST_BODY_BYTES, MAX_HTTP_REQUEST_HEAD_BYTES } from "../../limits.js";
import { HTTP_DENIAL_OPERATION, HTTP_FUNCTIONS, HTTP_OUT_BYTES, HttpPart, HttpResult } from "./http-abi.js";
import type { HttpReply } from "./http-channel.js";
import { urlOfHead } from "./outbound-request.js";

/** Sends one request and returns its reply, synchronously (the worker's end of the run's channel). */
export interface HttpTransport {
  send(head: Uint8Array, body: Uint8Array): HttpReply;
}

/** What the imports need from the host around them. */
export interface GuestHttpOptions {
  /** Undefined when the policy grants no network: every request is then refused. */
  readonly transport: HttpTransport | undefined;
  /** The guest's memory as it is now (it may have grown since the last call). */
  memory(): Uint8Array;
  onDenial(denial: { operation: string; path: string; reason: string }): void;
  /** Hands buffered output on before the guest blocks on the network, as a sleep does. */
  flush?(): void;
  /** Ends the run as a timeout (the run's time ran out during a request); never returns. */
  endRunOutOfTime(message: string): never;
}

const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

/** The parts of the last request's result that `read` copies out. */
interface LastResult {
  readonly parts: readonly [head: Uint8Array, body: Uint8Array, error: Uint8Array];
}

/** Builds the module's functions for one run. */
export function guestHttpImports(options: GuestHttpOptions): Record<keyof typeof HTTP_FUNCTIONS, (...args: number[]) => number> {
  let last: LastResult | undefined;
  const inBounds = (u8: Uint8Array, ptr: number, len: number): boolean => ptr + len <= u8.length;

  const finish = (out: number, reply: HttpReply): number => {
    if (reply.ok) {
      const head = encoder.encode(JSON.stringify({ status: reply.status, headers: reply.headers, url: reply.url }));
      last = { parts: [head, reply.body, EMPTY] };
    } else {
      last = { parts: [EMPTY, EMPTY, encoder.encode(reply.message)] };
      if (reply.denial !== undefined) options.onDenial({ operation: HTTP_DENIAL_OPERATION, ...reply.denial });
    }
    // The memory may not have moved while the guest was blocked, but take it afresh anyway.
    const view = new DataView(options.memory().buffer);
    const [head, body, error] = last.parts;
    view.setUint32(out, reply.ok ? reply.status : 0, true);
    view.setUint32(out + 4, head.byteLength, true);
    view.setUint32(out + 8, body.byteLength, true);
    view.setUint32(out + 12, error.byteLength, true);
    return reply.ok ? HttpResult.OK : reply.result;
  };

  return {
    request: (headPtrArg, headLenArg, bodyPtrArg, bodyLenArg, outArg) => {
      const u8 = options.memory();
      // i32 arguments arrive as signed numbers: take them as the u32s they are.
      const headPtr = headPtrArg >>> 0;
      const headLen = headLenArg >>> 0;
      const bodyPtr = bodyPtrArg >>> 0;
      const bodyLen = bodyLenArg >>> 0;
      const out = outArg >>> 0;
      if (!inBounds(u8, headPtr, headLen) || !inBounds(u8, bodyPtr, bodyLen) || !inBounds(u8, out, HTTP_OUT_BYTES)) return HttpResult.FAULT;
      const head = u8.slice(headPtr, headPtr + Math.min(headLen, MAX_HTTP_REQUEST_HEAD_BYTES));
      const refuse = (result: typeof HttpResult.DENIED | typeof HttpResult.INVALID, reason: string): number =>
        finish(out, { ok: false, result, message: reason, denial: { path: urlOfHead(head), reason } });
      if (headLen > MAX_HTTP_REQUEST_HEAD_BYTES)
        return refuse(HttpResult.INVALID, `the request head is larger than ${MAX_HTTP_REQUEST_HEAD_BYTES} bytes`);
      if (bodyLen > MAX_HTTP_REQUEST_BODY_BYTES)
        return refuse(HttpResult.INVALID, `the request body is larger than ${MAX_HTTP_REQUEST_BODY_BYTES} bytes`);
      if (options.transport === undefined) return refuse(HttpResult.DENIED, "the policy does not grant network access");
      const body = u8.slice(bodyPtr, bodyPtr + bodyLen);
      options.flush?.();
      const reply = options.transport.send(head, body);
      if (!reply.ok && reply.runOutOfTime) options.endRunOutOfTime(reply.message);
      return finish(out, reply);
    },
    read: (partArg, offsetArg, bufArg, lenArg, nreadArg) => {
      const u8 = options.memory();
      const part = partArg >>> 0;
      const offset = offsetArg >>> 0;
      const buf = bufArg >>> 0;
      const len = lenArg >>> 0;
      const nread = nreadArg >>> 0;
      if (!inBounds(u8, buf, len) || !inBounds(u8, nread, 4)) return HttpResult.FAULT;
      if (last === undefined || part > HttpPart.ERROR) return HttpResult.FAULT;
      const data = last.parts[part] as Uint8Array;
      const start = Math.min(offset, data.byteLength);
      const n = Math.min(len, data.byteLength - start);
      u8.set(data.subarray(start, start + n), buf);
      new DataView(u8.buffer).setUint32(nread, n, true);
      return HttpResult.OK;
    },
  };
}
