/**
 * Every default limit of the daemon, in one place, with its unit in its name.
 * Operators override some with flags (see src/cli/sandboxd.ts); policies may
 * lower them or, within operator ceilings, raise them.
 */

/** Wall-clock run time of one execution when the policy does not say. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Guest linear memory when the policy does not say. */
export const DEFAULT_MEMORY_LIMIT_BYTES = 256 * 1024 * 1024;
/** Bytes of stdout, and separately of stderr, kept when the policy does not say. */
export const DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
/** Largest stdin a request may carry. */
export const MAX_STDIN_BYTES = 16 * 1024 * 1024;
/** Arguments (after argv[0]) a request may carry unless `--max-args` says otherwise. */
export const MAX_ARGS = 65_536;
/** Total UTF-8 bytes of a request's arguments unless `--max-args-bytes` says otherwise. */
export const MAX_ARGS_BYTES = 16 * 1024 * 1024;
/** Environment variables a request may carry unless `--max-env-vars` says otherwise. */
export const MAX_ENV_VARS = 65_536;
/** Total UTF-8 bytes of a request's environment (keys plus values) unless `--max-env-bytes` says otherwise. */
export const MAX_ENV_BYTES = 16 * 1024 * 1024;
/**
 * Protobuf fields (at any depth, unknown ones included) a request may carry besides its args and env
 * entries: a real request has a handful, and each costs the decoder an allocation and time.
 */
export const MAX_OTHER_REQUEST_FIELDS = 1024;
/** Largest serialized Policy a request's SignedPolicy may carry (checked before verifying its signature). */
export const MAX_POLICY_BYTES = 64 * 1024;
/** Mounts one policy may grant. */
export const MAX_POLICY_MOUNTS = 64;
/** Largest Rust source a request may carry. */
export const MAX_SOURCE_BYTES = 1024 * 1024;
/** Largest precompiled module a request may carry. */
export const MAX_WASM_BYTES = 64 * 1024 * 1024;
/** Denials recorded per execution; later ones are counted, not kept. */
export const MAX_DENIALS = 64;
/** Largest gRPC message the server accepts (requests carry wasm and stdin). */
export const MAX_GRPC_MESSAGE_BYTES = 128 * 1024 * 1024;
/** Room an Execute response keeps for all but stdout and stderr: diagnostics (MAX_DIAGNOSTICS_BYTES), denials, message. */
export const UNARY_RESPONSE_RESERVE_BYTES = 4 * 1024 * 1024;
/**
 * Largest output cap (stdout and stderr each) Execute accepts, 62 MiB: both streams at the cap plus
 * the reserve still fit in one message. StreamOutput has no such bound.
 */
export const MAX_UNARY_OUTPUT_BYTES = (MAX_GRPC_MESSAGE_BYTES - UNARY_RESPONSE_RESERVE_BYTES) / 2;
/** Output bytes one StreamOutput event carries at most, so a client's default receive limit (4 MiB in most gRPC libraries) always holds one. */
export const MAX_STREAM_EVENT_OUTPUT_BYTES = 1024 * 1024;
/** Bytes of diagnostics a compile returns at most; beyond them a note counts what was left out. */
export const MAX_DIAGNOSTICS_BYTES = 1024 * 1024;
/** Executions waiting for a worker beyond which new ones are refused (`--max-queued-executions`). */
export const DEFAULT_MAX_QUEUED_EXECUTIONS = 1024;
/**
 * Bytes the daemon holds for calls beyond their own limits (`--max-buffered-bytes`): stdin of
 * admitted executions and streamed output not yet taken by its client. New executions are refused
 * (EXECUTION_QUEUE_FULL) while it is full.
 */
