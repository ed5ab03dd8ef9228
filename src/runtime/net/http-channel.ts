/**
 * How a guest's request crosses from its worker to the main thread and back.
 * The guest is synchronous wasm: its host call must not return before the
 * response is in. So the worker posts the request on a MessagePort of its own
 * run, then sleeps in Atomics.wait on a shared cell; the main thread does the
 * request with Node's http/https, posts the reply on the port and wakes it; the
 * worker takes the reply with receiveMessageOnPort, which needs no event loop.
 * The wait is cut into slices (termination also ends it) and never outlasts the
 * run's remaining time, so a time limit or a cancel still ends the run at once; a
 * wait that reaches the run's deadline ends the run as a timeout (see guest-http.ts).
 */
import { MessageChannel, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { performance } from "node:perf_hooks";
import { HttpResult, type HttpResultCode } from "./http-abi.js";

/** What the worker sends: the head JSON and body exactly as the guest wrote them. */
export interface HttpCall {
  readonly seq: number;
  readonly head: Uint8Array;
  readonly body: Uint8Array;
}

/** A response, whatever its status. */
export interface HttpResponseReply {
  readonly ok: true;
  readonly status: number;
  /** Header pairs as the server sent them. */
  readonly headers: readonly (readonly [string, string])[];
  /** The URL that answered, after redirects. */
  readonly url: string;
  readonly body: Uint8Array;
}

/** A request that got no response; `denial` is set when the policy or a rule refused it (it becomes a Denial). */
export interface HttpFailureReply {
  readonly ok: false;
  readonly result: Exclude<HttpResultCode, typeof HttpResult.OK>;
  readonly message: string;
  readonly denial?: { readonly path: string; readonly reason: string };
  /** Set by the worker's end alone: the run's own time ran out while it waited, so the run ends as a timeout. */
  readonly runOutOfTime?: true;
}

/** The main thread's answer to one HttpCall. */
export type HttpReply = HttpResponseReply | HttpFailureReply;

/** The worker's end of a run's channel, sent to it with the run. */
export interface HttpChannelEnd {
  readonly port: MessagePort;
  /** Set to 1 and notified when a reply has been posted. */
  readonly signal: Int32Array;
}

/** Index of the "a reply is waiting" flag in the signal cell. */
const REPLIED = 0;
/** Longest single Atomics.wait; the worker looks at the time and the port between slices. */
const WAIT_SLICE_MS = 100;

/** A fresh channel for one run: the main thread keeps `main`, the worker gets `worker` (transfer its port). */
export function createHttpChannel(): { main: HttpChannelEnd; worker: HttpChannelEnd } {
  const { port1, port2 } = new MessageChannel();
  const signal = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
  return { main: { port: port1, signal }, worker: { port: port2, signal } };
}

/** Worker side: sends a call and blocks until its reply arrives or the run's deadline passes. */
export class HttpChannelClient {
  private seq = 0;

  constructor(
    private readonly end: HttpChannelEnd,
    /** When the run's time runs out, in performance.now() time. */
    private readonly deadlineMs: number,
    /** The run's time limit, for the message. */
    private readonly timeoutMs: number,
  ) {}

  /** One request, synchronously. `body` is moved to the main thread (the caller must not reuse it). */
  send(head: Uint8Array, body: Uint8Array): HttpReply {
    const seq = ++this.seq;
    const { port, signal } = this.end;
    Atomics.store(signal, REPLIED, 0);
    port.postMessage({ seq, head, body } satisfies HttpCall, [body.buffer as ArrayBuffer]);
    for (;;) {
      const received = receiveMessageOnPort(port);
      if (received !== undefined) {
        const message = received.message as { seq: number; reply: HttpReply };
        if (message.seq === seq) return message.reply;
        continue;
      }
      const left = this.deadlineMs - performance.now();
      if (left <= 0) {
        // The daemon's timer ends the run at this moment too; on a loaded machine it can fire late, and the
        // guest must not carry on (and exit cleanly) past its time.
        return {
          ok: false,
          result: HttpResult.TIMEOUT,
          message: `wall-clock limit of ${this.timeoutMs} ms exceeded while waiting for an HTTP response`,
          runOutOfTime: true,
        };
      }
      Atomics.wait(signal, REPLIED, 0, Math.min(left, WAIT_SLICE_MS));
      Atomics.store(signal, REPLIED, 0);
    }
  }
}

/**
 * Main side: answers each call on `end` with `handle`, until closed. Closing aborts the calls in flight
 * (the run ended: time limit, cancel or exit) and drops their replies.
 */
export function serveHttpChannel(
  end: HttpChannelEnd,
  handle: (call: HttpCall, signal: AbortSignal) => Promise<HttpReply>,
): { close(): void } {
  const abort = new AbortController();
  end.port.on("message", (call: HttpCall) => {
    void handle(call, abort.signal).then((reply) => {
      if (abort.signal.aborted) return;
      end.port.postMessage({ seq: call.seq, reply }, reply.ok ? [reply.body.buffer as ArrayBuffer] : []);
      Atomics.store(end.signal, REPLIED, 1);
      Atomics.notify(end.signal, REPLIED);
    });
  });
  return {
    close: () => {
      abort.abort();
      end.port.close();
    },
  };
}
