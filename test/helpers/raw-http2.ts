/**
 * A gRPC call made with Node's own HTTP/2 client, for tests that need a client
 * which really stops reading: grpc-js keeps pulling messages into its own
 * buffers while its stream is paused, so only a paused HTTP/2 stream leaves the
 * server's flow-control window closed.
 */
import http2 from "node:http2";
import net from "node:net";

/** A gRPC call on its own connection, whose response stream is never read. */
export interface UnreadCall {
  /** Closes the connection (the server sees the call cancelled). */
  close(): void;
}

/** Opens `path` (e.g. `/sandbox.v1.SandboxService/StreamOutput`) with one length-prefixed request and reads nothing back. */
export function openUnreadCall(socketPath: string, methodPath: string, requestBytes: Uint8Array): UnreadCall {
  const session = http2.connect("http://localhost", { createConnection: () => net.connect(socketPath) });
  session.on("error", () => undefined);
  const frame = Buffer.alloc(5 + requestBytes.byteLength);
  frame.writeUInt32BE(requestBytes.byteLength, 1);
  frame.set(requestBytes, 5);
  const stream = session.request({ ":method": "POST", ":path": methodPath, "content-type": "application/grpc", te: "trailers" });
  stream.on("error", () => undefined);
  stream.end(frame);
  stream.pause();
  return { close: () => session.destroy() };
}

/**
 * Sends `count` calls of `methodPath` on one connection, each cancelled (RST_STREAM) in the tick it is
 * sent or a moment later (the cancel then lands before, while or after the server decodes the request);
 * resolves when all closed.
 */
export async function sendCancelledCalls(socketPath: string, methodPath: string, requestBytes: Uint8Array, count: number): Promise<void> {
  const session = http2.connect("http://localhost", { createConnection: () => net.connect(socketPath) });
  session.on("error", () => undefined);
  const frame = Buffer.alloc(5 + requestBytes.byteLength);
  frame.writeUInt32BE(requestBytes.byteLength, 1);
  frame.set(requestBytes, 5);
  const closed: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const stream = session.request({ ":method": "POST", ":path": methodPath, "content-type": "application/grpc", te: "trailers" });
    stream.on("error", () => undefined);
    closed.push(new Promise((resolve) => stream.once("close", () => resolve())));
    stream.end(frame);
    const cancel = (): void => stream.close(http2.constants.NGHTTP2_CANCEL);
    if (i % 4 === 0) cancel();
    else if (i % 4 === 1) setImmediate(cancel);
    else setTimeout(cancel, i % 4 === 2 ? 0 : i % 3);
  }
  await Promise.all(closed);
  session.close();
}
