//! `shoal get`, `shoal put`, `shoal delete`.
//!
//! Text output keeps stdout for data: `get` prints the values, one per line (UTF-8 as is,
//! anything else as `base64:…`), and nothing else. Everything about the answer goes to stderr
//! as `name: value` lines: `context: TOKEN` (the token the next put or delete of the key should
//! send), `siblings: N` when concurrent writes left several values, `not found`. `put` prints
//! only its `context:` line; `delete` prints nothing. `--json` prints one object on stdout
//! instead (values as strings when UTF-8, else `{"base64": "…"}`).

use std::io::Read;
use std::net::SocketAddr;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use clap::Args;
use shoal_client::{
    CausalContext, LocalRead, Object, RequestOptions, Role, Sibling, context_from_token,
    context_to_token,
};

use crate::args::{ConnectArgs, OutputArgs};
use crate::exit::{Outcome, UsageError};
use crate::json::Json;

/// Arguments of `shoal get`.
#[derive(Debug, Args)]
#[command(
    after_help = "Output: values on stdout, one per line; `context: TOKEN` and \
                        `siblings: N` on stderr. Exit 1 when the key holds no value."
)]
pub(crate) struct GetArgs {
    /// The key (its UTF-8 bytes).
    key: String,
    /// Read each --node's own replica instead (debugging): every sibling, tombstones included,
    /// unmerged, and whether the record is corrupt.
    #[arg(long)]
    local: bool,
    /// Replies to wait for (default: the cluster's R).
    #[arg(long, value_name = "R")]
    r: Option<u8>,
    /// Of those, replies that must come from primaries (default: the cluster's PR).
    #[arg(long, value_name = "PR")]
    pr: Option<u8>,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Arguments of `shoal put`.
#[derive(Debug, Args)]
#[command(
    after_help = "Output: `context: TOKEN` on stderr (the context of the written object). \
                        Without --context the write is blind: it supersedes nothing and \
                        becomes a sibling of any value already there."
)]
pub(crate) struct PutArgs {
    /// The key (its UTF-8 bytes).
    key: String,
    /// The value (its UTF-8 bytes); `-` reads the value's bytes from stdin.
    value: String,
    /// The context token of the read this write follows (from `get`); the write supersedes
    /// exactly what that read saw.
    #[arg(long, value_name = "TOKEN")]
    context: Option<String>,
    /// Durable acknowledgements to wait for (default: the cluster's W).
    #[arg(long, value_name = "W")]
    w: Option<u8>,
    /// Of those, acknowledgements that must come from primaries (default: the cluster's PW).
    #[arg(long, value_name = "PW")]
    pw: Option<u8>,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Arguments of `shoal delete`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The key (its UTF-8 bytes).
    key: String,
    /// The context token of the read this delete follows (from `get`): the delete supersedes
    /// what that read saw; values written concurrently survive as siblings.
    #[arg(long, value_name = "TOKEN", required = true)]
    context: String,
    /// Durable acknowledgements to wait for (default: the cluster's W).
    #[arg(long, value_name = "W")]
    w: Option<u8>,
    /// Of those, acknowledgements that must come from primaries (default: the cluster's PW).
    #[arg(long, value_name = "PW")]
    pw: Option<u8>,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

pub(crate) async fn get(args: GetArgs) -> anyhow::Result<Outcome> {
    if args.local {
        if args.r.is_some() || args.pr.is_some() {
            return Err(
                UsageError("--local reads one replica: --r and --pr do not apply".into()).into(),
            );
        }
        return get_local(args).await;
    }
    let client = args.connect.connect(Role::Client).await?;
    let options = RequestOptions {
        r: args.r,
        pr: args.pr,
        timeout: Some(args.connect.timeout),
        ..RequestOptions::default()
    };
    let read = client.get_with(&args.key, options).await;
    client.close().await;
    let read = read.with_context(|| format!("get {:?}", args.key))?;
    let token = context_to_token(&read.context);
    if args.output.json {
        let values = read.values.iter().map(value_json).collect();
        println!(
            "{}",
            Json::object([
                ("found", Json::Bool(read.is_found())),
                ("values", Json::Array(values)),
                ("siblings", Json::Number(read.values.len() as u64)),
                ("context", Json::string(token)),
            ])
        );
    } else {
        for value in &read.values {
            println!("{}", value_text(value));
        }
        if !read.is_found() {
            eprintln!("not found");
        } else if read.has_siblings() {
            eprintln!(
                "siblings: {} (concurrent writes; resolve with `shoal put KEY VALUE --context TOKEN`)",
                read.values.len()
            );
        }
        eprintln!("context: {token}");
    }
    Ok(if read.is_found() {
        Outcome::Done
    } else {
        Outcome::NotFound
    })
}

pub(crate) async fn put(args: PutArgs) -> anyhow::Result<Outcome> {
    let context = args
        .context
        .as_deref()
        .map(context_from_token)
        .transpose()?;
    let value = if args.value == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the value from stdin")?;
        Bytes::from(bytes)
    } else {
        Bytes::from(args.value.into_bytes())
    };
    let client = args.connect.connect(Role::Client).await?;
    let options = write_options(args.w, args.pw, &args.connect);
    let written = client
        .put_with(&args.key, value, context.as_ref(), options)
        .await;
    client.close().await;
    let written = written.with_context(|| format!("put {:?}", args.key))?;
    let token = context_to_token(&written);
    if args.output.json {
        println!("{}", Json::object([("context", Json::string(token))]));
    } else {
        eprintln!("context: {token}");
    }
    Ok(Outcome::Done)
}

