/**
 * Serves a metrics registry as Prometheus text on GET /metrics (--metrics-listen HOST:PORT).
 * Anything else is 404; a scrape never blocks a call for longer than collecting the gauges.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

/** A listening metrics endpoint. */
export interface MetricsEndpoint {
  /** `HOST:PORT` it listens on (the real port when 0 was asked). */
  readonly address: string;
  close(): Promise<void>;
}

/** Parses `HOST:PORT` (`[v6]:PORT` too); parsers return errors, callers throw. */
export function parseMetricsListen(text: string): { host: string; port: number } | Error {
  const match = /^(?:\[([0-9a-fA-F:]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) return new Error(`--metrics-listen takes HOST:PORT (e.g. 127.0.0.1:9464), got ${JSON.stringify(text)}`);
  return { host: (match[1] ?? match[2])!, port };
}

/** Starts serving `registry` on `host:port`. */
export async function serveMetrics(registry: Registry, host: string, port: number): Promise<MetricsEndpoint> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? "").split("?")[0];
    if (request.method !== "GET" || path !== "/metrics") {
      response.writeHead(404, { "content-type": "text/plain" }).end("sandboxd serves metrics at GET /metrics\n");
      return;
    }
    registry.metrics().then(
      (text) => response.writeHead(200, { "content-type": registry.contentType }).end(text),
      (e: unknown) =>
        response
          .writeHead(500, { "content-type": "text/plain" })
          .end(`collecting metrics failed: ${e instanceof Error ? e.message : String(e)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  return {
    address: `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
