//! What a server warns about when it starts. A test binary of its own: it installs the
//! process's log subscriber to read the warnings.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use shoal_server::Server;
use shoal_transport::Role;

/// Log lines written while the capture is the process's subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_directory_holding_the_ca_key_is_warned_about_at_start() {
    use shoal_transport::certs::{self, IfExists};
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // The process's only subscriber: a thread's own (`set_default`) misses events whose
    // callsite another thread registered first.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let warning = "CA's private key is in this node's certificate directory";

    // The one-directory layout `shoal dev` uses: the CA key beside the node's.
    let shared = cluster_certs(1);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(single_node_config(shared.path(), data.path()))
        .await
        .unwrap();
    within("shutdown", server.shutdown()).await.unwrap();
    assert!(captured.text().contains(warning), "{}", captured.text());

    // A directory issued without the CA key: no warning.
    let node_dir = tempfile::tempdir().unwrap();
    certs::issue_into(
        shared.path(),
        node_dir.path(),
        Role::Node,
        "n1",
        IfExists::Refuse,
    )
    .unwrap();
    captured.0.lock().unwrap().clear();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(single_node_config(node_dir.path(), data.path()))
        .await
        .unwrap();
    within("shutdown", server.shutdown()).await.unwrap();
    assert!(!captured.text().contains(warning), "{}", captured.text());
}