export const DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024;
/** Streamed output a client has not taken yet at which its guest waits (per run). */
export const STREAM_WINDOW_BYTES = 1024 * 1024;
/** Buffered guest output is flushed to a streaming client at least this often. */
export const STREAM_FLUSH_INTERVAL_MS = 5;
/** ...or as soon as this many bytes are buffered. */
export const STREAM_FLUSH_BYTES = 256 * 1024;
/** Grace period for in-flight calls when the daemon is asked to stop. */
export const SHUTDOWN_GRACE_MS = 5_000;
/** Modules per ListModules page when the request does not say. */
export const DEFAULT_ADMIN_PAGE_SIZE = 100;
/** Most modules per ListModules page; a larger page_size is clamped to it. */
export const MAX_ADMIN_PAGE_SIZE = 1000;
/** Longest operator note BlockModule keeps with a blocked id. */
export const MAX_BLOCK_REASON_BYTES = 1024;
/** Hit counts and last-used times reach disk at most this long after they change (a crash loses at most this much). */
export const MODULE_USAGE_FLUSH_INTERVAL_MS = 30_000;
/** Wall-clock budget of finding an admin caller's uid (one short helper process per connection). */
export const PEER_CREDENTIALS_TIMEOUT_MS = 2_000;
/** How far the daemon's clock may disagree with the policy signer's when checking not_before/expires_at. */
export const POLICY_CLOCK_SKEW_SECONDS = 60;
/** Operator ceiling on a policy's memory_limit_bytes unless --max-memory-bytes says otherwise (wasm32's whole address space). */
export const DEFAULT_CEILING_MEMORY_BYTES = 4 * 1024 * 1024 * 1024;
/** Operator ceiling on a policy's timeout_ms unless --max-timeout-ms says otherwise. */
export const DEFAULT_CEILING_TIMEOUT_MS = 5 * 60 * 1000;
/** Bytes one run may add to its writable mounts when the policy does not say. */
export const DEFAULT_MAX_WRITE_BYTES = 64 * 1024 * 1024;
/** Operator ceiling on a policy's max_write_bytes unless --max-write-bytes says otherwise. */
export const DEFAULT_CEILING_WRITE_BYTES = 1024 * 1024 * 1024;
/** Operator ceiling on a policy's fuel_limit (fuel units) unless --max-fuel says otherwise: the largest a JS number holds exactly. */
export const DEFAULT_CEILING_FUEL = Number.MAX_SAFE_INTEGER;
/** Files, directories and links one run may create in its writable mounts unless `--max-created-entries` says otherwise. */
export const DEFAULT_MAX_CREATED_ENTRIES = 10_000;
/** Operator ceiling on a policy's max_output_bytes unless --max-output-bytes says otherwise. */
export const DEFAULT_CEILING_OUTPUT_BYTES = 256 * 1024 * 1024;
/** Guest file descriptors (beyond stdio, preopens included) one execution may hold open at once. */
export const MAX_OPEN_FDS = 256;
/** Wall-clock budget of one rustc run; a macro or const-eval bomb ends here (`--compile-timeout-ms`). */
export const COMPILE_TIMEOUT_MS = 60_000;
/** Address-space cap (RLIMIT_AS) of one rustc run (`--compile-memory-bytes`); linking the SDK needs ~1 GiB of address space. */
export const COMPILE_MEMORY_LIMIT_BYTES = 2 * 1024 * 1024 * 1024;
/** Largest file rustc may write (RLIMIT_FSIZE): bounds a module bloated by a huge const array. */
export const COMPILE_MAX_FILE_BYTES = 256 * 1024 * 1024;
/** Size of the private memory-backed /tmp rustc gets inside its sandbox. */
export const COMPILE_TMPFS_BYTES = 256 * 1024 * 1024;
/** Compiles of candidates one repair may run (CompileRequest.repair); each round applies the suggestions of the previous one's errors. */
export const MAX_REPAIR_ROUNDS = 6;
/** Wall-clock time one repair's rounds may take together (each rustc run is also bound by COMPILE_TIMEOUT_MS); past it, no repair. */
export const REPAIR_TIME_BUDGET_MS = 30_000;
/** Compiles waiting for a rustc slot beyond which new ones are refused (COMPILE_QUEUE_FULL). */
export const COMPILE_MAX_QUEUED = 64;
/**
 * Size of the compiled modules kept in memory, counted by their binaries, unless `--memory-cache-max-bytes`
 * says otherwise (V8's compiled code for a module is about the size of its binary again).
 */
