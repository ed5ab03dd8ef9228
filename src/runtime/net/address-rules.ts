/**
 * Which addresses a script's outbound request may connect to. A name on the
 * allow-list says nothing about where it resolves: an attacker who controls a
 * name's DNS can point it at 127.0.0.1, at the cloud metadata service on
 * 169.254.169.254, or at the operator's private network. So every address a name
 * resolves to is checked against the special-purpose ranges below (smokescreen's
 * and Deno's approach), the name is refused if any of them is special, and the
 * connection then goes to exactly the vetted addresses with no second lookup.
 * An operator opens a range on purpose with --allow-private-network CIDR.
 */
import { lookup } from "node:dns/promises";
import { isIPv4, isIPv6 } from "node:net";

/** An address range: a network number and a prefix length in one family. */
export interface CidrRange {
  /** As written by the operator or in the table below, for messages. */
  readonly text: string;
  readonly family: 4 | 6;
  readonly network: bigint;
  readonly prefix: number;
}

/** One address a name resolved to. */
export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

/** Resolves a name to all its addresses (the daemon uses the system resolver; tests inject one). */
export type Resolver = (hostname: string) => Promise<readonly ResolvedAddress[]>;

/** The system resolver (getaddrinfo: /etc/hosts, then DNS), every address in the order it gives them. */
export const systemResolver: Resolver = async (hostname) => {
  const found = await lookup(hostname, { all: true, verbatim: true });
  return found.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

/** Parses `a.b.c.d/n`, `x:y::/n`, or a bare address (a single-address range); an Error says what is wrong. */
export function parseCidr(text: string): CidrRange | Error {
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const parsed = parseAddress(address);
  if (parsed === undefined) return new Error(`${JSON.stringify(text)} is not an IPv4 or IPv6 address or CIDR range`);
  const bits = parsed.family === 4 ? 32 : 128;
  const prefixText = slash < 0 ? String(bits) : text.slice(slash + 1);
  const prefix = /^[0-9]{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= bits)) return new Error(`${JSON.stringify(text)}: the prefix length must be 0 to ${bits}`);
  const hostBits = BigInt(bits - prefix);
  if ((parsed.value & ((1n << hostBits) - 1n)) !== 0n)
    return new Error(`${JSON.stringify(text)}: bits are set after the /${prefix} prefix`);
  return { text, family: parsed.family, network: parsed.value, prefix };
}

/** Whether `address` (an IP string as the resolver or URL gives it) lies in `range`. */
export function inRange(range: CidrRange, address: string): boolean {
  const parsed = parseAddress(address);
  if (parsed === undefined || parsed.family !== range.family) return false;
  const hostBits = BigInt((range.family === 4 ? 32 : 128) - range.prefix);
  return parsed.value >> hostBits === range.network >> hostBits;
}

/** Special-purpose ranges a script may never reach unless the operator opens them; the label is what a denial says. */
const SPECIAL_RANGES: readonly { readonly range: CidrRange; readonly label: string }[] = (
  [
    ["0.0.0.0/8", "unspecified"],
    ["10.0.0.0/8", "private"],
    ["100.64.0.0/10", "CGNAT"],
    ["127.0.0.0/8", "loopback"],
    ["169.254.0.0/16", "link-local, cloud metadata"],
    ["172.16.0.0/12", "private"],
    ["192.0.0.0/24", "reserved"],
    ["192.0.2.0/24", "reserved"],
    ["192.168.0.0/16", "private"],
    ["198.18.0.0/15", "reserved"],
    ["198.51.100.0/24", "reserved"],
    ["203.0.113.0/24", "reserved"],
    ["224.0.0.0/4", "multicast"],
    ["240.0.0.0/4", "reserved"],
    ["::/128", "unspecified"],
    ["::1/128", "loopback"],
    ["::ffff:0:0/96", "IPv4-mapped IPv6"],
    ["::ffff:0:0:0/96", "IPv4-translated IPv6"],
    ["::/96", "IPv4-compatible IPv6"],
    ["64:ff9b::/96", "NAT64, IPv4-embedding IPv6"],
    ["64:ff9b:1::/48", "NAT64, IPv4-embedding IPv6"],
    ["100::/64", "reserved"],
    ["2001::/32", "Teredo, IPv4-embedding IPv6"],
    ["2001:db8::/32", "reserved"],
    ["2002::/16", "6to4, IPv4-embedding IPv6"],
    ["fc00::/7", "private"],
    ["fe80::/10", "link-local"],
    ["fec0::/10", "site-local"],
    ["ff00::/8", "multicast"],
  ] as const
).map(([text, label]) => ({ range: parseCidr(text) as CidrRange, label }));

