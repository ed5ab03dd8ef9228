/**
 * HTTP servers for the network tests: bound to 127.0.0.1 on a throwaway port,
 * never any other address. Each records what reached it, so a test can prove a
 * refused request never did.
 */
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** One request as the server saw it. */
export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage["headers"];
  readonly body: string;
}

/** A running loopback server. */
export interface LoopbackServer {
  readonly port: number;
  /** `http://127.0.0.1:<port>` */
  readonly origin: string;
  /** Requests received so far. */
  readonly seen: SeenRequest[];
  /** Connections currently open (a request the daemon gave up on should not stay open). */
  openConnections(): number;
  close(): Promise<void>;
}

/** Route handler: answer `res` (or never, for a server that hangs). */
export type Route = (req: IncomingMessage, res: ServerResponse, body: string) => void;

/** Starts a server on 127.0.0.1:0 answering by path; unknown paths get 404. */
export async function startLoopbackServer(routes: Readonly<Record<string, Route>>): Promise<LoopbackServer> {
  const seen: SeenRequest[] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      const route = routes[new URL(req.url ?? "/", "http://x").pathname];
      if (route) route(req, res, body);
      else res.writeHead(404).end("no such route");
    });
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const port = (server.address() as { port: number }).port;
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    seen,
    openConnections: () => sockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
