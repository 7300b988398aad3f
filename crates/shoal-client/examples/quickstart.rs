//! A first tour of the client against a running cluster.
//!
//! Start a local cluster in another shell and use the variables it prints:
//!
//! ```text
//! shoal dev                      # prints: export SHOAL_NODES=127.0.0.1:…,… SHOAL_CERTS=…/certs
//! source shoal-dev/env
//! cargo run -p shoal-client --example quickstart
//! ```
//!
//! It writes a key, reads it back, makes two concurrent writes (siblings) and resolves them by
//! writing with the context of the read that saw both.

use std::error::Error;
use std::net::SocketAddr;

use shoal_client::{Client, ClientConfig, context_to_token};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let nodes: Vec<SocketAddr> = std::env::var("SHOAL_NODES")
        .map_err(|_| "set SHOAL_NODES (run `shoal dev` and source its env file)")?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let certs = std::env::var("SHOAL_CERTS").map_err(|_| "set SHOAL_CERTS")?;
    let client = Client::connect(ClientConfig::new(nodes, certs)).await?;
    println!(
        "connected: ring epoch {}, {} members",
        client.ring().epoch(),
        client.ring().members().len()
    );

    // A read of a key never written is not an error: it has no values, and a context.
    let key = format!("quickstart/{}", std::process::id());
    let missing = client.get(&key).await?;
    println!("before writing: found = {}", missing.is_found());

    // Write, then read back.
    client.put(&key, "hello", None).await?;
    let read = client.get(&key).await?;
    println!("after one write: {:?}", strings(&read.values));

    // Two writers that both start from the same read write concurrently: neither saw the
    // other's value, so the cluster keeps both, as siblings.
    client
        .put(&key, "hello from A", Some(&read.context))
        .await?;
    client
        .put(&key, "hello from B", Some(&read.context))
        .await?;
    let conflicted = client.get(&key).await?;
    println!(
        "after two concurrent writes: {} siblings {:?}",
        conflicted.values.len(),
        strings(&conflicted.values)
    );

    // Resolve: merge the siblings however the application likes, and write the result with the
    // context of the read that saw them all. The write supersedes every sibling it saw.
    let mut merged = strings(&conflicted.values);
    merged.sort();
    client
        .put(&key, merged.join(" + "), Some(&conflicted.context))
        .await?;
    let resolved = client.get(&key).await?;
    println!("after resolving: {:?}", strings(&resolved.values));
    println!(
        "its context, as a token for other programs: {}",
        context_to_token(&resolved.context)
    );

    // Delete with the context of the last read; a later read finds nothing.
    client.delete(&key, &resolved.context).await?;
    println!(
        "after delete: found = {}",
        client.get(&key).await?.is_found()
    );
    client.close().await;
    Ok(())
}

fn strings(values: &[bytes::Bytes]) -> Vec<String> {
    values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}
