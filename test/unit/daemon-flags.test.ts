import { expect } from "chai";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseFlags } from "../../src/cli/daemon-flags.js";
import { validateConfig } from "../../src/daemon.js";
import { COMPILE_MEMORY_LIMIT_BYTES, MAX_ARGS, MAX_ARGS_BYTES, MAX_ENV_BYTES, MAX_ENV_VARS } from "../../src/limits.js";

const UNIT = readFileSync(fileURLToPath(new URL("../../../systemd/sandboxd.service", import.meta.url)), "utf8");

/** The unit's value for a key, with systemd's backslash line continuations joined. */
function directive(key: string): string {
  const joined = UNIT.replace(/\\\n/g, " ");
  const line = joined.split("\n").find((l) => l.startsWith(`${key}=`));
  if (!line) throw new Error(`no ${key}= in the unit`);
  return line.slice(key.length + 1).trim();
}

describe("systemd/sandboxd.service", function () {
  it("starts the daemon with flags the daemon accepts, on the socket under its RuntimeDirectory", function () {
    const [node, entry, ...words] = directive("ExecStart").split(/\s+/);
    // $SANDBOXD_OPTS comes from the EnvironmentFile, empty unless the operator sets it.
    const args = words.filter((w) => w !== "$SANDBOXD_OPTS");
    expect(node).to.match(/\/node$/);
    expect(entry).to.equal("/opt/sandboxd/dist/src/cli/sandboxd.js");
    const flags = parseFlags(args);
    if (flags instanceof Error || "help" in flags) throw new Error(`the unit's flags are rejected: ${String(flags)}`);
    expect(flags.config.listen).to.deep.equal({ kind: "unix", path: `/run/${directive("RuntimeDirectory")}/sandboxd.sock` });
    // Production never runs unsigned requests.
    expect(flags.config.allowUnsigned).to.equal(false);
    expect(flags.config.trustedKeysDir).to.equal("/etc/sandboxd/keys");
  });

  it("stops with SIGTERM (the clean path) and reloads keys with SIGHUP", function () {
    expect(directive("KillSignal")).to.equal("SIGTERM");
    expect(directive("ExecReload")).to.contain("kill -HUP $MAINPID");
  });

  it("restarts the daemon after it exits non-zero, as it does on an uncaught exception", function () {
    expect(directive("Restart")).to.be.oneOf(["on-failure", "always"]);
  });

  it("is Type=notify (the daemon sends READY=1 through a helper, so NotifyAccess=all) and reads flags from an EnvironmentFile", function () {
    expect(directive("Type")).to.equal("notify");
    expect(directive("NotifyAccess")).to.equal("all");
    expect(directive("EnvironmentFile")).to.equal("-/etc/sandboxd/sandboxd.env");
    expect(directive("ExecStart")).to.contain("$SANDBOXD_OPTS");
  });

  it("gives the socket to the unit's group, and sizes MemoryMax from the workers, the memory ceiling and the rustc runs", function () {
    const args = directive("ExecStart")
      .split(/\s+/)
      .slice(2)
      .filter((w) => w !== "$SANDBOXD_OPTS");
    const flags = parseFlags(args);
    if (flags instanceof Error || "help" in flags) throw new Error(String(flags));
    expect(flags.config.socketAccess).to.deep.equal({ mode: 0o660, group: directive("Group") });
    const concurrency = flags.config.compile?.concurrency;
    expect(concurrency, "the unit fixes --compile-concurrency").to.be.a("number");
    const needed = flags.config.workers * flags.config.ceilings.maxMemoryBytes + concurrency! * COMPILE_MEMORY_LIMIT_BYTES;
    const max = /^(\d+)G$/.exec(directive("MemoryMax"));
    expect(max, "MemoryMax in G").to.not.equal(null);
    expect(Number(max![1]) * 2 ** 30).to.be.at.least(needed + 2 ** 30);
    expect(Number(directive("TasksMax"))).to.be.at.least(flags.config.workers * 2 + concurrency! * 40);
  });
});

