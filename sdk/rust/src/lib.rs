//! `sandbox_sdk`: what a sandboxd script needs to do useful work.
//!
//! A script reads a typed JSON context from stdin, writes a typed JSON result to stdout,
//! logs to stderr and, on failure, writes `{"error":{"code":..,"message":..}}` to stdout
//! and exits non-zero. [`run`] ties these together:
//!
//! ```ignore
//! use sandbox_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct In { name: String }
//! #[derive(Serialize)]
//! struct Out { greeting: String }
//!
//! fn main() {
//!     sandbox_sdk::run(|ctx: In| {
//!         if ctx.name.is_empty() {
//!             return Err(Error::new("EMPTY_NAME", "name must not be empty"));
//!         }
//!         Ok(Out { greeting: format!("hello, {}", ctx.name) })
//!     })
//! }
//! ```
//!
//! `serde`, `serde_json` and the derive macros are also reachable directly (`use serde::Serialize;`),
//! because the daemon passes them to rustc with `--extern`.

use std::fmt;
use std::io::{Read, Write};

pub mod http;

pub use serde;
pub use serde_json;

/// Exit code of a script that failed with [`fail`] or whose [`run`] closure returned `Err`.
pub const FAILURE_EXIT_CODE: i32 = 1;

/// Error code [`run`] reports when stdin is not the JSON the script expects.
pub const INVALID_CONTEXT: &str = "INVALID_CONTEXT";

/// Error code [`run`] reports when the result cannot be serialised.
pub const INVALID_OUTPUT: &str = "INVALID_OUTPUT";

/// Everything a script usually needs, for `use sandbox_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{context, fail, log, output, run, Error};
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{json, Value};
}

/// A structured script failure: a stable machine-readable `code` and a human `message`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Error {
    /// Stable identifier the caller can switch on, e.g. `"NOT_FOUND"`.
    pub code: String,
    /// What went wrong, for a human or an agent.
    pub message: String,
}

impl Error {
    /// Creates an error with the given code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error { code: code.into(), message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::new(INVALID_CONTEXT, e.to_string())
    }
}

/// Reads all of stdin and parses it as JSON into `T`. Empty stdin reads as `null`,
/// so `context::<Option<T>>()` and `context::<()>()` accept a missing context.
pub fn context<T: serde::de::DeserializeOwned>() -> Result<T, Error> {
    let mut buf = String::new();
    std::io::stdin()
        .read_to_string(&mut buf)
        .map_err(|e| Error::new(INVALID_CONTEXT, format!("cannot read stdin: {}", e)))?;
    let text = if buf.trim().is_empty() { "null" } else { buf.as_str() };
    serde_json::from_str(text).map_err(Error::from)
}

/// Writes `value` to stdout as one line of JSON.
pub fn output<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string(value).map_err(|e| Error::new(INVALID_OUTPUT, e.to_string()))?;
    let mut out = std::io::stdout().lock();
    // A closed stdout (output limit reached) is not something the script can fix: report and move on.
    writeln!(out, "{}", text)
        .and_then(|_| out.flush())
        .map_err(|e| Error::new(INVALID_OUTPUT, format!("cannot write stdout: {}", e)))
}

/// Writes one line to stderr (the daemon returns it as the run's stderr, never mixed with the result).
pub fn log_line(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", message);
}

/// Logs a formatted line to stderr: `sandbox_sdk::log!("got {} items", n);`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log_line(&::std::format!($($arg)*))
    };
}

/// Writes `{"error":{"code":..,"message":..}}` to stdout and exits with [`FAILURE_EXIT_CODE`].
pub fn fail(code: &str, message: &str) -> ! {
    let err = Error::new(code, message);
    let _ = output(&serde_json::json!({ "error": err }));
    std::process::exit(FAILURE_EXIT_CODE)
}

/// Reads the context as `In`, calls `f`, and writes its `Ok` result to stdout or fails with its `Err`.
/// A context that does not parse as `In` fails with code [`INVALID_CONTEXT`] before `f` runs.
pub fn run<In, Out, F>(f: F)
where
    In: serde::de::DeserializeOwned,
    Out: serde::Serialize,
    F: FnOnce(In) -> Result<Out, Error>,
{
    let result = context::<In>().and_then(f).and_then(|out| output(&out));
    if let Err(e) = result {
        fail(&e.code, &e.message);
    }
}
