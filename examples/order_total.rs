// The README's SDK example, kept compiling by test/integration/readme-examples.test.ts.
use sandbox_sdk::prelude::*;

#[derive(Deserialize)]
struct Order { items: Vec<Item> }
#[derive(Deserialize)]
struct Item { price_cents: u64, quantity: u32 }
#[derive(Serialize)]
struct Total { total_cents: u64 }

fn main() {
    // Reads the JSON context from stdin, writes the result (or a structured error) to stdout.
    run(|order: Order| {
        if order.items.is_empty() {
            return Err(Error::new("EMPTY_ORDER", "an order needs at least one item"));
        }
        log!("pricing {} items", order.items.len()); // to stderr
        Ok(Total { total_cents: order.items.iter().map(|i| i.price_cents * i.quantity as u64).sum() })
    })
}
