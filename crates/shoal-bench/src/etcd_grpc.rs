//! Driving etcd through its native gRPC API (the `etcd-client` crate, feature `etcd-grpc`): what
//! etcd's own clients use, so the fair comparison with Shoal. The JSON gateway
//! ([`crate::EtcdTarget`]) makes etcd's servers translate every request from JSON into gRPC
//! inside the process, CPU that gRPC clients do not cost it.
//!
//! A read is a linearizable range of one key and an update a put, etcd's defaults, as for the
//! gateway. One HTTP/2 connection per member, requests balanced over them, many requests per
//! connection; an attempt whose future is dropped (at the attempt timeout) resets its HTTP/2
//! stream, and the request's deadline travels with it (`grpc-timeout`), as a Shoal request's
//! does.
//!
//! Not here: the cluster (`scripts/etcd-cluster.sh`), retries (the driver's, the same for every
//! target), TLS and authentication (the comparison runs etcd without them, as Shoal's dev
//! cluster's mutual TLS is part of Shoal's cost: `docs/performance.md` says so).

use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, ConnectOptions, KvClient};

use crate::BenchError;
use crate::target::{Found, KeyRef, OpError, Target};

/// An etcd cluster as a [`Target`], through gRPC.
#[derive(Clone)]
pub struct EtcdGrpcTarget {
    kv: KvClient,
    endpoints: Vec<String>,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdGrpcTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdGrpcTarget")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdGrpcTarget {
    /// Connects to `endpoints` (`http://HOST:PORT`); each request's deadline is `timeout`.
    pub async fn connect(
        endpoints: &[String],
        timeout: Duration,
    ) -> Result<EtcdGrpcTarget, BenchError> {
        if endpoints.is_empty() {
            return Err(BenchError::Target("no etcd endpoint given".into()));
        }
        if let Some(tls) = endpoints.iter().find(|e| e.starts_with("https://")) {
            return Err(BenchError::Target(format!(
                "{tls:?}: give an http://HOST:PORT endpoint (TLS is not supported)"
            )));
        }
        let options = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| BenchError::Target(format!("cannot connect to etcd: {e}")))?;
        Ok(EtcdGrpcTarget {
            kv: client.kv_client(),
            endpoints: endpoints.to_vec(),
            timeout,
        })
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    /// Checks that the cluster answers a range (of a key nobody writes).
    pub async fn check(&self) -> Result<(), BenchError> {
        let mut kv = self.kv.clone();
        match tokio::time::timeout(self.timeout, kv.get("shoal-bench-probe", None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BenchError::Target(format!("etcd: {e}"))),
            Err(_) => Err(BenchError::Target(format!(
                "etcd did not answer within {:?}",
                self.timeout
            ))),
        }
    }
}

impl Target for EtcdGrpcTarget {
    type Context = ();

    async fn read(&self, key: KeyRef<'_>) -> Result<Found, OpError> {
        let mut kv = self.kv.clone();
        let range = kv.get(key.name, None).await.map_err(op_error)?;
        Ok(if range.kvs().is_empty() {
            Found::Nothing
        } else {
            Found::Value
        })
    }

    fn context(&self, _key: KeyRef<'_>) {}

    async fn update(&self, key: KeyRef<'_>, value: Bytes, _context: &()) -> Result<(), OpError> {
        let mut kv = self.kv.clone();
        kv.put(key.name, value.to_vec(), None)
            .await
            .map(|_| ())
            .map_err(op_error)
    }
}

/// A gRPC status by its code's name (`unavailable`, `deadline_exceeded`, …); other failures as
/// `connection` (transport) or `etcd_client`.
fn op_error(e: etcd_client::Error) -> OpError {
    match &e {
        etcd_client::Error::GRpcStatus(status) => {
            OpError::new(snake_case(&format!("{:?}", status.code())), e.to_string())
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            OpError::new("connection", e.to_string())
        }
        _ => OpError::new("etcd_client", e.to_string()),
    }
}

/// `DeadlineExceeded` → `deadline_exceeded`.
fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_are_named_as_the_gateway_names_them() {
        assert_eq!(snake_case("DeadlineExceeded"), "deadline_exceeded");
        assert_eq!(snake_case("Unavailable"), "unavailable");
        // The driver retries a deadline answered by etcd as a timed-out attempt.
        assert!(OpError::new(snake_case("DeadlineExceeded"), "").is_timeout());
    }

    #[tokio::test]
    async fn endpoints_must_be_plain_http() {
        let tls = ["https://127.0.0.1:2379".to_owned()];
        let refused = EtcdGrpcTarget::connect(&tls, Duration::from_secs(1)).await;
        assert!(refused.is_err());
        assert!(
            EtcdGrpcTarget::connect(&[], Duration::from_secs(1))
                .await
                .is_err()
        );
    }

    /// Against a running etcd: `SHOAL_BENCH_ETCD=http://127.0.0.1:12379 cargo test -p
    /// shoal-bench --features etcd-grpc -- --nocapture against_a_real_etcd` (start one with
    /// `scripts/etcd-cluster.sh start DIR`). Skipped without the variable.
    #[tokio::test]
    async fn against_a_real_etcd_a_put_is_read_back() {
        let Ok(endpoints) = std::env::var("SHOAL_BENCH_ETCD") else {
            eprintln!("skipped: set SHOAL_BENCH_ETCD to etcd's client URLs to run it");
            return;
        };
        let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
        let etcd = EtcdGrpcTarget::connect(&endpoints, Duration::from_secs(5))
            .await
            .unwrap();
        etcd.check().await.unwrap();
        let key = KeyRef {
            number: 0,
            name: b"shoal-bench-test-key",
        };
        etcd.update(key, Bytes::from_static(b"v"), &())
            .await
            .unwrap();
        assert_eq!(etcd.read(key).await.unwrap(), Found::Value);
        let missing = KeyRef {
            number: 1,
            name: b"shoal-bench-never-written",
        };
        assert_eq!(etcd.read(missing).await.unwrap(), Found::Nothing);
    }
}
