/**
 * The guest-facing ABI of outbound HTTP: a host import module of our own beside
 * wasi_snapshot_preview1, small enough for any language that compiles to wasm
 * (docs/network.md is its specification). Preview1 has no HTTP and its sockets
 * would hand a guest raw connections we could not vet, so a guest asks for a
 * whole request and gets a whole response.
 */

/** The import module name. The version is part of it so a later ABI can live beside this one. */
export const HTTP_MODULE = "sandboxd_http_v1";

/** wasm value type i32, as the binary format writes it. */
const I32 = 0x7f;

/** Every function of the module with its exact signature (params, results as binary value types). */
export const HTTP_FUNCTIONS = {
  /** request(head_ptr, head_len, body_ptr, body_len, out_ptr) -> result */
  request: { params: [I32, I32, I32, I32, I32], results: [I32] },
  /** read(part, offset, buf_ptr, buf_len, nread_ptr) -> result */
  read: { params: [I32, I32, I32, I32, I32], results: [I32] },
} as const satisfies Record<string, { readonly params: readonly number[]; readonly results: readonly number[] }>;

/** What `request` and `read` return. Values are ABI: never renumber them. */
export const HttpResult = {
  /** The response arrived (any HTTP status, 4xx and 5xx included). */
  OK: 0,
  /** The policy or the address rules refused the request, or a redirect from it; a Denial records it. */
  DENIED: 1,
  /** The request is malformed: bad head JSON, URL, method or header, or too large. A Denial records it. */
  INVALID: 2,
  /** A per-run limit ran out: request count or response bytes. A Denial records it. */
  LIMIT: 3,
  /** No complete response within the per-request timeout. */
  TIMEOUT: 4,
  /** The name did not resolve, the connection or TLS failed, or the server broke the protocol. */
  FAILED: 5,
  /** A pointer or length lies outside guest memory, or `read` named no part or came before any request. */
  FAULT: 6,
} as const;

/** One of the HttpResult values. */
export type HttpResultCode = (typeof HttpResult)[keyof typeof HttpResult];

/** What `read` can copy out of the last result. */
export const HttpPart = {
  /** The response head as JSON: `{"status":200,"headers":[["name","value"],...],"url":"<final URL>"}`. */
  HEAD: 0,
  /** The response body, raw bytes. */
  BODY: 1,
  /** Why the request failed, UTF-8 text. */
  ERROR: 2,
} as const;

/** Bytes of the struct `request` writes at out_ptr: status, head_len, body_len, error_len, each a little-endian u32. */
export const HTTP_OUT_BYTES = 16;

/** The operation name of denials for outbound requests. */
export const HTTP_DENIAL_OPERATION = "http_request";
