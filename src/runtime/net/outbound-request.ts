/**
 * What a guest may put in a request, checked before anything leaves the daemon:
 * the head's JSON shape, the URL, the method and the headers. Headers that
 * steer the connection or its framing (Host, Connection, Transfer-Encoding,
 * Upgrade, Proxy-* and the like, as wasmtime-wasi-http forbids) are the
 * host's to set: a guest that could set them could smuggle a second request
 * or reach a host other than the one that was vetted.
 */
import { validateHeaderName, validateHeaderValue } from "node:http";
import { MAX_HTTP_URL_BYTES } from "../../limits.js";

/** A guest's request after parsing, before the policy is consulted. */
export interface OutboundRequest {
  readonly method: string;
  readonly url: URL;
  readonly headers: readonly (readonly [string, string])[];
  /** false: a 3xx comes back to the guest as it is, instead of being followed. */
  readonly followRedirects: boolean;
}

/** Header names a guest may not set (lowercase), and any name starting with `proxy-`. */
export const FORBIDDEN_REQUEST_HEADERS: ReadonlySet<string> = new Set([
  "connection",
  "content-length",
  "host",
  "http2-settings",
  "keep-alive",
  "te",
  "transfer-encoding",
  "upgrade",
]);

/** Methods a guest may use; CONNECT would open a tunnel, TRACE echoes credentials back. */
const ALLOWED_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** A refused request: why, and the URL it named (as far as it could be read), for the denial. */
export interface RequestProblem {
  readonly message: string;
  readonly url: string;
}

/** Reads the URL a head names, as text, without judging it: what a denial of an unparseable or ungranted request reports. */
export function urlOfHead(head: Uint8Array): string {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(head.buffer, head.byteOffset, head.byteLength).toString("utf8"));
    const url = (parsed as { url?: unknown } | null)?.url;
    return typeof url === "string" ? url.slice(0, MAX_HTTP_URL_BYTES) : "";
  } catch {
    return "";
  }
}

/**
 * Parses the request head JSON, `{"method":"GET","url":"https://...","headers":[["name","value"],...],
 * "follow_redirects":true}` (method, headers and follow_redirects optional), and checks the URL, method and
 * headers. Returns the request or what is wrong with it.
 */
export function parseRequestHead(head: Uint8Array): OutboundRequest | RequestProblem {
  const urlText = urlOfHead(head);
  const problem = (message: string): RequestProblem => ({ message, url: urlText });
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(head));
  } catch (e: unknown) {
    return problem(`the request head is not UTF-8 JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return problem("the request head must be a JSON object");
  const fields = parsed as Record<string, unknown>;
  const unknown = Object.keys(fields).filter((k) => !["method", "url", "headers", "follow_redirects"].includes(k));
  if (unknown.length > 0) return problem(`the request head has unknown field(s): ${unknown.join(", ")}`);
  const method = fields["method"] ?? "GET";
  if (typeof method !== "string" || !ALLOWED_METHODS.has(method))
    return problem(`method ${JSON.stringify(method)} is not one of ${[...ALLOWED_METHODS].join(", ")}`);
  if (typeof fields["url"] !== "string") return problem("the request head needs a string url");
  const url = checkUrl(fields["url"]);
  if (typeof url === "string") return problem(url);
  const follow = fields["follow_redirects"] ?? true;
  if (typeof follow !== "boolean") return problem("follow_redirects must be true or false");
  const rawHeaders = fields["headers"] ?? [];
  if (!Array.isArray(rawHeaders)) return problem("headers must be an array of [name, value] pairs");
  const headers: [string, string][] = [];
  for (const pair of rawHeaders as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string" || typeof pair[1] !== "string") {
      return problem("headers must be an array of [name, value] string pairs");
    }
    const [name, value] = pair as [string, string];
    const refusal = headerRefusal(name, value);
    if (refusal !== undefined) return problem(refusal);
    headers.push([name, value]);
  }
  return { method, url, headers, followRedirects: follow };
}

/** A URL a request (or a redirect) may name: http or https, no credentials, within the length cap. Returns it or what is wrong. */
export function checkUrl(text: string): URL | string {
  if (Buffer.byteLength(text) > MAX_HTTP_URL_BYTES) return `the URL is longer than ${MAX_HTTP_URL_BYTES} bytes`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `${JSON.stringify(text)} is not an absolute URL`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    return `scheme ${url.protocol.slice(0, -1)} is not supported (only http and https)`;
  if (url.username !== "" || url.password !== "") return "credentials in the URL are not sent; use an Authorization header";
  url.hash = "";
  return url;
}

/** Why a guest may not send this header, or undefined if it may. */
export function headerRefusal(name: string, value: string): string | undefined {
  try {
    validateHeaderName(name);
    validateHeaderValue(name, value);
  } catch (e: unknown) {
    return `header ${JSON.stringify(name)} is invalid: ${e instanceof Error ? e.message : String(e)}`;
  }
  const lower = name.toLowerCase();
  if (FORBIDDEN_REQUEST_HEADERS.has(lower) || lower.startsWith("proxy-"))
    return `header ${JSON.stringify(name)} is set by the host, not the script`;
  return undefined;
}
