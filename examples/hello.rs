// The demo script: reads a JSON context from stdin and answers with JSON.
// Plain std only, so it builds on any rustc with a WASI target; see
// sdk/rust/README.md for the typed SDK (serde, structured errors).
use std::io::Read;

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    // A tiny, dependency-free look into the context: the value of "name".
    let name = input
        .split("\"name\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .unwrap_or("world");
    eprintln!("hello.rs: {} bytes of context", input.len());
    println!("{{\"greeting\":\"hello, {}\",\"context_bytes\":{}}}", name, input.len());
}
