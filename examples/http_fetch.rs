//! Fetches a JSON API the policy allows and reports what came back.
//!
//! Needs a policy with `"network": true` and `"allowed_hosts": ["https://api.example.com"]`
//! (within the daemon's `--allow-network-host`), and stdin like
//! `{"url":"https://api.example.com/items/1","token":"..."}`.
use sandbox_sdk::http::Request;
use sandbox_sdk::prelude::*;

#[derive(Deserialize)]
struct Input {
    url: String,
    token: Option<String>,
}

#[derive(Serialize)]
struct Output {
    status: u16,
    content_type: Option<String>,
    item: Option<Value>,
}

fn main() {
    run(|input: Input| {
        let mut request = Request::get(&input.url).header("Accept", "application/json");
        if let Some(token) = &input.token {
            request = request.header("Authorization", &format!("Bearer {}", token));
        }
        // A refused or failed request becomes {"error":{"code":"HTTP_DENIED",...}} through `?`.
        let response = request.send()?;
        log!("{} answered {} with {} bytes", response.url, response.status, response.body.len());
        let item = if response.is_success() { Some(response.json::<Value>()?) } else { None };
        Ok(Output { status: response.status, content_type: response.header("content-type").map(str::to_string), item })
    })
}
