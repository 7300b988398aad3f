//! Driving etcd 3.4 through its v3 JSON gateway (`POST /v3/kv/put`, `POST /v3/kv/range`, keys
//! and values in base64) over HTTP/1.1 keep-alive connections, with a small hand-written client.
//!
//! A range is linearizable unless asked otherwise, and a put is acknowledged after the leader and
//! a majority have written it to their WAL with fsync: etcd's defaults, used as they are. The
//! gateway turns JSON into gRPC inside etcd, which costs etcd some CPU compared with a gRPC
//! client; `docs/performance.md` says how much.
//!
//! Connections are pooled: a request takes an idle one (or opens one to the next endpoint in
//! turn, so they spread over the members) and puts it back when the exchange went well.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::BenchError;
use crate::target::{Found, KeyRef, OpError, Target};

/// The longest header line or body accepted from etcd.
const MAX_LINE_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// An etcd cluster as a [`Target`].
#[derive(Debug)]
pub struct EtcdTarget {
    endpoints: Vec<Endpoint>,
    idle: Mutex<Vec<Conn>>,
    next: AtomicUsize,
    timeout: Duration,
}

#[derive(Debug, Clone)]
struct Endpoint {
    addr: SocketAddr,
    /// `host:port` for the Host header.
    host: String,
}

#[derive(Debug)]
struct Conn {
    stream: BufReader<TcpStream>,
    endpoint: usize,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct GatewayError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
}

impl EtcdTarget {
    /// Endpoints as `http://HOST:PORT` (or `HOST:PORT`); each request gives up after `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<EtcdTarget, BenchError> {
        let endpoints = endpoints
            .iter()
            .map(|e| parse_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(BenchError::Target("no etcd endpoint given".into()));
        }
        Ok(EtcdTarget {
            endpoints,
            idle: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            timeout,
        })
    }

    /// The endpoints, as given addresses.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| format!("http://{}", e.host))
            .collect()
    }

    /// Checks that every endpoint answers a range (of a key nobody writes).
    pub async fn check(&self) -> Result<(), BenchError> {
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let mut conn = tokio::time::timeout(self.timeout, Conn::open(endpoint, i))
                .await
                .map_err(|_| BenchError::Target(format!("{}: connect timed out", endpoint.host)))?
                .map_err(|e| BenchError::Target(format!("{}: {e}", endpoint.host)))?;
            let body = format!(r#"{{"key":"{}"}}"#, BASE64.encode(b"shoal-bench-probe"));
            let (status, body) = tokio::time::timeout(
                self.timeout,
                conn.post(&endpoint.host, "/v3/kv/range", body.as_bytes()),
            )
            .await
            .map_err(|_| BenchError::Target(format!("{}: no answer", endpoint.host)))?
            .map_err(|e| BenchError::Target(format!("{}: {e}", endpoint.host)))?;
            if status != 200 {
                return Err(BenchError::Target(format!(
                    "{}: HTTP {status}: {}",
                    endpoint.host,
                    String::from_utf8_lossy(&body)
                )));
            }
            self.put_back(conn);
        }
        Ok(())
    }

    /// One POST on a pooled connection; the connection goes back to the pool only after a
    /// complete exchange. A connection that cannot be opened is tried on the next endpoint (the
    /// request was not sent); a request that failed after it was sent is tried again elsewhere
    /// only when `idempotent` (a read), as etcd's own client does.
    async fn post(&self, path: &str, body: &[u8], idempotent: bool) -> Result<Vec<u8>, OpError> {
        let exchange = async {
            let mut last = None;
            for attempt in 0..self.endpoints.len().max(2) {
                // After a failure, a fresh connection: the pool may hold more to a dead member.
                let pooled = if attempt == 0 { self.take() } else { None };
                let mut conn = match pooled {
                    Some(conn) => conn,
                    None => {
                        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
                        match Conn::open(&self.endpoints[i], i).await {
                            Ok(conn) => conn,
                            Err(e) => {
                                last = Some(OpError::new("connection", e.to_string()));
                                continue;
                            }
                        }
                    }
                };
                let host = &self.endpoints[conn.endpoint].host;
                match conn.post(host, path, body).await {
                    Ok((status, body)) => {
                        self.put_back(conn);
                        return if status == 200 {
                            Ok(body)
                        } else {
                            Err(gateway_error(status, &body))
                        };
                    }
                    Err(e) => {
                        let error = OpError::new("connection", e.to_string());
                        if !idempotent {
                            return Err(error);
                        }
                        last = Some(error);
                    }
                }
            }
            Err(last.unwrap_or_else(|| OpError::new("connection", "no endpoint answered")))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(OpError::new(
                "timeout",
                format!("no answer within {:?}", self.timeout),
            )),
        }
    }

    fn take(&self) -> Option<Conn> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put_back(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }
}

impl Target for EtcdTarget {
    type Context = ();

