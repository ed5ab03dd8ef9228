//! Outbound HTTP(S) to the hosts the run's signed policy allows.
//!
//! A policy grants it with `network: true` and `allowed_hosts` (`https://api.example.com`,
//! `https://*.example.org`, ...); everything else is refused with an [`HttpError`] whose message says
//! why, and the daemon reports the refusal to the caller as a denial. The request is made by sandboxd,
//! which follows redirects (re-checking each hop), refuses names that resolve to private or loopback
//! addresses, and bounds the number of requests, the response bytes and the time of each request.
//!
//! ```ignore
//! use sandbox_sdk::http;
//!
//! let weather: serde_json::Value = http::get("https://api.example.com/weather?city=Oslo")?.json()?;
//! let created = http::Request::post("https://api.example.com/items")
//!     .header("Authorization", "Bearer ...")
//!     .json(&serde_json::json!({ "name": "tea" }))
//!     .send()?;
//! if created.status != 201 { /* ... */ }
//! ```
//!
//! Under the hood this calls the `sandboxd_http_v1` host functions (docs/network.md in the sandboxd
//! repository), which any language compiled to wasm can call the same way.

use std::fmt;

/// What kind of failure an [`HttpError`] is; it mirrors the host's result codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpErrorKind {
    /// The policy or the address rules refused the request (or a redirect from it).
    Denied,
    /// The request is malformed: URL, method, a header the host sets itself, or too large.
    Invalid,
    /// A per-run limit ran out: the number of requests or the response bytes.
    Limit,
    /// No complete response within the request timeout. (A run out of time ends there, as a timeout.)
    Timeout,
    /// The name did not resolve, the connection or TLS failed, or the server broke the protocol.
    Failed,
    /// The response arrived but is not what the script asked it to be (text that is not UTF-8, JSON that does not parse).
    Decode,
}

impl HttpErrorKind {
    /// A stable upper-case code, e.g. `"HTTP_DENIED"`, used when the error becomes a [`crate::Error`].
    pub fn code(self) -> &'static str {
        match self {
            HttpErrorKind::Denied => "HTTP_DENIED",
            HttpErrorKind::Invalid => "HTTP_INVALID",
            HttpErrorKind::Limit => "HTTP_LIMIT",
            HttpErrorKind::Timeout => "HTTP_TIMEOUT",
            HttpErrorKind::Failed => "HTTP_FAILED",
            HttpErrorKind::Decode => "HTTP_DECODE",
        }
    }
}

/// Why a request got no usable response. `Display` gives the kind and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// What kind of failure this is.
    pub kind: HttpErrorKind,
    /// The reason, as the host gave it (e.g. "api.evil.com is not in allowed_hosts").
    pub message: String,
}

impl HttpError {
    fn new(kind: HttpErrorKind, message: impl Into<String>) -> Self {
        HttpError { kind, message: message.into() }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            HttpErrorKind::Denied => "request denied",
            HttpErrorKind::Invalid => "invalid request",
            HttpErrorKind::Limit => "limit reached",
            HttpErrorKind::Timeout => "timed out",
            HttpErrorKind::Failed => "request failed",
            HttpErrorKind::Decode => "cannot decode the response",
        };
        write!(f, "{}: {}", kind, self.message)
    }
}

impl std::error::Error for HttpError {}

/// Lets `?` turn an HTTP failure into the script's structured error (code `HTTP_DENIED`, `HTTP_TIMEOUT`, ...).
impl From<HttpError> for crate::Error {
    fn from(e: HttpError) -> Self {
        crate::Error::new(e.kind.code(), e.message)
    }
}

/// A response, whatever its status: 4xx and 5xx are responses too, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Header names and values in the order the server sent them.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The URL that answered, after any redirects.
    pub url: String,
}

impl Response {
    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<String, HttpError> {
        String::from_utf8(self.body.clone()).map_err(|e| HttpError::new(HttpErrorKind::Decode, format!("the body is not UTF-8: {}", e)))
    }

    /// The body parsed as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::new(HttpErrorKind::Decode, format!("the body is not the JSON expected: {}", e)))
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A request being built: `Request::post(url).header(..).json(&value).send()`.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    follow_redirects: bool,
    /// A failure met while building (a body that did not serialise), reported by `send`.
    error: Option<HttpError>,
}

