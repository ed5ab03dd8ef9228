import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { mkdir } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Outcome, type Denial, type Policy } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { script } from "../helpers/fixtures.js";
import { startLoopbackServer, type LoopbackServer } from "../helpers/loopback-http.js";
import { moduleTarget, rejection, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { makeKey, signed, tempDir, wire, writePublicKeys } from "../unit/policy-fixtures.js";

const EXAMPLE = fileURLToPath(new URL("../../../examples/http_fetch.rs", import.meta.url));

/** What the http_client fixture prints per request. */
type CallResult =
  | { status: number; body: string; url: string; headers: [string, string][] }
  | { error: string; message: string; display: string };

interface Call {
  method?: string;
  url: string;
  headers?: [string, string][];
  body?: string;
  follow?: boolean;
}

/** Bytes the /big routes send: more than the response cap the tests set. */
const BIG_BYTES = 5000;

/**
 * Outbound HTTP from scripts, end to end: a real daemon, the SDK's http module in a real script, and
 * loopback servers started here (the only addresses these tests ever reach).
 */
describe("network: outbound HTTP to allowlisted hosts", function () {
  this.timeout(240_000);
  const authority = makeKey("net");
  let tmp: { path: string; remove: () => Promise<void> };
  let a: LoopbackServer;
  let b: LoopbackServer;
  let daemon: TestDaemon;
  let clientId: string;

  before(async function () {
    tmp = await tempDir("network");
    await mkdir(join(tmp.path, "keys"));
    await writePublicKeys(join(tmp.path, "keys"), [authority]);
    b = await startLoopbackServer({
      "/hello": (_req, res) => res.writeHead(200, { "content-type": "text/plain" }).end("hello from B"),
      "/echo": (req, res, body) => res.writeHead(200).end(JSON.stringify({ method: req.method, headers: req.headers, body })),
    });
    a = await startLoopbackServer({
      "/hello": (_req, res) => res.writeHead(200, { "content-type": "text/plain", "x-served-by": "A" }).end("hello from A"),
      "/json": (_req, res) => res.writeHead(200, { "content-type": "application/json" }).end('{"id":1,"name":"tea"}'),
      "/echo": (req, res, body) => res.writeHead(200).end(JSON.stringify({ method: req.method, headers: req.headers, body })),
      "/to-b": (_req, res) => res.writeHead(302, { location: `${b.origin}/hello` }).end(),
      "/to-b-echo": (_req, res) => res.writeHead(307, { location: `${b.origin}/echo` }).end(),
      "/to-self": (_req, res) => res.writeHead(303, { location: "/echo" }).end(),
      "/loop": (_req, res) => res.writeHead(302, { location: "/loop" }).end(),
      "/big": (_req, res) => res.writeHead(200, { "content-length": String(BIG_BYTES) }).end("x".repeat(BIG_BYTES)),
      "/big-chunked": (_req, res) => {
        res.writeHead(200);
        for (let i = 0; i < 10; i++) res.write("y".repeat(BIG_BYTES / 10));
        res.end();
      },
      "/hang": () => undefined,
    });
    daemon = await startDaemon({
      cacheDir: join(tmp.path, "cache"),
      args: [
        "--trusted-keys",
        join(tmp.path, "keys"),
        "--allow-network-host",
        a.origin,
        "--allow-network-host",
        b.origin,
        "--allow-network-host",
        `http://localhost:${a.port}`,
        "--max-http-timeout-ms",
        "60000",
      ],
    });
    const compiled = await daemon.compile({ input: { $case: "source", value: script("http_client") } });
    expect(compiled.ok, JSON.stringify(compiled.diagnostics.map((d) => d.rendered))).to.equal(true);
    clientId = compiled.moduleId;
  });
  after(async function () {
    await daemon?.stop();
    await a?.close();
    await b?.close();
    await tmp?.remove();
  });

  function policy(extra: Partial<Policy>): ReturnType<typeof wire> {
    return wire(signed({ policyId: "net-test", expiresAtUnix: Math.floor(Date.now() / 1000) + 3600, ...extra }, authority));
  }
  const grantA = (extra: Partial<Policy> = {}): ReturnType<typeof wire> => policy({ network: true, allowedHosts: [a.origin], ...extra });

  async function run(
    calls: Call[],
    p: ReturnType<typeof wire>,
    d: TestDaemon = daemon,
  ): Promise<{ results: CallResult[]; denials: Denial[] }> {
    const r = await d.execute({ target: moduleTarget(clientId), policy: p, stdin: Buffer.from(JSON.stringify(calls)) });
    expect(r.outcome, `${r.message}\n${r.stderr.toString()}`).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode, r.stdout.toString()).to.equal(0);
    return { results: JSON.parse(r.stdout.toString()) as CallResult[], denials: r.denials };
  }

  it("an allowed host answers, with its status, headers and body, and the daemon logs the request without its body", async function () {
    const before = a.seen.length;
    const { results, denials } = await run([{ url: `${a.origin}/hello` }], grantA());
    const [r] = results;
    expect(r).to.include({ status: 200, body: "hello from A", url: `${a.origin}/hello` });
    expect((r as { headers: [string, string][] }).headers).to.deep.include(["x-served-by", "A"]);
    expect(denials).to.deep.equal([]);
    expect(a.seen.length).to.equal(before + 1);
    const line = daemon
      .logs()
      .split("\n")
      .find((l) => l.includes("outbound http request") && l.includes('"status":200'));
    expect(line, daemon.logs()).to.not.equal(undefined);
    const entry = JSON.parse(line as string) as Record<string, unknown>;
    expect(entry).to.include({ host: "127.0.0.1", method: "GET", status: 200, bytes: "hello from A".length, policyId: "net-test" });
    expect(entry["ms"]).to.be.a("number");
    expect(line).to.not.contain("hello from A");
  });

  it("sends the method, headers and body the script gives", async function () {
    const { results } = await run(
      [
        {
          method: "POST",
          url: `${a.origin}/echo`,
          headers: [
            ["X-Trace", "t1"],
            ["Content-Type", "text/plain"],
          ],
          body: "payload",
        },
      ],
      grantA(),
    );
    const echoed = JSON.parse((results[0] as { body: string }).body) as { method: string; headers: Record<string, string>; body: string };
    expect(echoed).to.include({ method: "POST", body: "payload" });
    expect(echoed.headers).to.include({
      "x-trace": "t1",
      "content-type": "text/plain",
      "content-length": "7",
      host: `127.0.0.1:${a.port}`,
    });
  });

  it("network: false: the request is an error and a denial, and the server is never contacted", async function () {
    const before = a.seen.length;
    const { results, denials } = await run([{ url: `${a.origin}/hello` }], policy({}));
    expect(results[0]).to.include({ error: "HTTP_DENIED", message: "the policy does not grant network access" });
    expect((results[0] as { display: string }).display).to.equal("request denied: the policy does not grant network access");
    expect(denials).to.deep.equal([
      { operation: "http_request", path: `${a.origin}/hello`, reason: "the policy does not grant network access" },
    ]);
    expect(a.seen.length).to.equal(before);
  });

  it("a host outside allowed_hosts is refused with a denial, and never contacted", async function () {
    const before = b.seen.length;
    const { results, denials } = await run([{ url: `${b.origin}/hello` }], grantA());
    expect(results[0]).to.include({ error: "HTTP_DENIED", message: `http://127.0.0.1:${b.port} is not in allowed_hosts` });
    expect(denials).to.deep.equal([
      { operation: "http_request", path: `${b.origin}/hello`, reason: `http://127.0.0.1:${b.port} is not in allowed_hosts` },
    ]);
    expect(b.seen.length).to.equal(before);
  });

  it("a redirect from an allowed host to a host not in allowed_hosts is not followed", async function () {
    const before = b.seen.length;
    const { results, denials } = await run([{ url: `${a.origin}/to-b` }], grantA());
    expect(results[0]).to.include({ error: "HTTP_DENIED" });
    expect((results[0] as { message: string }).message).to.equal(
      `redirect from ${a.origin}/to-b: http://127.0.0.1:${b.port} is not in allowed_hosts`,
    );
    expect(denials.map((d) => [d.operation, d.path])).to.deep.equal([["http_request", `${b.origin}/hello`]]);
    expect(b.seen.length).to.equal(before);
  });

  it("a redirect within allowed_hosts is followed; credentials go along only within the origin", async function () {
    const { results } = await run(
      [
        { url: `${a.origin}/to-self`, headers: [["Authorization", "Bearer same-origin"]] },
        {
          method: "PUT",
          url: `${a.origin}/to-b-echo`,
          headers: [
            ["Authorization", "Bearer secret"],
            ["Cookie", "c=1"],
            ["X-Keep", "k"],
          ],
          body: "kept",
        },
      ],
      policy({ network: true, allowedHosts: [a.origin, b.origin] }),
    );
    const same = results[0] as { url: string; body: string };
    expect(same.url).to.equal(`${a.origin}/echo`);
    expect(JSON.parse(same.body) as { method: string; headers: Record<string, string> }).to.deep.include({ method: "GET" });
    expect((JSON.parse(same.body) as { headers: Record<string, string> }).headers["authorization"]).to.equal("Bearer same-origin");
    const cross = results[1] as { url: string; body: string };
    expect(cross.url).to.equal(`${b.origin}/echo`);
    const echoed = JSON.parse(cross.body) as { method: string; headers: Record<string, string>; body: string };
    expect(echoed).to.include({ method: "PUT", body: "kept" });
    expect(echoed.headers).to.include({ "x-keep": "k" });
    expect(echoed.headers).to.not.have.any.keys("authorization", "cookie");
  });

  it("follow_redirects(false) returns the 3xx itself; an endless redirect stops after a few hops", async function () {
    const { results } = await run([{ url: `${a.origin}/to-b`, follow: false }, { url: `${a.origin}/loop` }], grantA());
    expect(results[0]).to.include({ status: 302 });
    expect(results[1]).to.include({ error: "HTTP_FAILED" });
    expect((results[1] as { message: string }).message).to.contain("redirects");
  });

  it("http://localhost granted by the policy and the operator is still refused: the name resolves to loopback", async function () {
    const before = a.seen.length;
    const { results, denials } = await run(
      [{ url: `http://localhost:${a.port}/hello` }],
      policy({ network: true, allowedHosts: [`http://localhost:${a.port}`] }),
    );
    expect(results[0]).to.include({ error: "HTTP_DENIED", message: "localhost resolved to 127.0.0.1 (loopback)" });
    expect(denials[0]).to.deep.include({ operation: "http_request", reason: "localhost resolved to 127.0.0.1 (loopback)" });
    expect(a.seen.length).to.equal(before);
  });

  it("http://localhost is reached once --allow-private-network covers 127.0.0.0/8, on the address that was vetted", async function () {
    const opened = await startDaemon({
      cacheDir: join(tmp.path, "cache"),
      args: [
        "--trusted-keys",
        join(tmp.path, "keys"),
        "--allow-network-host",
        `http://localhost:${a.port}`,
        "--allow-private-network",
        "127.0.0.0/8",
      ],
    });
    try {
      const { results, denials } = await run(
        [{ url: `http://localhost:${a.port}/echo` }],
        policy({ network: true, allowedHosts: [`http://localhost:${a.port}`] }),
        opened,
      );
      expect(denials).to.deep.equal([]);
      expect((JSON.parse((results[0] as { body: string }).body) as { headers: Record<string, string> }).headers["host"]).to.equal(
        `localhost:${a.port}`,
      );
    } finally {
      await opened.stop();
    }
  });

  it("a response over max_http_response_bytes is refused with a denial, declared or chunked", async function () {
    const { results, denials } = await run(
      [{ url: `${a.origin}/big` }, { url: `${a.origin}/big-chunked` }],
      grantA({ maxHttpResponseBytes: 1000 }),
    );
    expect(results[0]).to.include({ error: "HTTP_LIMIT" });
    expect((results[0] as { message: string }).message).to.contain("max_http_response_bytes");
    expect(results[1]).to.include({ error: "HTTP_LIMIT" });
    expect(denials.map((d) => d.path)).to.deep.equal([`${a.origin}/big`, `${a.origin}/big-chunked`]);
  });

  it("the response cap counts over the whole run", async function () {
    const { results } = await run(
      [{ url: `${a.origin}/big` }, { url: `${a.origin}/big` }],
      grantA({ maxHttpResponseBytes: BIG_BYTES + 10 }),
    );
    expect(results[0]).to.include({ status: 200 });
    expect(results[1]).to.include({ error: "HTTP_LIMIT" });
  });

  it("max_http_requests bounds the requests of one run, redirect hops included", async function () {
    const { results, denials } = await run(
      [{ url: `${a.origin}/hello` }, { url: `${a.origin}/to-self` }, { url: `${a.origin}/hello` }],
      grantA({ maxHttpRequests: 2 }),
    );
    expect(results[0]).to.include({ status: 200 });
    expect(results[1]).to.include({ error: "HTTP_LIMIT" });
    expect(results[2]).to.include({ error: "HTTP_LIMIT" });
    expect(denials[0]?.reason).to.contain("max_http_requests");
  });

  it("a header the host sets (Host, Transfer-Encoding, Proxy-*) is refused before anything is sent", async function () {
    const before = a.seen.length;
    const { results, denials } = await run(
      [
        { url: `${a.origin}/hello`, headers: [["Host", "169.254.169.254"]] },
        { url: `${a.origin}/hello`, headers: [["Transfer-Encoding", "chunked"]] },
        { url: `${a.origin}/hello`, headers: [["Proxy-Authorization", "x"]] },
        { method: "CONNECT", url: `${a.origin}/hello` },
        { url: "file:///etc/passwd" },
      ],
      grantA(),
    );
    expect(results.map((r) => (r as { error: string }).error)).to.deep.equal([
      "HTTP_INVALID",
      "HTTP_INVALID",
      "HTTP_INVALID",
      "HTTP_INVALID",
      "HTTP_INVALID",
    ]);
    expect(denials).to.have.length(5);
    expect(a.seen.length).to.equal(before);
  });

  it("http_timeout_ms ends a request the server never answers; the script goes on", async function () {
    const { results } = await run([{ url: `${a.origin}/hang` }, { url: `${a.origin}/hello` }], grantA({ httpTimeoutMs: 300 }));
    expect(results[0]).to.include({ error: "HTTP_TIMEOUT" });
    expect(results[1]).to.include({ status: 200 });
  });

  it("a server that never answers ends with the run's timeout, the request is dropped, and the daemon keeps serving", async function () {
    const r = await daemon.execute({
      target: moduleTarget(clientId),
      policy: grantA({ timeoutMs: 1500 }),
      stdin: Buffer.from(JSON.stringify([{ url: `${a.origin}/hang` }])),
    });
    expect(r.outcome).to.equal(Outcome.OUTCOME_TIMEOUT);
    // The abandoned request's connection is closed, not left to the server.
    for (let i = 0; i < 50 && a.openConnections() > 0; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(a.openConnections()).to.equal(0);
    const { results } = await run([{ url: `${a.origin}/hello` }], grantA());
    expect(results[0]).to.include({ status: 200 });
  });

  it("a policy granting a host beyond the operator's ceiling is refused with POLICY_CEILING_EXCEEDED", async function () {
    const refused = await rejection(
      daemon.execute({ target: moduleTarget(clientId), policy: policy({ network: true, allowedHosts: ["https://api.example.com"] }) }),
    );
    expect(refused).to.include({ code: status.PERMISSION_DENIED, reason: "POLICY_CEILING_EXCEEDED" });
    const limit = await rejection(daemon.execute({ target: moduleTarget(clientId), policy: grantA({ httpTimeoutMs: 60_001 }) }));
    expect(limit).to.include({ code: status.PERMISSION_DENIED, reason: "POLICY_CEILING_EXCEEDED" });
  });

  it("network without allowed_hosts, or allowed_hosts without network, is POLICY_MALFORMED", async function () {
    for (const p of [policy({ network: true }), policy({ allowedHosts: [a.origin] })]) {
      const refused = await rejection(daemon.execute({ target: moduleTarget(clientId), policy: p }));
      expect(refused).to.include({ code: status.UNAUTHENTICATED, reason: "POLICY_MALFORMED" });
    }
  });

  it("StreamOutput streams an HTTP denial like any other", async function () {
    const events = await daemon.stream({
      target: moduleTarget(clientId),
      policy: grantA(),
      stdin: Buffer.from(JSON.stringify([{ url: `${b.origin}/hello` }])),
    });
    const denials = events.map((e) => e.event.event).filter((e) => e?.$case === "denial");
    expect(denials.map((d) => (d?.$case === "denial" ? d.value.operation : ""))).to.deep.equal(["http_request"]);
  });

  it("examples/http_fetch.rs compiles and fetches JSON from an allowed host", async function () {
    const compiled = await daemon.compile({ input: { $case: "source", value: readFileSync(EXAMPLE, "utf8") } });
    expect(compiled.ok, JSON.stringify(compiled.diagnostics.map((d) => d.rendered))).to.equal(true);
    const r = await daemon.execute({
      target: moduleTarget(compiled.moduleId),
      policy: grantA(),
      stdin: Buffer.from(JSON.stringify({ url: `${a.origin}/json`, token: "t" })),
    });
    expect(r.exitCode, r.stdout.toString() + r.stderr.toString()).to.equal(0);
    expect(JSON.parse(r.stdout.toString())).to.deep.equal({ status: 200, content_type: "application/json", item: { id: 1, name: "tea" } });
    const denied = await daemon.execute({
      target: moduleTarget(compiled.moduleId),
      policy: grantA(),
      stdin: Buffer.from(JSON.stringify({ url: `${b.origin}/hello` })),
    });
    expect(denied.exitCode).to.equal(1);
    expect(JSON.parse(denied.stdout.toString())).to.deep.equal({
      error: { code: "HTTP_DENIED", message: `http://127.0.0.1:${b.port} is not in allowed_hosts` },
    });
  });
});
