//! A minimal HTTP/1.1 responder for `GET /metrics`: one request per connection, at most
//! [`MAX_CONNECTIONS`] served at once (more are answered 503 and closed without waiting), a
//! bounded request head, bounded time, `Connection: close`. Enough for Prometheus and curl;
//! nothing else is served.
//!
//! The node's own counters come from a snapshot only the node task can take. Scrapes share it:
//! at most one snapshot request is outstanding on the node task at any time, and every scrape
//! that arrives meanwhile waits for that one's answer, so scrapers cannot queue work on the node
//! task faster than it answers.
//!
//! Not here: what the metrics are (`metrics.rs`), TLS (metrics are served in the clear, on the
//! address the operator chose).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::metrics::{Metrics, Snapshot};
use crate::node_task::Event;

/// Connections served at once; more are answered 503 at once and closed.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// The largest request head read; longer ones are answered 431.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request and read the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape waits for the node task's snapshot before showing the last one.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);
/// What a connection over [`MAX_CONNECTIONS`] is told, written without waiting.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\
                                Retry-After: 1\r\nConnection: close\r\n\r\n";

/// Serves metrics on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let snapshots = Arc::new(Snapshots::new(events));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.metrics_connection_refused();
            // A full socket buffer just loses the courtesy; the close says enough.
            let _ = stream.try_write(BUSY_RESPONSE);
            continue;
        };
        let (metrics, snapshots) = (metrics.clone(), snapshots.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let served = tokio::time::timeout(
                CONNECTION_TIMEOUT,
                serve_connection(stream, &metrics, &snapshots),
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
    snapshots: &Snapshots,
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
            let snapshot = snapshots
                .fresh()
                .await
                .unwrap_or_else(|| metrics.last_snapshot());
            let body = metrics.render(&snapshot);
            respond(&mut stream, "200 OK", &body).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "only /metrics is served\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "use GET\n").await,
    }
}

/// The node task's snapshots, asked for at most once at a time.
#[derive(Debug)]
struct Snapshots {
    events: mpsc::UnboundedSender<Event>,
    /// The answer to the request outstanding on the node task, if one is: `None` inside until
    /// it comes; a closed channel if the node task dropped the request.
    outstanding: Mutex<Option<watch::Receiver<Option<Snapshot>>>>,
}

impl Snapshots {
    fn new(events: mpsc::UnboundedSender<Event>) -> Snapshots {
        Snapshots {
            events,
            outstanding: Mutex::new(None),
        }
    }

    /// A snapshot taken after this call began, or `None` if the node task does not give one
    /// within [`SNAPSHOT_TIMEOUT`] (busy, or gone after shutdown).
    async fn fresh(&self) -> Option<Snapshot> {
        let mut answer = self.request();
        match tokio::time::timeout(SNAPSHOT_TIMEOUT, answer.wait_for(Option::is_some)).await {
            Ok(Ok(snapshot)) => snapshot.clone(),
            _ => None,
        }
    }

    /// Joins the outstanding request, or sends a new one if none is outstanding.
    fn request(&self) -> watch::Receiver<Option<Snapshot>> {
        let mut outstanding = self
            .outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(answer) = outstanding.as_ref()
            && answer.borrow().is_none()
            && answer.has_changed().is_ok()
        {
            return answer.clone();
        }
        let (publish, answer) = watch::channel(None);
        let (reply, replied) = oneshot::channel();
        if self.events.send(Event::Snapshot(reply)).is_ok() {
            tokio::spawn(async move {
                // Dropped unanswered (the node task ended): `publish` goes, the channel closes.
                if let Ok(snapshot) = replied.await {
                    publish.send_replace(Some(snapshot));
                }
            });
        }
        *outstanding = Some(answer.clone());
        answer
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes every snapshot request queued for the node task so far.
    fn queued(events: &mut mpsc::UnboundedReceiver<Event>) -> Vec<oneshot::Sender<Snapshot>> {
        let mut replies = Vec::new();
        while let Ok(event) = events.try_recv() {
            match event {
                Event::Snapshot(reply) => replies.push(reply),
                other => panic!("unexpected event {other:?}"),
            }
        }
        replies
    }

    #[tokio::test]
    async fn concurrent_scrapes_share_one_snapshot_request() {
        let (tx, mut events) = mpsc::unbounded_channel();
        let snapshots = Snapshots::new(tx);
        // Fifty scrapes while the node task is busy: it is asked once.
        let answers: Vec<_> = (0..50).map(|_| snapshots.request()).collect();
        let mut replies = queued(&mut events);
        assert_eq!(
            replies.len(),
            1,
            "requests queued on the node task for 50 scrapes"
        );
        let snapshot = Snapshot {
            in_flight: 7,
            ..Snapshot::default()
        };
        let _ = replies.remove(0).send(snapshot);
        for mut answer in answers {
            let got =
                tokio::time::timeout(Duration::from_secs(10), answer.wait_for(Option::is_some))
                    .await
                    .expect("every scrape gets the answer")
                    .unwrap()
                    .clone();
            assert_eq!(got.map(|s| s.in_flight), Some(7));
        }
        // A scrape after the answer asks again, for fresh figures.
        let mut later = snapshots.request();
        let mut replies = queued(&mut events);
        assert_eq!(replies.len(), 1);
        let _ = replies.remove(0).send(Snapshot::default());
        let got = later.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(got.map(|s| s.in_flight), Some(0));
    }

    #[tokio::test]
    async fn a_request_the_node_task_dropped_is_not_waited_on_again() {
        let (tx, mut events) = mpsc::unbounded_channel();
        let snapshots = Snapshots::new(tx);
        let answer = snapshots.request();
        drop(queued(&mut events));
        // The dropped reply closes the shared answer; the next scrape asks anew.
        let mut closed = answer.clone();
        assert!(closed.wait_for(Option::is_some).await.is_err());
        let _ = snapshots.request();
        assert_eq!(queued(&mut events).len(), 1);
    }
}
