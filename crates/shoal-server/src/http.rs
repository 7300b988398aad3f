//! A minimal HTTP/1.1 responder for `GET /metrics`: one request per connection, bounded
//! request head, bounded time, `Connection: close`. Enough for Prometheus and curl; nothing
//! else is served.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{Metrics, Snapshot};
use crate::node_task::Event;

/// The largest request head read; longer ones are answered 431.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request and read the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape waits for the node task's snapshot before showing the last one.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves metrics on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Per-connection failures (reset before accept, fd limits): keep serving.
                    tracing::debug!(%error, "metrics accept failed");
                    continue;
                }
            },
        };
        let (metrics, events) = (metrics.clone(), events.clone());
        tokio::spawn(async move {
            let served = tokio::time::timeout(
                CONNECTION_TIMEOUT,
                serve_connection(stream, &metrics, &events),
            );
            if let Ok(Err(error)) = served.await {
                tracing::debug!(%error, "metrics connection failed");
            }
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    metrics: &Metrics,
    events: &mpsc::UnboundedSender<Event>,
) -> std::io::Result<()> {
    let head = match read_head(&mut stream).await? {
        Some(head) => head,
        None => {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let snapshot = snapshot(metrics, events).await;
            let body = metrics.render(&snapshot);
            respond(&mut stream, "200 OK", &body).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "only /metrics is served\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "use GET\n").await,
    }
}

/// A fresh snapshot from the node task, or the last one if it does not answer (shutting down).
async fn snapshot(metrics: &Metrics, events: &mpsc::UnboundedSender<Event>) -> Snapshot {
    let (tx, rx) = oneshot::channel();
    if events.send(Event::Snapshot(tx)).is_ok()
        && let Ok(Ok(snapshot)) = tokio::time::timeout(SNAPSHOT_TIMEOUT, rx).await
    {
        return snapshot;
    }
    metrics.last_snapshot()
}

/// Reads up to the end of the request head; `None` if it is too long.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if head.len() > MAX_HEAD_BYTES {
            return Ok(None);
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