/**
 * Why `address` may not be connected to, or undefined if it may: it is in a special-purpose range
 * and in none of the ranges the operator opened. An address that does not parse is refused.
 */
export function addressRefusal(address: string, opened: readonly CidrRange[]): string | undefined {
  if (parseAddress(address) === undefined) return `${address} is not an IP address`;
  if (opened.some((r) => inRange(r, address))) return undefined;
  const special = SPECIAL_RANGES.find((s) => inRange(s.range, address));
  return special === undefined ? undefined : `${withoutZone(address)} (${special.label})`;
}

/** What vetting a name gave: the addresses to connect to, a refusal (a denial), or a resolver failure. */
export type Vetted =
  | { readonly ok: true; readonly addresses: readonly ResolvedAddress[] }
  | { readonly ok: false; readonly denied: true; readonly reason: string }
  | { readonly ok: false; readonly denied: false; readonly reason: string };

/** Resolves `hostname` and refuses it if any address it resolves to is refused (an attacker's name may mix good and bad answers). */
export async function resolveAndVet(hostname: string, resolver: Resolver, opened: readonly CidrRange[]): Promise<Vetted> {
  let addresses: readonly ResolvedAddress[];
  try {
    addresses = await resolver(hostname);
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    return { ok: false, denied: false, reason: `${hostname} does not resolve${code ? ` (${code})` : ""}` };
  }
  if (addresses.length === 0) return { ok: false, denied: false, reason: `${hostname} does not resolve` };
  for (const a of addresses) {
    const refusal = addressRefusal(a.address, opened);
    if (refusal !== undefined) return { ok: false, denied: true, reason: `${hostname} resolved to ${refusal}` };
  }
  return { ok: true, addresses };
}

function withoutZone(address: string): string {
  const zone = address.indexOf("%");
  return zone < 0 ? address : address.slice(0, zone);
}

/** An address as a number in its family; undefined if it is not one. IPv6 zone ids (`%eth0`) are ignored. */
function parseAddress(text: string): { family: 4 | 6; value: bigint } | undefined {
  const address = withoutZone(text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text);
  if (isIPv4(address)) return { family: 4, value: ipv4Value(address) };
  if (!isIPv6(address)) return undefined;
  // An embedded dotted quad ("::ffff:1.2.3.4") stands for the last two groups.
  let groupsText = address;
  const lastColon = address.lastIndexOf(":");
  const tail = address.slice(lastColon + 1);
  if (tail.includes(".")) {
    const v4 = ipv4Value(tail);
    groupsText = `${address.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, rest] = groupsText.split("::") as [string, string | undefined];
  const headGroups = head === "" ? [] : head.split(":");
  const restGroups = rest === undefined || rest === "" ? [] : rest.split(":");
  const missing = 8 - headGroups.length - restGroups.length;
  const groups = rest === undefined ? headGroups : [...headGroups, ...Array<string>(missing).fill("0"), ...restGroups];
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(parseInt(g, 16));
  return { family: 6, value };
}

function ipv4Value(address: string): bigint {
  return address.split(".").reduce((v, part) => (v << 8n) | BigInt(Number(part)), 0n);
}
