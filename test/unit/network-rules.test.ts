import { expect } from "chai";
import {
  addressRefusal,
  parseCidr,
  resolveAndVet,
  type CidrRange,
  type ResolvedAddress,
  type Resolver,
} from "../../src/runtime/net/address-rules.js";
import { findMatch, parseHostPattern, patternCovers, type HostPattern } from "../../src/policy/host-patterns.js";
import { checkUrl, headerRefusal, parseRequestHead } from "../../src/runtime/net/outbound-request.js";

function pattern(text: string): HostPattern {
  const p = parseHostPattern(text);
  if (p instanceof Error) throw p;
  return p;
}
function cidr(text: string): CidrRange {
  const r = parseCidr(text);
  if (r instanceof Error) throw r;
  return r;
}
/** A resolver that answers from a table and never asks DNS. */
function fakeResolver(table: Readonly<Record<string, readonly string[]>>): Resolver {
  return async (name) => {
    const found = table[name];
    if (found === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: "ENOTFOUND" });
    return found.map((address): ResolvedAddress => ({ address, family: address.includes(":") ? 6 : 4 }));
  };
}

describe("network: host patterns", () => {
  it("canonicalises hosts the way URLs do, so another spelling of an address is the same host", () => {
    expect(pattern("http://0x7f.1:8080")).to.include({ host: "127.0.0.1", port: 8080, ipLiteral: true });
    expect(pattern("https://API.Example.COM.")).to.include({ host: "api.example.com", port: 443, ipLiteral: false });
    expect(pattern("https://[::FFFF:127.0.0.1]")).to.include({ host: "[::ffff:7f00:1]", ipLiteral: true });
    expect(pattern("https://*.Bücher.example")).to.include({ host: "xn--bcher-kva.example", wildcard: true });
  });

  it("matches scheme, host and port; a wildcard matches subdomains at any depth but not its own name or an IP", () => {
    const list = [pattern("https://api.example.com"), pattern("http://*.example.org:8080")];
    const allowed = (u: string): boolean => findMatch(list, new URL(u)) !== undefined;
    expect(allowed("https://api.example.com/v1?q=1")).to.equal(true);
    expect(allowed("https://API.example.com.:443/")).to.equal(true);
    expect(allowed("http://api.example.com/")).to.equal(false);
    expect(allowed("https://api.example.com:8443/")).to.equal(false);
    expect(allowed("https://evil-api.example.com/")).to.equal(false);
    expect(allowed("https://api.example.com.evil.net/")).to.equal(false);
    expect(allowed("http://a.b.example.org:8080/")).to.equal(true);
    expect(allowed("http://example.org:8080/")).to.equal(false);
    expect(allowed("http://badexample.org:8080/")).to.equal(false);
  });

  it("an operator's wildcard covers narrower entries; an exact name or IP is covered only by itself", () => {
    expect(patternCovers(pattern("https://*.example.com"), pattern("https://api.example.com"))).to.equal(true);
    expect(patternCovers(pattern("https://*.example.com"), pattern("https://*.eu.example.com"))).to.equal(true);
    expect(patternCovers(pattern("https://*.example.com"), pattern("https://*.example.com"))).to.equal(true);
    expect(patternCovers(pattern("https://*.example.com"), pattern("https://example.com"))).to.equal(false);
    expect(patternCovers(pattern("https://api.example.com"), pattern("https://*.api.example.com"))).to.equal(false);
    expect(patternCovers(pattern("http://127.0.0.1:8080"), pattern("http://0x7f.1:8080"))).to.equal(true);
    expect(patternCovers(pattern("http://127.0.0.1:8080"), pattern("http://127.0.0.1:8081"))).to.equal(false);
  });
});

