/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) over the descriptor
 * set buf compiles from proto/ at build time (scripts/build). The files are
 * served byte for byte as the compiler produced them: snake_case field names,
 * their real paths, map entries as protoc synthesizes them. Descriptors
 * rebuilt by a proto loader from parsed JSON are rejected by strict clients
 * (Python's DescriptorPool, grpcurl), which is why this is not @grpc/reflection.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import {
  FileDescriptorProtoSchema,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FileDescriptorProto,
} from "@bufbuild/protobuf/wkt";
import {
  status as GrpcStatus,
  type Server,
  type ServerDuplexStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as v1 from "../gen/grpc/grpc/reflection/v1/reflection.js";
import * as v1alpha from "../gen/grpc/grpc/reflection/v1alpha/reflection.js";

/** The compiled contract: a google.protobuf.FileDescriptorSet of every file under proto/, imports included. */
export const DESCRIPTOR_SET_PATH = fileURLToPath(new URL("../../../src/gen/descriptor-set.binpb", import.meta.url));

/** Names of the reflection services, which every server using this lists besides its own. */
export const REFLECTION_SERVICES = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"] as const;

/** Files served on every socket whatever its services: the error details every failed call carries. */
const ERROR_DETAIL_FILES = ["google/rpc/error_details.proto", "google/rpc/status.proto"] as const;

/** Field number of `file` in google.protobuf.FileDescriptorSet. */
const FILE_SET_FILE_FIELD = 1;

/** One compiled file: its original bytes and its parsed form. */
interface CompiledFile {
  readonly bytes: Uint8Array;
  readonly proto: FileDescriptorProto;
}

/** The files a socket may describe, by name and by the symbols they declare. */
export class DescriptorIndex {
  private readonly files = new Map<string, CompiledFile>();
  private readonly symbols = new Map<string, string>();
  /** Fully qualified names of the services listed, in the order given. */
  readonly services: readonly string[];

  /**
   * Keeps, from a serialized FileDescriptorSet, the files declaring `services`
   * and the error details, with everything they import; other files stay unknown.
   */
  constructor(descriptorSet: Uint8Array, services: readonly string[]) {
    const all = new Map<string, CompiledFile>();
    const reader = new BinaryReader(descriptorSet);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === FILE_SET_FILE_FIELD && wireType === WireType.LengthDelimited) {
        const bytes = reader.bytes();
        const proto = fromBinary(FileDescriptorProtoSchema, bytes);
        all.set(proto.name, { bytes, proto });
      } else {
        reader.skip(wireType);
      }
    }
    const declaring = (service: string): string => {
      for (const file of all.values()) {
        if (file.proto.service.some((s) => qualify(file.proto.package, s.name) === service)) return file.proto.name;
      }
      throw new Error(`the descriptor set declares no service ${service}`);
    };
    const keep = (name: string): void => {
      if (this.files.has(name)) return;
      const file = all.get(name);
      if (!file) throw new Error(`the descriptor set lacks ${name}`);
      this.files.set(name, file);
      file.proto.dependency.forEach(keep);
    };
    this.services = [...services, ...REFLECTION_SERVICES];
    this.services.map(declaring).forEach(keep);
    ERROR_DETAIL_FILES.forEach(keep);
    for (const file of this.files.values()) this.indexSymbols(file.proto);
  }

  /** Reads the descriptor set scripts/build wrote. */
  static load(services: readonly string[], file = DESCRIPTOR_SET_PATH): DescriptorIndex {
    return new DescriptorIndex(readFileSync(file), services);
  }

  /** The named file, then every file it imports (transitively); undefined when unknown. */
  fileWithDependencies(name: string): Uint8Array[] | undefined {
    if (!this.files.has(name)) return undefined;
    const order: string[] = [];
    const visit = (n: string): void => {
      if (order.includes(n)) return;
      order.push(n);
      this.files.get(n)?.proto.dependency.forEach(visit);
    };
    visit(name);
    return order.map((n) => this.files.get(n)!.bytes);
  }

  /** The file declaring a fully qualified symbol (message, enum, enum value, field, service, method). */
  fileOfSymbol(symbol: string): string | undefined {
    return this.symbols.get(symbol.replace(/^\./, ""));
  }

  private indexSymbols(file: FileDescriptorProto): void {
    const add = (name: string): void => void this.symbols.set(name, file.name);
    const addEnum = (scope: string, e: EnumDescriptorProto): void => {
      add(qualify(scope, e.name));
      // Enum values are scoped beside their enum, as in C++.
      for (const value of e.value) add(qualify(scope, value.name));
    };
    const addMessage = (scope: string, m: DescriptorProto): void => {
      const name = qualify(scope, m.name);
      add(name);
      for (const field of m.field) add(qualify(name, field.name));
      for (const nested of m.nestedType) addMessage(name, nested);
      for (const e of m.enumType) addEnum(name, e);
    };
    for (const m of file.messageType) addMessage(file.package, m);
    for (const e of file.enumType) addEnum(file.package, e);
    for (const s of file.service) {
      const name = qualify(file.package, s.name);
      add(name);
      for (const method of s.method) add(qualify(name, method.name));
    }
  }
}

