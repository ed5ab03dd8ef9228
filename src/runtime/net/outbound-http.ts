/**
 * The main thread's half of a guest's HTTP request: the policy's allow-list,
 * the address rules, the per-run limits, and the request itself over Node's own
 * http/https, redirects followed here so that every hop is checked exactly like
 * the first (Extism checked only the first URL; Spin's client once followed
 * redirects past its list).
 */
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import type { LookupAddress, LookupOneOptions } from "node:dns";
import { performance } from "node:perf_hooks";
import {
  MAX_HTTP_REDIRECTS,
  MAX_HTTP_REQUEST_BODY_BYTES,
  MAX_HTTP_REQUEST_HEAD_BYTES,
  MAX_HTTP_RESPONSE_HEAD_BYTES,
} from "../../limits.js";
import type { NetworkGrant } from "../../policy/authorize.js";
import { canonicalHost, findMatch, isIpLiteral, portOf } from "../../policy/host-patterns.js";
import { resolveAndVet, type CidrRange, type ResolvedAddress, type Resolver } from "./address-rules.js";
import { HttpResult } from "./http-abi.js";
import type { HttpFailureReply, HttpReply } from "./http-channel.js";
import { checkUrl, parseRequestHead, urlOfHead, type OutboundRequest } from "./outbound-request.js";

/** Statuses whose Location is followed. */
const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);
/** Headers that carry credentials: dropped when a redirect leaves the origin they were meant for. */
const CREDENTIAL_HEADERS: ReadonlySet<string> = new Set(["authorization", "cookie"]);
/** Headers that describe a body: dropped when a redirect turns the request into a GET without one. */
const BODY_HEADERS: ReadonlySet<string> = new Set(["content-type", "content-encoding", "content-language", "content-location"]);

/** One line of the daemon log per outbound request (each redirect hop is one); never a body or a full URL. */
export interface OutboundLogEntry {
  readonly host: string;
  readonly method: string;
  /** The response status, or 0 when none came. */
  readonly status: number;
  /** Response body bytes received. */
  readonly bytes: number;
  readonly ms: number;
  /** Why no response came, when none did. */
  readonly error?: string;
}

/** Counters of one run, shared by all its requests. */
export interface OutboundUsage {
  requests: number;
  responseBytes: number;
}

/** Everything one run's requests are checked against. */
export interface OutboundContext {
  readonly grant: NetworkGrant;
  /** Special-purpose ranges the operator opened (--allow-private-network). */
  readonly opened: readonly CidrRange[];
  readonly resolver: Resolver;
  readonly usage: OutboundUsage;
  log(entry: OutboundLogEntry): void;
}

/** Does one guest request (head JSON and body as the guest wrote them), following redirects, and never throws. */
export async function performOutbound(
  head: Uint8Array,
  body: Uint8Array,
  ctx: OutboundContext,
  runSignal: AbortSignal,
): Promise<HttpReply> {
  if (head.byteLength > MAX_HTTP_REQUEST_HEAD_BYTES)
    return invalid(urlOfHead(head), `the request head is larger than ${MAX_HTTP_REQUEST_HEAD_BYTES} bytes`);
  if (body.byteLength > MAX_HTTP_REQUEST_BODY_BYTES)
    return invalid(urlOfHead(head), `the request body is larger than ${MAX_HTTP_REQUEST_BODY_BYTES} bytes`);
  const parsed = parseRequestHead(head);
  if (!("method" in parsed)) return invalid(parsed.url, parsed.message);
  const timeoutMs = ctx.grant.requestTimeoutMs;
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), timeoutMs);
  const signal = AbortSignal.any([runSignal, timeout.signal]);
  try {
    return await follow(parsed, body, ctx, signal);
  } catch (e: unknown) {
    if (timeout.signal.aborted)
      return { ok: false, result: HttpResult.TIMEOUT, message: `no complete response within the ${timeoutMs} ms request timeout` };
    return { ok: false, result: HttpResult.FAILED, message: describeError(e) };
  } finally {
    clearTimeout(timer);
  }
}

