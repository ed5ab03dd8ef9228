/**
 * The one place where core errors become gRPC statuses. Every error carries a
 * google.rpc.Status with a google.rpc.ErrorInfo in `grpc-status-details-bin`,
 * so clients switch on the catalogued reason rather than parse messages.
 */
import { Metadata, status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";
import { Code } from "../errors/codes.js";
import { SandboxError } from "../errors/sandbox-error.js";
import { Any } from "../gen/grpc/google/protobuf/any.js";
import { ErrorInfo } from "../gen/grpc/google/rpc/error_details.js";
import { Status } from "../gen/grpc/google/rpc/status.js";

/** ErrorInfo.domain of every sandboxd error. */
export const ERROR_DOMAIN = "sandboxd";

/** Trailer carrying the serialized google.rpc.Status (the gRPC rich error model). */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

const ERROR_INFO_TYPE_URL = "type.googleapis.com/google.rpc.ErrorInfo";

const GRPC_CODES: Record<Code, GrpcStatus> = {
  [Code.InvalidArgument]: GrpcStatus.INVALID_ARGUMENT,
  [Code.NotFound]: GrpcStatus.NOT_FOUND,
  [Code.FailedPrecondition]: GrpcStatus.FAILED_PRECONDITION,
  [Code.ResourceExhausted]: GrpcStatus.RESOURCE_EXHAUSTED,
  [Code.Unauthenticated]: GrpcStatus.UNAUTHENTICATED,
  [Code.PermissionDenied]: GrpcStatus.PERMISSION_DENIED,
  [Code.Unimplemented]: GrpcStatus.UNIMPLEMENTED,
  [Code.Cancelled]: GrpcStatus.CANCELLED,
  [Code.DeadlineExceeded]: GrpcStatus.DEADLINE_EXCEEDED,
  [Code.Unavailable]: GrpcStatus.UNAVAILABLE,
  [Code.Internal]: GrpcStatus.INTERNAL,
};

/** Converts anything thrown by the core into the status sent to the client. */
export function toServiceError(e: unknown): Partial<ServiceError> {
  const error = SandboxError.from(e);
  const code = GRPC_CODES[error.code];
  const info = ErrorInfo.encode({ reason: error.reason, domain: ERROR_DOMAIN, metadata: new Map(Object.entries(error.metadata)) }).finish();
  const details = Status.encode({
    code,
    message: error.message,
    details: [Any.fromPartial({ typeUrl: ERROR_INFO_TYPE_URL, value: Buffer.from(info) })],
  }).finish();
  const metadata = new Metadata();
  metadata.set(STATUS_DETAILS_KEY, Buffer.from(details));
  return { code, details: error.message, metadata };
}

/** Reads the ErrorInfo back out of a status's trailers (for clients and tests). */
export function errorInfoOf(metadata: Metadata | undefined): ErrorInfo | undefined {
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (!(raw instanceof Buffer)) return undefined;
  const status = Status.decode(raw);
  const any = status.details.find((d) => d.typeUrl === ERROR_INFO_TYPE_URL);
  return any ? ErrorInfo.decode(any.value) : undefined;
}
