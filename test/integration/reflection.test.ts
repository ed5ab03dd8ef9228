import { expect } from "chai";
import path from "node:path";
import { startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { REPO_ROOT, runPython } from "../helpers/python.js";
import { listServices } from "../helpers/reflection.js";

const STRICT_CLIENT = path.join(REPO_ROOT, "test/fixtures/python/strict_reflection_client.py");

describe("server reflection", function () {
  this.timeout(180_000);
  let daemon: TestDaemon | undefined;

  afterEach(async () => {
    await daemon?.stop();
    daemon = undefined;
  });

  it("reflection descriptors were rejected by Python's DescriptorPool (map_entry set explicitly, camelCase fields): a strict client lists, describes and calls every service", async function () {
    daemon = await startDaemon();
    const target = `unix://${daemon.socketPath}`;
    await listServices(target);
    const run = await runPython([
      STRICT_CLIENT,
      target,
      path.join(REPO_ROOT, "proto"),
      path.join(REPO_ROOT, "test/fixtures/scripts/echo_json.rs"),
    ]);
    const result = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(result["error"], String(result["trace"] ?? run.stderr)).to.equal(undefined);
    expect(result["services"]).to.have.members([
      "sandbox.v1.SandboxService",
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
    ]);
    expect(result["files"]).to.include.members([
      "sandbox/v1/sandbox.proto",
      "google/rpc/error_details.proto",
      "grpc/health/v1/health.proto",
    ]);
    expect(result["files"], "the main socket never describes the admin contract").to.not.include("sandbox/v1/admin.proto");
    expect(result["executeRequestFields"]).to.deep.equal(["module_id", "source", "stdin", "args", "env", "policy"]);
    expect(result["envEntry"]).to.deep.equal({ name: "EnvEntry", mapEntry: true });
    expect(result["missingSymbolCode"], "NOT_FOUND for an unknown symbol").to.equal(5);
    expect(result["health"]).to.equal(1);
    expect(result["executed"]).to.deep.equal({ exitCode: 0, stdout: '{"input":{"n":1},"args":["a1"],"greeting":"hi"}\n' });
    expect(result["errorInfo"], "ErrorInfo decoded with types found through reflection").to.deep.equal({
      code: "INVALID_ARGUMENT",
      reason: "INVALID_MODULE_ID",
      domain: "sandboxd",
    });
    const described = result["described"] as Record<string, { methods: { name: string }[] }>;
    expect(described["sandbox.v1.SandboxService"]!.methods.map((m) => m.name)).to.include.members(["Compile", "Execute", "StreamOutput"]);
  });
});