async function follow(first: OutboundRequest, firstBody: Uint8Array, ctx: OutboundContext, signal: AbortSignal): Promise<HttpReply> {
  let request = first;
  let body = firstBody;
  let previous: URL | undefined;
  for (let hop = 0; ; hop++) {
    const url = request.url;
    const where = previous === undefined ? "" : `redirect from ${previous.href}: `;
    if (findMatch(ctx.grant.allowedHosts, url) === undefined) {
      return denied(url.href, `${where}${url.protocol}//${url.host} is not in allowed_hosts`);
    }
    if (ctx.usage.requests >= ctx.grant.maxRequests) {
      return limit(url.href, `${where}the run has made its ${ctx.grant.maxRequests} requests (max_http_requests)`);
    }
    const host = canonicalHost(url);
    let addresses: readonly ResolvedAddress[];
    if (isIpLiteral(host)) {
      // Only an exact pattern can match an IP literal, and the operator's ceiling had to name it exactly too: allowed as named.
      const address = host.startsWith("[") ? host.slice(1, -1) : host;
      addresses = [{ address, family: host.startsWith("[") ? 6 : 4 }];
    } else {
      const vetted = await resolveAndVet(host, ctx.resolver, ctx.opened);
      if (!vetted.ok) {
        return vetted.denied
          ? denied(url.href, `${where}${vetted.reason}`)
          : { ok: false, result: HttpResult.FAILED, message: `${where}${vetted.reason}` };
      }
      addresses = vetted.addresses;
    }
    signal.throwIfAborted();
    ctx.usage.requests++;
    const started = performance.now();
    let response: IncomingMessage;
    try {
      response = await send(request, body, addresses, signal);
    } catch (e: unknown) {
      ctx.log({ host, method: request.method, status: 0, bytes: 0, ms: Math.round(performance.now() - started), error: describeError(e) });
      throw e;
    }
    const status = response.statusCode ?? 0;
    const location = response.headers.location;
    if (request.followRedirects && REDIRECT_STATUSES.has(status) && location !== undefined) {
      response.destroy();
      ctx.log({ host, method: request.method, status, bytes: 0, ms: Math.round(performance.now() - started) });
      if (hop >= MAX_HTTP_REDIRECTS) return { ok: false, result: HttpResult.FAILED, message: `more than ${MAX_HTTP_REDIRECTS} redirects` };
      const next = redirected(request, body, status, location);
      if (typeof next === "string") return invalid(url.href, `${where}${next}`);
      previous = url;
      request = next.request;
      body = next.body;
      continue;
    }
    const room = ctx.grant.maxResponseBytes - ctx.usage.responseBytes;
    let received: { body: Uint8Array | undefined; bytes: number };
    try {
      received = await readBody(response, room, signal);
    } catch (e: unknown) {
      ctx.log({ host, method: request.method, status, bytes: 0, ms: Math.round(performance.now() - started), error: describeError(e) });
      throw e;
    }
    ctx.log({ host, method: request.method, status, bytes: received.bytes, ms: Math.round(performance.now() - started) });
    if (received.body === undefined) {
      ctx.usage.responseBytes = ctx.grant.maxResponseBytes;
      return limit(
        url.href,
        `the response body exceeds the ${room} bytes left of the run's ${ctx.grant.maxResponseBytes} (max_http_response_bytes)`,
      );
    }
    ctx.usage.responseBytes += received.bytes;
    const headers: [string, string][] = [];
    for (let i = 0; i + 1 < response.rawHeaders.length; i += 2)
      headers.push([response.rawHeaders[i] as string, response.rawHeaders[i + 1] as string]);
    return { ok: true, status, headers, url: url.href, body: received.body };
  }
}

/** The next hop of a redirect: its URL re-checked, method and body as browsers change them, credentials kept only within the origin. */
function redirected(
  request: OutboundRequest,
  body: Uint8Array,
  status: number,
  location: string,
): { request: OutboundRequest; body: Uint8Array } | string {
  let text: string;
  try {
    text = new URL(location, request.url).href;
  } catch {
    return `the server redirected to ${JSON.stringify(location.slice(0, 200))}, which is not a URL`;
  }
  const url = checkUrl(text);
  if (typeof url === "string") return `the server redirected to a URL that is refused: ${url}`;
  const toGet = (status === 303 && request.method !== "HEAD") || ((status === 301 || status === 302) && request.method === "POST");
  const sameOrigin = url.origin === request.url.origin;
  const headers = request.headers.filter(([name]) => {
    const lower = name.toLowerCase();
    return (sameOrigin || !CREDENTIAL_HEADERS.has(lower)) && (!toGet || !BODY_HEADERS.has(lower));
  });
  return {
    request: { method: toGet ? "GET" : request.method, url, headers, followRedirects: true },
    body: toGet ? new Uint8Array(0) : body,
  };
}

