/**
 * Outbound host patterns: a policy's allowed_hosts entries and the operator's
 * --allow-network-host ceiling share one syntax (Spin's): `scheme://host[:port]`,
 * scheme http or https, the port defaulting from the scheme, `*.` before a DNS
 * name for any of its subdomains (not the name itself), IP literals as written
 * in URLs. Hosts are compared in the form WHATWG URL parsing gives them
 * (lowercase, punycode, canonical IPv4, bracketed compressed IPv6), so
 * `http://0x7f.1` and `http://127.0.0.1` are the same host and a pattern can
 * never be dodged by spelling an address differently.
 */
import { isIP } from "node:net";
import { domainToASCII } from "node:url";

/** One parsed pattern. */
export interface HostPattern {
  /** The pattern as written, for messages. */
  readonly text: string;
  readonly scheme: "http" | "https";
  /** Canonical host; for a wildcard, the name after `*.`. */
  readonly host: string;
  /** `*.host`: any subdomain of host, at any depth. */
  readonly wildcard: boolean;
  /** True when host is an IPv4 or (bracketed) IPv6 literal. */
  readonly ipLiteral: boolean;
  readonly port: number;
}

/** The port a URL of this scheme uses when it names none. */
export const DEFAULT_PORTS = { http: 80, https: 443 } as const;

const PATTERN = /^(https?):\/\/(\*\.)?(\[[0-9A-Fa-f:.]+\]|[^/?#@\s:[\]]+)(?::([0-9]{1,5}))?$/;
/** One DNS label after punycode: letters, digits, hyphens, underscores (some services use them), not at the ends. */
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Parses one pattern; an Error says what is wrong with it. */
export function parseHostPattern(text: string): HostPattern | Error {
  const m = PATTERN.exec(text);
  if (m === null) return new Error(`${JSON.stringify(text)} is not scheme://host[:port] (scheme http or https, no path, no user)`);
  const scheme = m[1] as "http" | "https";
  const wildcard = m[2] !== undefined;
  const rawHost = m[3] as string;
  const port = m[4] === undefined ? DEFAULT_PORTS[scheme] : Number(m[4]);
  if (port < 1 || port > 65_535) return new Error(`${JSON.stringify(text)}: port ${port} is out of range`);
  if (wildcard) {
    // domainToASCII would read a numeric-looking suffix ("*.3.4") as an IPv4 address; a wildcard is always a name.
    const suffix = trimDot(domainToASCII(rawHost));
    const labels = suffix.split(".");
    if (suffix === "" || !labels.every((l) => LABEL.test(l)) || /^[0-9]+$/.test(labels[labels.length - 1] as string)) {
      return new Error(`${JSON.stringify(text)}: a wildcard must be followed by a DNS name`);
    }
    return { text, scheme, host: suffix, wildcard, ipLiteral: false, port };
  }
  let host: string;
  try {
    host = canonicalHost(new URL(`${scheme}://${rawHost}`));
  } catch (e: unknown) {
    return new Error(`${JSON.stringify(text)}: ${JSON.stringify(rawHost)} is not a valid host`, { cause: e });
  }
  const ipLiteral = isIpLiteral(host);
  if (!ipLiteral && !host.split(".").every((l) => LABEL.test(l)))
    return new Error(`${JSON.stringify(text)}: ${JSON.stringify(rawHost)} is not a valid host`);
  return { text, scheme, host, wildcard, ipLiteral, port };
}

/** Parses every pattern, or returns the first error. */
export function parseHostPatterns(texts: readonly string[]): HostPattern[] | Error {
  const out: HostPattern[] = [];
  for (const text of texts) {
    const p = parseHostPattern(text);
    if (p instanceof Error) return p;
    out.push(p);
  }
  return out;
}

/** The host of a parsed URL as patterns hold it: lowercase, without a trailing dot. */
export function canonicalHost(url: URL): string {
  return trimDot(url.hostname);
}

/** Whether a canonical host is an IP literal (IPv6 ones keep their brackets, as in URLs). */
export function isIpLiteral(host: string): boolean {
  return host.startsWith("[") || isIP(host) !== 0;
}

/** The port a URL connects to. */
export function portOf(url: URL): number {
  return url.port !== "" ? Number(url.port) : url.protocol === "https:" ? DEFAULT_PORTS.https : DEFAULT_PORTS.http;
}

/** Whether `pattern` lets a request go to `url` (scheme, host and port). */
export function patternMatches(pattern: HostPattern, url: URL): boolean {
  if (url.protocol !== `${pattern.scheme}:` || portOf(url) !== pattern.port) return false;
  const host = canonicalHost(url);
  if (!pattern.wildcard) return host === pattern.host;
  return !isIpLiteral(host) && host.endsWith(`.${pattern.host}`);
}

/** The first pattern that lets a request go to `url`, if any. */
export function findMatch(patterns: readonly HostPattern[], url: URL): HostPattern | undefined {
  return patterns.find((p) => patternMatches(p, url));
}

/** Whether everything `entry` allows is also allowed by `ceiling`. An exact IP literal is covered only by the same literal. */
export function patternCovers(ceiling: HostPattern, entry: HostPattern): boolean {
  if (ceiling.scheme !== entry.scheme || ceiling.port !== entry.port) return false;
  if (!ceiling.wildcard) return !entry.wildcard && ceiling.host === entry.host;
  if (entry.ipLiteral) return false;
  return entry.host.endsWith(`.${ceiling.host}`) || (entry.wildcard && entry.host === ceiling.host);
}

function trimDot(host: string): string {
  return host.endsWith(".") ? host.slice(0, -1) : host;
}
