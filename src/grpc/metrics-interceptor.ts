/**
 * A grpc-js server interceptor that counts every RPC (ours, health and
 * reflection alike) as go-grpc-prometheus does: started, handled by status
 * code, and latency; and a failed call's catalogued reason from its ErrorInfo.
 */
import { Metadata, ServerInterceptingCall, status as GrpcStatus, type ServerInterceptor } from "@grpc/grpc-js";
import { performance } from "node:perf_hooks";
import type { DaemonMetrics } from "../metrics/daemon-metrics.js";
import { errorInfoOf } from "./status.js";

/** Status code names as Go's codes.Code.String() spells them, which go-grpc-prometheus puts in grpc_code. */
const GO_CODE_NAMES: Readonly<Record<number, string>> = {
  [GrpcStatus.OK]: "OK",
  [GrpcStatus.CANCELLED]: "Canceled",
  [GrpcStatus.UNKNOWN]: "Unknown",
  [GrpcStatus.INVALID_ARGUMENT]: "InvalidArgument",
  [GrpcStatus.DEADLINE_EXCEEDED]: "DeadlineExceeded",
  [GrpcStatus.NOT_FOUND]: "NotFound",
  [GrpcStatus.ALREADY_EXISTS]: "AlreadyExists",
  [GrpcStatus.PERMISSION_DENIED]: "PermissionDenied",
  [GrpcStatus.RESOURCE_EXHAUSTED]: "ResourceExhausted",
  [GrpcStatus.FAILED_PRECONDITION]: "FailedPrecondition",
  [GrpcStatus.ABORTED]: "Aborted",
  [GrpcStatus.OUT_OF_RANGE]: "OutOfRange",
  [GrpcStatus.UNIMPLEMENTED]: "Unimplemented",
  [GrpcStatus.INTERNAL]: "Internal",
  [GrpcStatus.UNAVAILABLE]: "Unavailable",
  [GrpcStatus.DATA_LOSS]: "DataLoss",
  [GrpcStatus.UNAUTHENTICATED]: "Unauthenticated",
};

/** go-grpc-prometheus's grpc_type for a method's streaming shape. */
function grpcType(requestStream: boolean, responseStream: boolean): string {
  if (requestStream) return responseStream ? "bidi_stream" : "client_stream";
  return responseStream ? "server_stream" : "unary";
}

/** The interceptor that feeds `metrics`. */
export function metricsInterceptor(metrics: DaemonMetrics): ServerInterceptor {
  return (method, call) => {
    const [, service = "unknown", name = "unknown"] = /^\/([^/]+)\/([^/]+)$/.exec(method.path) ?? [];
    const type = grpcType(method.requestStream, method.responseStream);
    const started = performance.now();
    metrics.rpcStarted(type, service, name);
    return new ServerInterceptingCall(call, {
      sendStatus: (status, next) => {
        const reason =
          status.code === GrpcStatus.OK
            ? undefined
            : errorInfoOf(status.metadata instanceof Metadata ? status.metadata : undefined)?.reason;
        metrics.rpcHandled(
          type,
          service,
          name,
          GO_CODE_NAMES[status.code] ?? String(status.code),
          (performance.now() - started) / 1000,
          reason,
        );
        next(status);
      },
    });
  };
}
