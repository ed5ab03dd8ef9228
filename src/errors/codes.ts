/**
 * Error codes of the core, one per gRPC status we use. The core speaks only
 * these; src/grpc/status.ts is the single place they become gRPC statuses.
 */
export enum Code {
  InvalidArgument = "invalid_argument",
  NotFound = "not_found",
  FailedPrecondition = "failed_precondition",
  ResourceExhausted = "resource_exhausted",
  Unauthenticated = "unauthenticated",
  PermissionDenied = "permission_denied",
  Unimplemented = "unimplemented",
  Cancelled = "cancelled",
  DeadlineExceeded = "deadline_exceeded",
  Unavailable = "unavailable",
  Internal = "internal",
}
