import { expect } from "chai";
import { parseHostPatterns } from "../../src/policy/host-patterns.js";
import { parseCidr, type CidrRange, type Resolver } from "../../src/runtime/net/address-rules.js";
import { HttpResult } from "../../src/runtime/net/http-abi.js";
import { performOutbound, type OutboundContext, type OutboundLogEntry } from "../../src/runtime/net/outbound-http.js";
import { startLoopbackServer, type LoopbackServer } from "../helpers/loopback-http.js";

const LOOPBACK = parseCidr("127.0.0.0/8") as CidrRange;

/**
 * The main thread's request logic against a loopback server, with names resolved by an injected
 * resolver (no DNS): every name below exists only in the test's table, and resolves only to 127.0.0.1
 * or to addresses that are refused before any connection is made.
 */
describe("network: outbound requests (main thread)", function () {
  this.timeout(30_000);
  let server: LoopbackServer;
  let lookups: string[];
  let logs: OutboundLogEntry[];

  before(async () => {
    server = await startLoopbackServer({
      "/echo": (req, res) => res.writeHead(200).end(JSON.stringify({ host: req.headers.host })),
      "/to-rebind": (_req, res) => res.writeHead(302, { location: `http://rebind.test:${server.port}/echo` }).end(),
      "/to-other": (_req, res) => res.writeHead(301, { location: `http://other.test:${server.port}/echo` }).end(),
      "/truncated": (_req, res) => {
        res.writeHead(200, { "content-length": "100" });
        res.write("short", () => res.socket?.destroy());
      },
    });
  });
  after(async () => {
    await server.close();
  });
  beforeEach(() => {
    lookups = [];
    logs = [];
  });

  const resolver: Resolver = async (name) => {
    lookups.push(name);
    const table: Record<string, string[]> = {
      "api.test": ["127.0.0.1"],
      "other.test": ["127.0.0.1"],
      // A name an attacker controls: one answer the operator opened (loopback here) and one private one. (Mixes with
      // public answers are tested in network-rules without connecting: here a bug must never reach a non-loopback address.)
      "rebind.test": ["127.0.0.1", "10.0.0.1"],
    };
    const found = table[name];
    if (!found) throw Object.assign(new Error(`ENOTFOUND ${name}`), { code: "ENOTFOUND" });
    return found.map((address) => ({ address, family: 4 as const }));
  };

  function ctx(hosts: string[], opened: CidrRange[] = [LOOPBACK], extra: Partial<OutboundContext["grant"]> = {}): OutboundContext {
    const allowedHosts = parseHostPatterns(hosts);
    if (allowedHosts instanceof Error) throw allowedHosts;
    return {
      grant: { allowedHosts, maxRequests: 10, maxResponseBytes: 1 << 20, requestTimeoutMs: 5_000, ...extra },
      opened,
      resolver,
      usage: { requests: 0, responseBytes: 0 },
      log: (e) => logs.push(e),
    };
  }
  const head = (url: string): Uint8Array => new TextEncoder().encode(JSON.stringify({ url }));
  const go = (url: string, c: OutboundContext): ReturnType<typeof performOutbound> =>
    performOutbound(head(url), new Uint8Array(0), c, new AbortController().signal);

  it("connects to the address the name was vetted at, resolving it once, and sends the name as Host", async () => {
    const reply = await go(`http://api.test:${server.port}/echo`, ctx([`http://api.test:${server.port}`]));
    if (!reply.ok) throw new Error(reply.message);
    expect(JSON.parse(Buffer.from(reply.body).toString())).to.deep.equal({ host: `api.test:${server.port}` });
    expect(lookups).to.deep.equal(["api.test"]);
    expect(logs).to.deep.equal([{ host: "api.test", method: "GET", status: 200, bytes: reply.body.byteLength, ms: logs[0]?.ms }]);
  });

  it("refuses a name that resolves to loopback when no range is opened, before connecting", async () => {
    const before = server.seen.length;
    const reply = await go(`http://api.test:${server.port}/echo`, ctx([`http://api.test:${server.port}`], []));
    expect(reply).to.deep.equal({
      ok: false,
      result: HttpResult.DENIED,
      message: "api.test resolved to 127.0.0.1 (loopback)",
      denial: { path: `http://api.test:${server.port}/echo`, reason: "api.test resolved to 127.0.0.1 (loopback)" },
    });
    expect(server.seen.length).to.equal(before);
    expect(logs).to.deep.equal([]);
  });

  it("refuses a name if any of its answers is refused, though another is allowed", async () => {
    const before = server.seen.length;
    const reply = await go(`http://rebind.test:${server.port}/echo`, ctx([`http://rebind.test:${server.port}`]));
    expect(reply).to.deep.include({ ok: false, result: HttpResult.DENIED, message: "rebind.test resolved to 10.0.0.1 (private)" });
    expect(server.seen.length).to.equal(before);
  });

  it("re-checks each redirect hop against the address rules", async () => {
    const c = ctx([`http://api.test:${server.port}`, `http://rebind.test:${server.port}`], [LOOPBACK]);
    const reply = await go(`http://api.test:${server.port}/to-rebind`, c);
    expect(reply).to.deep.include({ ok: false, result: HttpResult.DENIED });
    expect((reply as { message: string }).message).to.equal(
      `redirect from http://api.test:${server.port}/to-rebind: rebind.test resolved to 10.0.0.1 (private)`,
    );
    expect(lookups).to.deep.equal(["api.test", "rebind.test"]);
  });

  it("re-checks each redirect hop against allowed_hosts, and counts each hop as a request", async () => {
    const c = ctx([`http://api.test:${server.port}`, `http://other.test:${server.port}`], [LOOPBACK], { maxRequests: 1 });
    const reply = await go(`http://api.test:${server.port}/to-other`, c);
    expect(reply).to.deep.include({ ok: false, result: HttpResult.LIMIT });
    expect(c.usage.requests).to.equal(1);
    const open = ctx([`http://api.test:${server.port}`, `http://other.test:${server.port}`]);
    const followed = await go(`http://api.test:${server.port}/to-other`, open);
    expect(followed).to.deep.include({ ok: true, url: `http://other.test:${server.port}/echo` });
    expect(open.usage.requests).to.equal(2);
    expect(logs.map((l) => [l.host, l.status])).to.deep.equal([
      ["api.test", 301],
      ["api.test", 301],
      ["other.test", 200],
    ]);
  });

  it("a server that closes the connection mid-body is FAILED at once, not a wait for the request timeout", async () => {
    const started = Date.now();
    const reply = await go(`${server.origin}/truncated`, ctx([server.origin], [], { requestTimeoutMs: 20_000 }));
    expect(reply).to.deep.include({ ok: false, result: HttpResult.FAILED });
    expect(Date.now() - started).to.be.below(5_000);
  });

  it("a name that does not resolve is FAILED, not a denial", async () => {
    const reply = await go("http://nowhere.test/", ctx(["http://nowhere.test"]));
    expect(reply).to.deep.equal({ ok: false, result: HttpResult.FAILED, message: "nowhere.test does not resolve (ENOTFOUND)" });
  });

  it("an IP literal matched by an exact entry is allowed as named, without the address rules", async () => {
    const reply = await go(`${server.origin}/echo`, ctx([server.origin], []));
    expect(reply).to.deep.include({ ok: true, status: 200 });
    expect(lookups).to.deep.equal([]);
  });
});