describe("daemon flags", function () {
  it("a lowered ceiling lowers the built-in default with it", function () {
    const flags = parseFlags(["--max-timeout-ms", "5000", "--max-output-bytes", "1024"]);
    if (flags instanceof Error || "help" in flags) throw new Error(String(flags));
    expect(flags.config.defaults.timeoutMs).to.equal(5000);
    expect(flags.config.defaults.maxOutputBytes).to.equal(1024);
  });

  it("keeps an explicit default (validated against its ceiling at start)", function () {
    const flags = parseFlags(["--max-timeout-ms", "5000", "--default-timeout-ms", "9000"]);
    if (flags instanceof Error || "help" in flags) throw new Error(String(flags));
    expect(flags.config.defaults.timeoutMs).to.equal(9000);
  });

  it("fuel: no default limit and a ceiling of 2^53-1 unless --default-fuel-limit and --max-fuel say otherwise", function () {
    const none = parseFlags([]);
    if (none instanceof Error || "help" in none) throw new Error(String(none));
    expect(none.config.defaults.fuelLimit).to.equal(0);
    expect(none.config.ceilings.maxFuel).to.equal(Number.MAX_SAFE_INTEGER);
    expect(none.config.receiptKeyFile).to.equal(undefined);
    const set = parseFlags(["--max-fuel", "1000000", "--default-fuel-limit", "5000", "--receipt-key", "keys/r.key"]);
    if (set instanceof Error || "help" in set) throw new Error(String(set));
    expect(set.config.ceilings.maxFuel).to.equal(1_000_000);
    expect(set.config.defaults.fuelLimit).to.equal(5000);
    expect(set.config.receiptKeyFile).to.match(/\/keys\/r\.key$/);
    expect(validateConfig(set.config)).to.equal(undefined);
  });

  it("refuses a default fuel limit above --max-fuel at start, and a fuel flag that is not a positive integer", function () {
    const above = parseFlags(["--max-fuel", "100", "--default-fuel-limit", "101"]);
    if (above instanceof Error || "help" in above) throw new Error(String(above));
    expect(validateConfig(above.config)?.message).to.match(/default fuel limit \(101\) exceeds its ceiling \(100\)/);
    expect(parseFlags(["--max-fuel", "0"])).to.be.instanceOf(Error);
    expect(parseFlags(["--default-fuel-limit", "1e400"])).to.be.instanceOf(Error);
  });

  it("parses --allow-network-host and --allow-private-network, repeatable, none by default", function () {
    const none = parseFlags([]);
    if (none instanceof Error || "help" in none) throw new Error(String(none));
    expect(none.config.ceilings.networkHosts).to.deep.equal([]);
    expect(none.config.privateNetworks).to.deep.equal([]);
    const flags = parseFlags([
      "--allow-network-host",
      "https://api.example.com",
      "--allow-network-host",
      "http://*.internal.example:8080",
      "--allow-private-network",
      "10.1.0.0/16",
      "--allow-private-network",
      "::1",
    ]);
    if (flags instanceof Error || "help" in flags) throw new Error(String(flags));
    expect(flags.config.ceilings.networkHosts.map((p) => p.text)).to.deep.equal([
      "https://api.example.com",
      "http://*.internal.example:8080",
    ]);
    expect(flags.config.privateNetworks.map((r) => [r.text, r.family, r.prefix])).to.deep.equal([
      ["10.1.0.0/16", 4, 16],
      ["::1", 6, 128],
    ]);
  });

  it("rejects a malformed host pattern or CIDR at start, naming the flag", function () {
    expect(String(parseFlags(["--allow-network-host", "api.example.com"]))).to.contain("--allow-network-host");
    expect(String(parseFlags(["--allow-network-host", "https://api.example.com/path"]))).to.contain("--allow-network-host");
    expect(String(parseFlags(["--allow-private-network", "10.0.0.0/33"]))).to.contain("--allow-private-network");
    expect(String(parseFlags(["--allow-private-network", "10.0.0.1/8"]))).to.contain("bits are set");
    expect(String(parseFlags(["--allow-private-network", "localhost"]))).to.contain("--allow-private-network");
  });

  it("a lowered HTTP ceiling lowers its built-in default with it", function () {
    const flags = parseFlags(["--max-http-requests", "3", "--max-http-response-bytes", "1000", "--max-http-timeout-ms", "250"]);
    if (flags instanceof Error || "help" in flags) throw new Error(String(flags));
    expect(flags.config.ceilings).to.include({ maxHttpRequests: 3, maxHttpResponseBytes: 1000, maxHttpTimeoutMs: 250 });
    expect(flags.config.defaults).to.include({ maxHttpRequests: 3, maxHttpResponseBytes: 1000, httpTimeoutMs: 250 });
  });

  it("rejects a non-numeric limit", function () {
    expect(parseFlags(["--max-timeout-ms", "soon"])).to.be.instanceOf(Error);
  });

  it("--admin-listen takes a unix socket and --admin-socket-group a group for it", function () {
    const flags = parseFlags(["--admin-listen", "unix:///run/sandboxd/admin.sock", "--admin-socket-group", "sandboxd-admin"]);
    if (flags instanceof Error || "help" in flags) throw new Error(String(flags));
    expect(flags.config).to.deep.include({ adminSocketPath: "/run/sandboxd/admin.sock", adminSocketGroup: "sandboxd-admin" });
    const none = parseFlags([]);
    if (none instanceof Error || "help" in none) throw new Error(String(none));
    expect(none.config.adminSocketPath).to.equal(undefined);
  });

  it("refuses an admin socket on TCP, on the main socket's path, or a group without a socket", function () {
    expect(String(parseFlags(["--admin-listen", "127.0.0.1:7000"]))).to.contain("never TCP");
    expect(String(parseFlags(["--admin-listen", "unix:relative.sock"]))).to.contain("--admin-listen takes unix://");
    expect(String(parseFlags(["--listen", "unix:///tmp/s.sock", "--admin-listen", "unix:///tmp/s.sock"]))).to.contain(
      "another socket than --listen",
    );
    expect(String(parseFlags(["--admin-socket-group", "wheel"]))).to.contain("needs --admin-listen");
    expect(String(parseFlags(["--admin-listen", "unix:///tmp/a.sock", "--admin-socket-group", "a b"]))).to.contain("group name or gid");
  });

  it("caps args and env at the limits.ts defaults, or at --max-args, --max-args-bytes, --max-env-vars, --max-env-bytes", function () {
    const defaults = parseFlags([]);
    if (defaults instanceof Error || "help" in defaults) throw new Error(String(defaults));
    expect(defaults.config.requestLimits).to.deep.equal({
      maxArgs: MAX_ARGS,
      maxArgsBytes: MAX_ARGS_BYTES,
      maxEnvVars: MAX_ENV_VARS,
      maxEnvBytes: MAX_ENV_BYTES,
    });
    const set = parseFlags(["--max-args", "1", "--max-args-bytes", "2", "--max-env-vars", "3", "--max-env-bytes", "4"]);
    if (set instanceof Error || "help" in set) throw new Error(String(set));
    expect(set.config.requestLimits).to.deep.equal({ maxArgs: 1, maxArgsBytes: 2, maxEnvVars: 3, maxEnvBytes: 4 });
    for (const flag of ["--max-args", "--max-args-bytes", "--max-env-vars", "--max-env-bytes"]) {
      expect(parseFlags([flag, "0"]), flag).to.be.instanceOf(Error);
      expect(parseFlags([flag, "many"]), flag).to.be.instanceOf(Error);
    }
  });
});

describe("the README's flag table", function () {
  it("documents every flag of `sandboxd --help`, and no flag the daemon lacks", async function () {
    const { USAGE } = await import("../../src/cli/daemon-flags.js");
    const readme = readFileSync(fileURLToPath(new URL("../../../README.md", import.meta.url)), "utf8");
    const table = readme.slice(readme.indexOf("## Running the daemon for real"), readme.indexOf("## Architecture"));
    const flagsIn = (text: string): string[] => [...new Set([...text.matchAll(/--[a-z][a-z-]+/g)].map((m) => m[0]))].sort();
    const usage = flagsIn(USAGE).filter((f) => f !== "--help");
    expect(
      flagsIn(
        table
          .split("\n")
          .filter((l) => l.startsWith("| `--"))
          .join("\n"),
      ),
    ).to.deep.equal(usage);
  });
});