/** Sends one request to exactly `addresses` (the lookup is pinned: Node never resolves the name again). */
function send(
  request: OutboundRequest,
  body: Uint8Array,
  addresses: readonly ResolvedAddress[],
  signal: AbortSignal,
): Promise<IncomingMessage> {
  const url = request.url;
  const host = canonicalHost(url);
  const first = addresses[0] as ResolvedAddress;
  const lookup = (
    _hostname: string,
    options: LookupOneOptions & { all?: boolean },
    callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
  ): void => {
    if (options.all)
      callback(
        null,
        addresses.map((a) => ({ address: a.address, family: a.family })),
      );
    else callback(null, first.address, first.family);
  };
  // Headers go as a flat array, to keep the guest's order and repeated names exactly; Node then adds no Host of its own.
  const headers: [string, string][] = [["Host", url.host], ...request.headers.map(([n, v]): [string, string] => [n, v])];
  if (body.byteLength > 0 || !["GET", "HEAD", "DELETE", "OPTIONS"].includes(request.method))
    headers.push(["Content-Length", String(body.byteLength)]);
  const options: http.RequestOptions = {
    method: request.method,
    hostname: host.startsWith("[") ? host.slice(1, -1) : host,
    port: portOf(url),
    path: `${url.pathname}${url.search}`,
    headers: headers.flat(),
    lookup: lookup as unknown as http.RequestOptions["lookup"],
    agent: false,
    maxHeaderSize: MAX_HTTP_RESPONSE_HEAD_BYTES,
    signal,
  };
  return new Promise<IncomingMessage>((resolve, reject) => {
    const req = (url.protocol === "https:" ? https : http).request(options, resolve);
    req.on("error", reject);
    req.end(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
  });
}

/** Reads the body up to `room` bytes; `body` is undefined when it would exceed that (the response is then dropped). */
function readBody(response: IncomingMessage, room: number, signal: AbortSignal): Promise<{ body: Uint8Array | undefined; bytes: number }> {
  return new Promise((resolve, reject) => {
    const declared = Number(response.headers["content-length"]);
    if (Number.isFinite(declared) && declared > room) {
      response.destroy();
      resolve({ body: undefined, bytes: 0 });
      return;
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    const onAbort = (): void => {
      response.destroy();
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    response.on("data", (chunk: Buffer) => {
      bytes += chunk.byteLength;
      if (bytes > room) {
        signal.removeEventListener("abort", onAbort);
        response.destroy();
        resolve({ body: undefined, bytes });
        return;
      }
      chunks.push(chunk);
    });
    response.on("end", () => {
      signal.removeEventListener("abort", onAbort);
      // One buffer of its own: it is transferred to the worker, and a pooled Buffer's memory must never be.
      const body = new Uint8Array(bytes);
      let at = 0;
      for (const c of chunks) {
        body.set(c, at);
        at += c.byteLength;
      }
      resolve({ body, bytes });
    });
    response.on("error", (e) => {
      signal.removeEventListener("abort", onAbort);
      reject(e);
    });
  });
}

function denied(url: string, reason: string): HttpFailureReply {
  return { ok: false, result: HttpResult.DENIED, message: reason, denial: { path: url, reason } };
}

function invalid(url: string, reason: string): HttpFailureReply {
  return { ok: false, result: HttpResult.INVALID, message: reason, denial: { path: url, reason } };
}

function limit(url: string, reason: string): HttpFailureReply {
  return { ok: false, result: HttpResult.LIMIT, message: reason, denial: { path: url, reason } };
}

function describeError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "HPE_HEADER_OVERFLOW") return `the response head is larger than ${MAX_HTTP_RESPONSE_HEAD_BYTES} bytes`;
  return code !== undefined && !e.message.includes(code) ? `${code}: ${e.message}` : e.message;
}