    async fn read(&self, key: KeyRef<'_>) -> Result<Found, OpError> {
        let body = format!(r#"{{"key":"{}"}}"#, BASE64.encode(key.name));
        let answer = self.post("/v3/kv/range", body.as_bytes(), true).await?;
        let range: RangeResponse = serde_json::from_slice(&answer)
            .map_err(|e| OpError::new("protocol", format!("range answer: {e}")))?;
        Ok(if range.kvs.is_empty() {
            Found::Nothing
        } else {
            Found::Value
        })
    }

    fn context(&self, _key: KeyRef<'_>) {}

    async fn update(&self, key: KeyRef<'_>, value: Bytes, _context: &()) -> Result<(), OpError> {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            BASE64.encode(key.name),
            BASE64.encode(&value)
        );
        self.post("/v3/kv/put", body.as_bytes(), false)
            .await
            .map(|_| ())
    }
}

impl Conn {
    async fn open(endpoint: &Endpoint, index: usize) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(endpoint.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(stream),
            endpoint: index,
        })
    }

    /// Sends one request and reads its response: (status, body).
    async fn post(
        &mut self,
        host: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut request = Vec::with_capacity(body.len() + 128);
        let _ = write!(
            request,
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        request.extend_from_slice(body);
        self.stream.get_mut().write_all(&request).await?;

        let status_line = self.line().await?;
        let status = parse_status(&status_line)?;
        let mut length = None;
        let mut chunked = false;
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad_data(format!("bad header line {line:?}")));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad_data(format!("bad length {value:?}")))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        let body = match (chunked, length) {
            (true, _) => self.chunked_body().await?,
            (false, Some(n)) => self.exact(n).await?,
            (false, None) => {
                return Err(bad_data("a response with neither length nor chunks".into()));
            }
        };
        Ok((status, body))
    }

    /// One header line without its CRLF.
    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if line.last() != Some(&b'\n') {
            return Err(bad_data("header line too long".into()));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        String::from_utf8(line).map_err(|_| bad_data("header line is not UTF-8".into()))
    }

    async fn exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        if n > MAX_BODY_BYTES {
            return Err(bad_data(format!("body of {n} bytes")));
        }
        let mut body = vec![0u8; n];
        self.stream.read_exact(&mut body).await?;
        Ok(body)
    }

    async fn chunked_body(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| bad_data(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY_BYTES {
                return Err(bad_data("chunked body too large".into()));
            }
            let chunk = self.exact(size).await?;
            body.extend_from_slice(&chunk);
            self.line().await?;
        }
    }
}

fn parse_endpoint(s: &str) -> Result<Endpoint, BenchError> {
    let host = s.trim().trim_start_matches("http://").trim_end_matches('/');
    if host.contains('/') || s.starts_with("https://") {
        return Err(BenchError::Target(format!(
            "{s:?}: give an http://HOST:PORT endpoint (TLS is not supported)"
        )));
    }
    let addr = host
        .to_socket_addrs()
        .map_err(|e| BenchError::Target(format!("{s:?}: {e}")))?
        .next()
        .ok_or_else(|| BenchError::Target(format!("{s:?} resolves to no address")))?;
    Ok(Endpoint {
        addr,
        host: host.to_owned(),
    })
}

fn parse_status(line: &str) -> std::io::Result<u16> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse()
            .map_err(|_| bad_data(format!("bad status line {line:?}"))),
        _ => Err(bad_data(format!("bad status line {line:?}"))),
    }
}

/// A gateway error: the gRPC code's name when the body has one, else the HTTP status.
fn gateway_error(status: u16, body: &[u8]) -> OpError {
    let e: GatewayError = serde_json::from_slice(body).unwrap_or_default();
    let kind = match e.code {
        1 => "canceled",
        4 => "deadline_exceeded",
        8 => "resource_exhausted",
        10 => "aborted",
        13 => "internal",
        14 => "unavailable",
        _ => "",
    };
    let kind = if kind.is_empty() {
        format!("http_{status}")
    } else {
        kind.to_owned()
    };
    let message = if e.message.is_empty() {
        e.error
    } else {
        e.message
    };
    OpError::new(kind, format!("HTTP {status}: {message}"))
}

fn bad_data(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers each request on one connection with the next canned response.
    async fn canned(responses: Vec<String>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut requests = Vec::new();
            for response in responses {
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    stream.read_line(&mut line).await.unwrap();
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        length = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                requests.push(format!("{head}{}", String::from_utf8(body).unwrap()));
                stream
                    .get_mut()
                    .write_all(response.as_bytes())
                    .await
                    .unwrap();
            }
            requests
        });
        (format!("http://{addr}"), server)
    }

    #[tokio::test]
    async fn puts_and_ranges_speak_the_json_gateway_on_one_connection() {
        let sized = |status: &str, body: &str| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let (endpoint, server) = canned(vec![
            sized("200 OK", "{}"),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{\"kvs\":[{\r\n4\r\n}]}\n\r\n0\r\n\r\n".to_owned(),
            sized("200 OK", r#"{"count":"0"}"#),
            sized("503 Service Unavailable", r#"{"error":"no leader","code":14,"message":"no leader"}"#),
        ])
        .await;
        let etcd = EtcdTarget::new(&[endpoint], Duration::from_secs(5)).unwrap();
        let key = KeyRef {
            number: 1,
            name: b"user00000001",
        };
        etcd.update(key, Bytes::from_static(b"v"), &())
            .await
            .unwrap();
        assert_eq!(etcd.read(key).await.unwrap(), Found::Value);
        assert_eq!(etcd.read(key).await.unwrap(), Found::Nothing);
        let error = etcd.read(key).await.unwrap_err();
        assert_eq!(error.kind, "unavailable");
        let requests = server.await.unwrap();
        assert!(
            requests[0].starts_with("POST /v3/kv/put HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(
            requests[0].ends_with(r#"{"key":"dXNlcjAwMDAwMDAx","value":"dg=="}"#),
            "{}",
            requests[0]
        );
        assert!(requests[1].starts_with("POST /v3/kv/range HTTP/1.1\r\n"));
    }

    #[test]
    fn endpoints_must_be_plain_http() {
        assert!(EtcdTarget::new(&["http://127.0.0.1:2379".into()], Duration::from_secs(1)).is_ok());
        assert!(EtcdTarget::new(&["127.0.0.1:2379".into()], Duration::from_secs(1)).is_ok());
        assert!(
            EtcdTarget::new(&["https://127.0.0.1:2379".into()], Duration::from_secs(1)).is_err()
        );
        assert!(EtcdTarget::new(&[], Duration::from_secs(1)).is_err());
    }
}