describe("network: address rules", () => {
  const refused: Array<[string, string]> = [
    ["127.0.0.1", "loopback"],
    ["127.8.9.10", "loopback"],
    ["::1", "loopback"],
    ["10.1.2.3", "private"],
    ["172.31.255.255", "private"],
    ["192.168.0.1", "private"],
    ["169.254.169.254", "link-local, cloud metadata"],
    ["100.64.0.1", "CGNAT"],
    ["0.0.0.0", "unspecified"],
    ["::", "unspecified"],
    ["224.0.0.251", "multicast"],
    ["ff02::1", "multicast"],
    ["fe80::1%lo", "link-local"],
    ["fd00:ec2::254", "private"],
    ["::ffff:127.0.0.1", "IPv4-mapped IPv6"],
    ["::ffff:a9fe:a9fe", "IPv4-mapped IPv6"],
    ["::127.0.0.1", "IPv4-compatible IPv6"],
    ["64:ff9b::a9fe:a9fe", "NAT64, IPv4-embedding IPv6"],
    ["2002:7f00:1::", "6to4, IPv4-embedding IPv6"],
    ["2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo, IPv4-embedding IPv6"],
    ["255.255.255.255", "reserved"],
  ];
  for (const [address, label] of refused) {
    it(`refuses ${address} (${label})`, () => {
      expect(addressRefusal(address, [])).to.equal(`${address.replace(/%.*/, "")} (${label})`);
    });
  }

  it("lets a public address through", () => {
    expect(addressRefusal("93.184.216.34", [])).to.equal(undefined);
    expect(addressRefusal("2606:2800:220:1:248:1893:25c8:1946", [])).to.equal(undefined);
  });

  it("an opened range lets exactly its addresses through, in its own family only", () => {
    const opened = [cidr("127.0.0.0/8"), cidr("10.1.0.0/16")];
    expect(addressRefusal("127.0.0.1", opened)).to.equal(undefined);
    expect(addressRefusal("10.1.200.3", opened)).to.equal(undefined);
    expect(addressRefusal("10.2.0.1", opened)).to.equal("10.2.0.1 (private)");
    expect(addressRefusal("::ffff:127.0.0.1", opened)).to.equal("::ffff:127.0.0.1 (IPv4-mapped IPv6)");
    expect(addressRefusal("::1", opened)).to.equal("::1 (loopback)");
  });

  it("vets every address a name resolves to, with an injected resolver (no DNS)", async () => {
    const resolver = fakeResolver({
      "public.test": ["93.184.216.34"],
      "rebind.test": ["93.184.216.34", "127.0.0.1"],
      "metadata.test": ["169.254.169.254"],
      "mapped.test": ["::ffff:10.0.0.1"],
      "loop.test": ["127.0.0.1", "::1"],
      "empty.test": [],
    });
    expect(await resolveAndVet("public.test", resolver, [])).to.deep.equal({
      ok: true,
      addresses: [{ address: "93.184.216.34", family: 4 }],
    });
    expect(await resolveAndVet("rebind.test", resolver, [])).to.deep.equal({
      ok: false,
      denied: true,
      reason: "rebind.test resolved to 127.0.0.1 (loopback)",
    });
    expect(await resolveAndVet("metadata.test", resolver, [])).to.deep.include({
      denied: true,
      reason: "metadata.test resolved to 169.254.169.254 (link-local, cloud metadata)",
    });
    expect(await resolveAndVet("mapped.test", resolver, [cidr("10.0.0.0/8")])).to.deep.include({ denied: true });
    expect(await resolveAndVet("loop.test", resolver, [cidr("127.0.0.0/8")])).to.deep.include({
      denied: true,
      reason: "loop.test resolved to ::1 (loopback)",
    });
    expect(await resolveAndVet("loop.test", resolver, [cidr("127.0.0.0/8"), cidr("::1/128")])).to.deep.include({ ok: true });
    expect(await resolveAndVet("nowhere.test", resolver, [])).to.deep.equal({
      ok: false,
      denied: false,
      reason: "nowhere.test does not resolve (ENOTFOUND)",
    });
    expect(await resolveAndVet("empty.test", resolver, [])).to.deep.include({ ok: false, denied: false });
  });

  it("parses CIDRs strictly", () => {
    expect(cidr("::1")).to.include({ family: 6, prefix: 128 });
    expect(cidr("fd00::/8")).to.include({ family: 6, prefix: 8 });
    expect(parseCidr("10.0.0.0/33")).to.be.instanceOf(Error);
    expect(parseCidr("10.0.0.1/8")).to.be.instanceOf(Error);
    expect(parseCidr("10.0.0.0/")).to.be.instanceOf(Error);
    expect(parseCidr("example.com")).to.be.instanceOf(Error);
  });
});

describe("network: request heads", () => {
  const head = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));

  it("parses method, URL, headers and follow_redirects, with GET and following as defaults", () => {
    const r = parseRequestHead(
      head({
        url: "https://api.example.com/x#frag",
        headers: [
          ["Accept", "a"],
          ["Accept", "b"],
        ],
      }),
    );
    if (!("method" in r)) throw new Error(r.message);
    expect(r.method).to.equal("GET");
    expect(r.url.href).to.equal("https://api.example.com/x");
    expect(r.headers).to.deep.equal([
      ["Accept", "a"],
      ["Accept", "b"],
    ]);
    expect(r.followRedirects).to.equal(true);
  });

  const bad: Array<[string, Uint8Array, string]> = [
    ["not JSON", new TextEncoder().encode("{"), "not UTF-8 JSON"],
    ["not UTF-8", Uint8Array.from([0x7b, 0xff, 0x7d]), "not UTF-8 JSON"],
    ["an unknown field", head({ url: "https://a.example", proxy: "x" }), "unknown field"],
    ["no url", head({}), "url"],
    ["CONNECT", head({ method: "CONNECT", url: "https://a.example" }), "CONNECT"],
    ["TRACE", head({ method: "TRACE", url: "https://a.example" }), "TRACE"],
    ["a lowercase method", head({ method: "get", url: "https://a.example" }), "get"],
    ["headers that are not pairs", head({ url: "https://a.example", headers: { a: "b" } }), "pairs"],
    ["a header with CR LF", head({ url: "https://a.example", headers: [["X", "a\r\nHost: evil"]] }), "invalid"],
    ["follow_redirects as a string", head({ url: "https://a.example", follow_redirects: "no" }), "follow_redirects"],
  ];
  for (const [what, bytes, mention] of bad) {
    it(`refuses ${what}`, () => {
      const r = parseRequestHead(bytes);
      expect(r).to.not.have.property("method");
      expect((r as { message: string }).message).to.contain(mention);
    });
  }

  it("refuses the headers the host sets, in any case", () => {
    for (const name of [
      "Host",
      "connection",
      "Keep-Alive",
      "Proxy-Authorization",
      "proxy-anything",
      "Transfer-Encoding",
      "Upgrade",
      "TE",
      "HTTP2-Settings",
      "Content-Length",
    ]) {
      expect(headerRefusal(name, "x"), name).to.contain("set by the host");
    }
    expect(headerRefusal("Authorization", "Bearer x")).to.equal(undefined);
  });

  it("refuses URLs that are not http(s), carry credentials, or exceed the cap", () => {
    expect(checkUrl("file:///etc/passwd")).to.contain("scheme file");
    expect(checkUrl("gopher://a.example/")).to.contain("scheme gopher");
    expect(checkUrl("https://user:pw@a.example/")).to.contain("credentials");
    expect(checkUrl(`https://a.example/${"x".repeat(9000)}`)).to.contain("longer than");
    expect(checkUrl("/relative")).to.contain("not an absolute URL");
  });
});