impl Request {
    /// A request with any method the host allows (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS).
    pub fn new(method: &str, url: &str) -> Request {
        Request { method: method.to_string(), url: url.to_string(), headers: Vec::new(), body: Vec::new(), follow_redirects: true, error: None }
    }
    /// A GET request.
    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }
    /// A HEAD request.
    pub fn head(url: &str) -> Request {
        Request::new("HEAD", url)
    }
    /// A POST request.
    pub fn post(url: &str) -> Request {
        Request::new("POST", url)
    }
    /// A PUT request.
    pub fn put(url: &str) -> Request {
        Request::new("PUT", url)
    }
    /// A PATCH request.
    pub fn patch(url: &str) -> Request {
        Request::new("PATCH", url)
    }
    /// A DELETE request.
    pub fn delete(url: &str) -> Request {
        Request::new("DELETE", url)
    }

    /// Adds a header (repeat a name to send it several times). Host, Connection, Content-Length,
    /// Transfer-Encoding, Upgrade, TE, Keep-Alive, HTTP2-Settings and Proxy-* are set by the host: sending them is refused.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` as JSON, and `Content-Type: application/json`.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Request {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = body;
                self.headers.push(("Content-Type".to_string(), "application/json".to_string()));
            }
            Err(e) => self.error = Some(HttpError::new(HttpErrorKind::Invalid, format!("the body does not serialise as JSON: {}", e))),
        }
        self
    }

    /// Whether the host follows redirects (the default) or returns the 3xx response as it is.
    pub fn follow_redirects(mut self, follow: bool) -> Request {
        self.follow_redirects = follow;
        self
    }

    /// Sends the request and waits for the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let head = serde_json::json!({
            "method": self.method,
            "url": self.url,
            "headers": self.headers,
            "follow_redirects": self.follow_redirects,
        })
        .to_string();
        let mut out = [0u32; 4];
        let rc = host::request(head.as_bytes(), &self.body, &mut out);
        let [status, head_len, body_len, error_len] = out;
        if rc != host::OK {
            let message = host::read_part(host::PART_ERROR, error_len).map(|m| String::from_utf8_lossy(&m).into_owned())?;
            let kind = match rc {
                host::DENIED => HttpErrorKind::Denied,
                host::INVALID => HttpErrorKind::Invalid,
                host::LIMIT => HttpErrorKind::Limit,
                host::TIMEOUT => HttpErrorKind::Timeout,
                _ => HttpErrorKind::Failed,
            };
            return Err(HttpError::new(kind, message));
        }
        #[derive(serde::Deserialize)]
        struct Head {
            headers: Vec<(String, String)>,
            url: String,
        }
        let head: Head = serde_json::from_slice(&host::read_part(host::PART_HEAD, head_len)?)
            .map_err(|e| HttpError::new(HttpErrorKind::Failed, format!("the host's response head does not parse: {}", e)))?;
        let body = host::read_part(host::PART_BODY, body_len)?;
        Ok(Response { status: status as u16, headers: head.headers, body, url: head.url })
    }
}

/// GETs `url` and returns the response (any status).
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

/// The raw host calls; see docs/network.md for the ABI.
mod host {
    use super::{HttpError, HttpErrorKind};

    pub const OK: u32 = 0;
    pub const DENIED: u32 = 1;
    pub const INVALID: u32 = 2;
    pub const LIMIT: u32 = 3;
    pub const TIMEOUT: u32 = 4;
    pub const PART_HEAD: u32 = 0;
    pub const PART_BODY: u32 = 1;
    pub const PART_ERROR: u32 = 2;

    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "sandboxd_http_v1")]
    extern "C" {
        #[link_name = "request"]
        fn host_request(head_ptr: *const u8, head_len: usize, body_ptr: *const u8, body_len: usize, out_ptr: *mut u32) -> u32;
        #[link_name = "read"]
        fn host_read(part: u32, offset: u32, buf_ptr: *mut u8, buf_len: usize, nread_ptr: *mut u32) -> u32;
    }

    /// Sends one request; `out` receives status, head length, body length and error length.
    #[cfg(target_arch = "wasm32")]
    pub fn request(head: &[u8], body: &[u8], out: &mut [u32; 4]) -> u32 {
        unsafe { host_request(head.as_ptr(), head.len(), body.as_ptr(), body.len(), out.as_mut_ptr()) }
    }

    /// Copies all `len` bytes of one part of the last result.
    #[cfg(target_arch = "wasm32")]
    pub fn read_part(part: u32, len: u32) -> Result<Vec<u8>, HttpError> {
        let mut buf: Vec<u8> = Vec::with_capacity(len as usize);
        let mut n: u32 = 0;
        let rc = unsafe { host_read(part, 0, buf.as_mut_ptr(), len as usize, &mut n) };
        if rc != OK || n > len {
            return Err(HttpError::new(HttpErrorKind::Failed, format!("the host could not hand over the response (code {})", rc)));
        }
        unsafe { buf.set_len(n as usize) };
        Ok(buf)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn request(_head: &[u8], _body: &[u8], out: &mut [u32; 4]) -> u32 {
        *out = [0; 4];
        5
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_part(_part: u32, _len: u32) -> Result<Vec<u8>, HttpError> {
        Err(HttpError::new(HttpErrorKind::Failed, "outbound HTTP is only available to scripts running in sandboxd"))
    }
}