pub(crate) async fn delete(args: DeleteArgs) -> anyhow::Result<Outcome> {
    let context: CausalContext = context_from_token(&args.context)?;
    let client = args.connect.connect(Role::Client).await?;
    let options = write_options(args.w, args.pw, &args.connect);
    let deleted = client.delete_with(&args.key, &context, options).await;
    client.close().await;
    deleted.with_context(|| format!("delete {:?}", args.key))?;
    if args.output.json {
        println!("{}", Json::object([("deleted", Json::Bool(true))]));
    }
    Ok(Outcome::Done)
}

/// Reads the replica of every node given, in order, and reports each.
async fn get_local(args: GetArgs) -> anyhow::Result<Outcome> {
    let client = args.connect.connect(Role::Client).await?;
    let mut replicas = Vec::new();
    for &addr in &args.connect.nodes {
        let local = client.get_local(addr, &args.key).await;
        replicas.push((addr, local));
    }
    client.close().await;
    let ring = client.ring();
    let name = |addr: SocketAddr| {
        ring.members()
            .iter()
            .find(|m| m.addr == addr)
            .map(|m| m.id.to_string())
    };
    if args.output.json {
        let items = replicas
            .iter()
            .map(|(addr, local)| local_json(*addr, name(*addr), local))
            .collect();
        println!("{}", Json::object([("replicas", Json::Array(items))]));
    } else {
        for (addr, local) in &replicas {
            let who = match name(*addr) {
                Some(id) => format!("{addr} ({id})"),
                None => addr.to_string(),
            };
            print_local(&who, local);
        }
    }
    let mut outcome = Outcome::NotFound;
    for (_, local) in replicas {
        match local {
            Ok(LocalRead::NotFound) => {}
            Ok(LocalRead::Found(_) | LocalRead::Corrupted | LocalRead::TooLarge { .. }) => {
                outcome = Outcome::Done
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("get --local: a node could not be read"));
            }
        }
    }
    Ok(outcome)
}

fn write_options(w: Option<u8>, pw: Option<u8>, connect: &ConnectArgs) -> RequestOptions {
    RequestOptions {
        w,
        pw,
        timeout: Some(connect.timeout),
        ..RequestOptions::default()
    }
}