function qualify(scope: string, name: string): string {
  return scope === "" ? name : `${scope}.${name}`;
}

type Request = v1.ServerReflectionRequest;
type Response = v1.ServerReflectionResponse;

/** Answers one reflection request; unknown names get an error response on the stream, not a failed call. */
export function answer(index: DescriptorIndex, request: Request): Response {
  const notFound = (message: string): Response["messageResponse"] => ({
    $case: "errorResponse",
    value: { errorCode: GrpcStatus.NOT_FOUND, errorMessage: message },
  });
  const files = (name: string | undefined, what: string): Response["messageResponse"] => {
    const found = name === undefined ? undefined : index.fileWithDependencies(name);
    return found
      ? { $case: "fileDescriptorResponse", value: { fileDescriptorProto: found.map((b) => Buffer.from(b)) } }
      : notFound(`${what} not found`);
  };
  const r = request.messageRequest;
  let messageResponse: Response["messageResponse"];
  switch (r?.$case) {
    case "listServices":
      messageResponse = { $case: "listServicesResponse", value: { service: index.services.map((name) => ({ name })) } };
      break;
    case "fileByFilename":
      messageResponse = files(r.value, `file ${JSON.stringify(r.value)}`);
      break;
    case "fileContainingSymbol":
      messageResponse = files(index.fileOfSymbol(r.value), `symbol ${JSON.stringify(r.value)}`);
      break;
    case "fileContainingExtension":
      // Our contract declares no extensions.
      messageResponse = notFound(`no extension ${r.value.extensionNumber} of ${JSON.stringify(r.value.containingType)}`);
      break;
    case "allExtensionNumbersOfType":
      messageResponse =
        index.fileOfSymbol(r.value) === undefined
          ? notFound(`type ${JSON.stringify(r.value)} not found`)
          : { $case: "allExtensionNumbersResponse", value: { baseTypeName: r.value.replace(/^\./, ""), extensionNumber: [] } };
      break;
    default:
      messageResponse = {
        $case: "errorResponse",
        value: { errorCode: GrpcStatus.INVALID_ARGUMENT, errorMessage: "the request names no question" },
      };
  }
  return { validHost: request.host, originalRequest: request, messageResponse };
}

/** Adds grpc.reflection.v1 and v1alpha to a server, describing what the index holds. */
export function addReflection(server: Server, index: DescriptorIndex): void {
  const handler = (call: ServerDuplexStream<Request, Response>): void => {
    call.on("data", (request: Request) => call.write(answer(index, request)));
    call.on("end", () => call.end());
    // A client that goes away mid-stream is normal; nothing to clean up.
    call.on("error", () => undefined);
  };
  // v1alpha's messages are v1's, field for field, so one handler serves both.
  const implementation: UntypedServiceImplementation = { serverReflectionInfo: handler };
  server.addService(v1.ServerReflectionService as unknown as ServiceDefinition, implementation);
  server.addService(v1alpha.ServerReflectionService as unknown as ServiceDefinition, implementation);
}