export const DEFAULT_MEMORY_CACHE_MAX_BYTES = 256 * 1024 * 1024;
/** Size cap of the on-disk module cache unless `--cache-max-bytes` says otherwise. */
export const DEFAULT_CACHE_MAX_BYTES = 2 * 1024 * 1024 * 1024;
/** Elements of all of a guest's wasm tables together (they live on the worker's V8 heap, not in the memory cap). */
export const MAX_WASM_TABLE_ELEMENTS = 1_000_000;
/** After an uncaught exception, how long the daemon waits for its last log line to be written before it exits anyway. */
export const FATAL_LOG_FLUSH_TIMEOUT_MS = 2_000;
/** Largest trusted key file read (an Ed25519 PEM public key is 113 bytes); a bigger `*.pub` is skipped. */
export const MAX_TRUSTED_KEY_FILE_BYTES = 16 * 1024;
/** Wall-clock budget of one read of the trusted key directory; a reload that takes longer keeps the previous keys. */
export const TRUSTED_KEYS_RELOAD_TIMEOUT_MS = 5_000;
/** Client connections open at once beyond which new ones are closed on arrival (`--max-connections`); each costs a descriptor. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** A connection with no call in flight for this long is closed with GOAWAY (`--idle-timeout-ms`); gRPC clients reconnect on their next call. */
export const DEFAULT_CONNECTION_IDLE_TIMEOUT_MS = 5 * 60 * 1000;
/** Once the daemon has sent its last bytes on a connection it is closing, how long the peer gets to close its end before the socket is destroyed. */
export const CONNECTION_CLOSE_GRACE_MS = 1_000;
/** At most one log line per this interval about connections refused at the cap. */
export const CONNECTION_CAP_LOG_INTERVAL_MS = 10_000;
/** Longest a guest's filesystem call waits for another run's rename or path operation before failing with EBUSY. */
export const NAMESPACE_LOCK_WAIT_MS = 2_000;
/** Bytes a file write moves per hold of the namespace lock, so a large write delays other guests' renames only briefly. */
export const NAMESPACE_LOCK_WRITE_CHUNK_BYTES = 1024 * 1024;
/** Outbound HTTP requests one run may make (redirect hops count) when the policy does not say. */
export const DEFAULT_MAX_HTTP_REQUESTS = 100;
/** Operator ceiling on a policy's max_http_requests unless --max-http-requests says otherwise. */
export const DEFAULT_CEILING_HTTP_REQUESTS = 10_000;
/** Response body bytes one run may receive over all its requests when the policy does not say. */
export const DEFAULT_MAX_HTTP_RESPONSE_BYTES = 16 * 1024 * 1024;
/** Operator ceiling on a policy's max_http_response_bytes unless --max-http-response-bytes says otherwise. */
export const DEFAULT_CEILING_HTTP_RESPONSE_BYTES = 256 * 1024 * 1024;
/** Wall-clock limit of one outbound request, redirects included, when the policy does not say. */
export const DEFAULT_HTTP_TIMEOUT_MS = 10_000;
/** Operator ceiling on a policy's http_timeout_ms unless --max-http-timeout-ms says otherwise. */
export const DEFAULT_CEILING_HTTP_TIMEOUT_MS = 5 * 60 * 1000;
/** Redirect hops followed for one request; each is checked again against allowed_hosts and the address rules. */
export const MAX_HTTP_REDIRECTS = 5;
/** Longest URL a guest may request (and a Location header may name). */
export const MAX_HTTP_URL_BYTES = 8 * 1024;
/** Largest request head (the JSON with method, URL and headers) a guest may send. */
export const MAX_HTTP_REQUEST_HEAD_BYTES = 64 * 1024;
/** Largest request body a guest may send. */
export const MAX_HTTP_REQUEST_BODY_BYTES = 16 * 1024 * 1024;
/** Largest response head (status line and headers) accepted from a server. */
export const MAX_HTTP_RESPONSE_HEAD_BYTES = 64 * 1024;
/** Entries a policy's allowed_hosts may list. */
export const MAX_ALLOWED_HOSTS = 256;
/** Wall-clock budget of one operation on the shared module cache (`--remote-cache-timeout-ms`); past it the operation counts as a miss. */
export const REMOTE_CACHE_OP_TIMEOUT_MS = 2_000;
/** First wait before reconnecting to the shared module cache; doubled after each failed attempt. */
export const REMOTE_CACHE_RECONNECT_BASE_MS = 100;
/** Longest wait between two attempts to reconnect to the shared module cache. */
export const REMOTE_CACHE_RECONNECT_MAX_MS = 5_000;
/** Lifetime of a host's claim to compile a module id for the cluster; renewed while rustc runs, so only a dead holder's lapses. */
export const REMOTE_CACHE_LEASE_TTL_MS = 10_000;
/** Longest a compile waits for another host's entry before compiling itself (rustc's budget plus an upload). */
export const REMOTE_CACHE_LEASE_WAIT_MS = COMPILE_TIMEOUT_MS + 10_000;
/** How often a host waiting on another's lease looks for its entry. */
export const REMOTE_CACHE_LEASE_POLL_MS = 50;
/** Largest record read from the shared cache (diagnostics and fixed source, base64); a bigger one is refused unread. */
export const REMOTE_CACHE_MAX_RECORD_BYTES = 8 * 1024 * 1024;
/** Shortest cluster key accepted (`--remote-cache-key`): 256 bits. */
export const REMOTE_CACHE_MIN_KEY_BYTES = 32;
/** Largest key file read; it holds a few keys during a rotation. */
export const REMOTE_CACHE_MAX_KEY_FILE_BYTES = 64 * 1024;
/** After a failed or timed-out operation, the shared cache is not asked for this long (every lookup is a miss meanwhile). */
export const REMOTE_CACHE_FAILURE_PAUSE_MS = 5_000;
/** At most one warning per this interval about the shared cache being unreachable. */
export const REMOTE_CACHE_LOG_INTERVAL_MS = 10_000;