fn print_local(who: &str, local: &Result<LocalRead, shoal_client::ClientError>) {
    match local {
        Ok(LocalRead::NotFound) => println!("{who}: not found"),
        Ok(LocalRead::Corrupted) => println!(
            "{who}: CORRUPT record (failed its checksum; counts as missing until repaired)"
        ),
        Ok(LocalRead::TooLarge { size, context }) => {
            println!("{who}: object of {size} value bytes, too large to send; only its context");
            println!("  context: {}", context_to_token(context));
        }
        Ok(LocalRead::Found(object)) if object.siblings().is_empty() => {
            // What a key whose tombstone was reaped reads as: its reaping record's vector.
            println!(
                "{who}: reaped (context {})",
                context_to_token(&object.context())
            );
        }
        Ok(LocalRead::Found(object)) => {
            let siblings = object.siblings();
            let state = if object.is_deleted() {
                " (deleted)"
            } else {
                ""
            };
            println!("{who}: {} sibling(s){state}", siblings.len());
            for (dot, sibling) in siblings {
                let shown = match sibling {
                    Sibling::Value(v) => value_text(v),
                    Sibling::Tombstone => "<tombstone>".to_owned(),
                };
                println!("  {}  {shown}", dot_text(dot));
            }
            println!("  context: {}", context_to_token(&object.context()));
        }
        Err(e) => println!("{who}: error: {e}"),
    }
}

fn local_json(
    addr: SocketAddr,
    id: Option<String>,
    local: &Result<LocalRead, shoal_client::ClientError>,
) -> Json {
    let node = ("node", Json::string(addr.to_string()));
    let id = ("id", id.map_or(Json::Null, Json::String));
    match local {
        Ok(LocalRead::NotFound) => Json::object([node, id, ("state", Json::string("not_found"))]),
        Ok(LocalRead::Corrupted) => Json::object([node, id, ("state", Json::string("corrupted"))]),
        Ok(LocalRead::TooLarge { size, context }) => Json::object([
            node,
            id,
            ("state", Json::string("too_large")),
            ("size", Json::Number(*size)),
            ("context", Json::string(context_to_token(context))),
        ]),
        Ok(LocalRead::Found(object)) if object.siblings().is_empty() => Json::object([
            node,
            id,
            ("state", Json::string("reaped")),
            ("context", Json::string(context_to_token(&object.context()))),
        ]),
        Ok(LocalRead::Found(object)) => Json::object([
            node,
            id,
            ("state", Json::string("found")),
            ("deleted", Json::Bool(object.is_deleted())),
            ("siblings", Json::Array(siblings_json(object))),
            ("context", Json::string(context_to_token(&object.context()))),
        ]),
        Err(e) => Json::object([
            node,
            id,
            ("state", Json::string("error")),
            ("error", Json::string(e.to_string())),
        ]),
    }
}

fn siblings_json(object: &Object) -> Vec<Json> {
    object
        .siblings()
        .iter()
        .map(|(dot, sibling)| match sibling {
            Sibling::Value(v) => Json::object([
                ("dot", Json::string(dot_text(dot))),
                ("value", value_json(v)),
            ]),
            Sibling::Tombstone => Json::object([
                ("dot", Json::string(dot_text(dot))),
                ("tombstone", Json::Bool(true)),
            ]),
        })
        .collect()
}

/// `node#incarnation:counter`.
fn dot_text(dot: &shoal_causality::Dot) -> String {
    format!(
        "{}#{}:{}",
        dot.actor.node, dot.actor.incarnation, dot.counter
    )
}

/// A value as one line of text: UTF-8 as is, other bytes as `base64:` and standard base64.
fn value_text(value: &Bytes) -> String {
    match std::str::from_utf8(value) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("base64:{}", STANDARD.encode(value)),
    }
}

/// A value in JSON: a string when UTF-8, else `{"base64": "…"}`.
fn value_json(value: &Bytes) -> Json {
    match std::str::from_utf8(value) {
        Ok(s) => Json::string(s),
        Err(_) => Json::object([("base64", Json::string(STANDARD.encode(value)))]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_text_or_marked_base64() {
        assert_eq!(value_text(&Bytes::from_static(b"hello")), "hello");
        assert_eq!(
            value_text(&Bytes::from_static(&[0xff, 0x00])),
            "base64:/wA="
        );
        assert_eq!(value_json(&Bytes::from_static(b"hi")).to_string(), "\"hi\"");
        assert_eq!(
            value_json(&Bytes::from_static(&[0xff])).to_string(),
            r#"{"base64":"/w=="}"#
        );
    }
}
