/**
 * grpc.health.v1.Health as the daemon serves it (hand-written, see src/grpc/health-service.ts),
 * checked through the reference client definition of the grpc-health-check package.
 */
import {
  credentials,
  makeGenericClientConstructor,
  status,
  type Client,
  type ClientReadableStream,
  type ServiceDefinition,
  type ServiceError,
} from "@grpc/grpc-js";
import { expect } from "chai";
import { service as healthService } from "grpc-health-check";
import { SERVICE_NAME } from "../../src/grpc/server.js";
import { startDaemon, type TestDaemon } from "../helpers/daemon.js";

type Reply = { status?: string };
type Callback<T> = (e: ServiceError | null, reply?: T) => void;
type RawHealth = Client & {
  check(request: { service: string }, callback: Callback<Reply>): void;
  list(request: object, callback: Callback<{ statuses?: Record<string, Reply> }>): void;
  watch(request: { service: string }): ClientReadableStream<Reply>;
};

describe("grpc.health.v1.Health", function () {
  this.timeout(60_000);
  let daemon: TestDaemon;
  let health: RawHealth;

  before(async function () {
    daemon = await startDaemon();
    const Health = makeGenericClientConstructor(healthService as unknown as ServiceDefinition, "Health");
    health = new Health(`unix://${daemon.socketPath}`, credentials.createInsecure()) as unknown as RawHealth;
  });
  after(async function () {
    health?.close();
    await daemon?.stop();
  });

  const check = (service: string): Promise<Reply> =>
    new Promise((resolve, reject) => health.check({ service }, (e, r) => (e ? reject(e) : resolve(r!))));

  it("Check answers SERVING for the server and for the sandbox service", async function () {
    expect(await check("")).to.deep.include({ status: "SERVING" });
    expect(await check(SERVICE_NAME)).to.deep.include({ status: "SERVING" });
  });

  it("Check of a service it does not know is NOT_FOUND", async function () {
    const e = await check("no.such.Service").then(
      () => undefined,
      (e: ServiceError) => e,
    );
    expect(e?.code).to.equal(status.NOT_FOUND);
  });

  it("Watch sends the current status at once, and SERVICE_UNKNOWN for an unknown service", async function () {
    const first = (service: string): Promise<Reply> =>
      new Promise((resolve, reject) => {
        const call = health.watch({ service });
        call.once("data", (r: Reply) => {
          resolve(r);
          call.cancel();
        });
        call.once("error", (e: ServiceError) => (e.code === status.CANCELLED ? undefined : reject(e)));
      });
    expect(await first("")).to.deep.include({ status: "SERVING" });
    expect(await first("no.such.Service")).to.deep.include({ status: "SERVICE_UNKNOWN" });
  });

  it("List reports every service's status", async function () {
    const reply = await new Promise<{ statuses?: Record<string, Reply> }>((resolve, reject) =>
      health.list({}, (e, r) => (e ? reject(e) : resolve(r!))),
    );
    expect(reply.statuses?.[""]).to.deep.include({ status: "SERVING" });
    expect(reply.statuses?.[SERVICE_NAME]).to.deep.include({ status: "SERVING" });
  });
});

describe("server reflection", function () {
  this.timeout(60_000);

  it("lists the sandbox service (it is loaded after the daemon starts serving)", async function () {
    const { loadSync } = await import("@grpc/proto-loader");
    const { loadPackageDefinition } = await import("@grpc/grpc-js");
    const { createRequire } = await import("node:module");
    const root = createRequire(import.meta.url)
      .resolve("@grpc/reflection")
      .replace(/build\/src\/.*$/, "build/proto/");
    const definition = loadPackageDefinition(loadSync("grpc/reflection/v1/reflection.proto", { includeDirs: [root], keepCase: true }));
    const Reflection = (
      definition as unknown as {
        grpc: {
          reflection: {
            v1: {
              ServerReflection: new (
                target: string,
                creds: ReturnType<typeof credentials.createInsecure>,
              ) => Client & { ServerReflectionInfo(): ClientDuplex };
            };
          };
        };
      }
    ).grpc.reflection.v1.ServerReflection;
    type ClientDuplex = { write(m: object): void; end(): void; on(event: string, f: (x: never) => void): void };
    const daemon = await startDaemon();
    const client = new Reflection(`unix://${daemon.socketPath}`, credentials.createInsecure());
    try {
      const names = async (): Promise<string[] | ServiceError> =>
        new Promise((resolve) => {
          const call = client.ServerReflectionInfo();
          call.on("data", (r: { list_services_response?: { service: { name: string }[] } }) =>
            resolve(r.list_services_response?.service.map((s) => s.name) ?? []),
          );
          call.on("error", (e: ServiceError) => resolve(e));
          call.write({ list_services: "" });
          call.end();
        });
      let found = await names();
      for (let i = 0; i < 50 && !Array.isArray(found); i++) {
        await new Promise((r) => setTimeout(r, 100));
        found = await names();
      }
      expect(found).to.include(SERVICE_NAME);
    } finally {
      client.close();
      await daemon.stop();
    }
  });
});
