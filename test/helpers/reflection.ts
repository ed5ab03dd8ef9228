/**
 * A grpc.reflection.v1 client: which services a socket says it serves, as
 * grpcurl's `list` would show them.
 */
import {
  credentials,
  loadPackageDefinition,
  status,
  type GrpcObject,
  type ServiceClientConstructor,
  type ClientDuplexStream,
} from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const REFLECTION_PROTO = path.join(
  path.dirname(require.resolve("@grpc/reflection/package.json")),
  "build/proto/grpc/reflection/v1/reflection.proto",
);

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

/** How long listServices waits for reflection: the main socket loads it a moment after the daemon starts serving. */
const REFLECTION_WAIT_MS = 10_000;

/** Names of the services a server lists through reflection (waiting while it answers UNIMPLEMENTED). */
export async function listServices(target: string): Promise<string[]> {
  const deadline = Date.now() + REFLECTION_WAIT_MS;
  for (;;) {
    try {
      return await listServicesOnce(target);
    } catch (e: unknown) {
      if ((e as { code?: number }).code !== status.UNIMPLEMENTED || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function listServicesOnce(target: string): Promise<string[]> {
  const pkg = loadPackageDefinition(loadSync(REFLECTION_PROTO)) as unknown as { grpc: { reflection: { v1: GrpcObject } } };
  const Reflection = pkg.grpc.reflection.v1["ServerReflection"] as ServiceClientConstructor;
  const client = new Reflection(target, credentials.createInsecure());
  try {
    const call = (client["ServerReflectionInfo"] as (options: object) => ClientDuplexStream<object, ReflectionResponse>).call(client, {
      deadline: Date.now() + 10_000,
    });
    return await new Promise<string[]>((resolve, reject) => {
      call.once("data", (response: ReflectionResponse) => {
        call.end();
        if (response.listServicesResponse) resolve(response.listServicesResponse.service.map((s) => s.name));
        else reject(new Error(`reflection answered ${JSON.stringify(response)}`));
      });
      call.once("error", reject);
      call.write({ listServices: "*" });
    });
  } finally {
    client.close();
  }
}
