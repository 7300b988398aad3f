//! Arguments several subcommands share, and parsers for addresses and durations.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shoal_client::{Client, ClientConfig, ClientError, Role};
use shoal_transport::CertError;

/// How to reach the cluster and which certificate to present.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectArgs {
    /// A node to contact first (repeatable or comma-separated; any member will do, the client
    /// then routes by the ring) [default: $SHOAL_NODES].
    #[arg(
        long = "node",
        value_name = "ADDR",
        env = "SHOAL_NODES",
        hide_env = true,
        value_delimiter = ',',
        required = true,
        value_parser = parse_addr
    )]
    pub(crate) nodes: Vec<SocketAddr>,
    /// The certificate directory (ca.pem and a client or admin certificate) [default:
    /// $SHOAL_CERTS].
    #[arg(long, value_name = "DIR", env = "SHOAL_CERTS", hide_env = true)]
    pub(crate) certs: PathBuf,
    /// Which certificate to use when the directory holds several of the role.
    #[arg(long, value_name = "NAME")]
    pub(crate) cert_name: Option<String>,
    /// How long the request may take, e.g. 500ms, 5s, 1m.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

impl ConnectArgs {
    /// Connects with a certificate of `role`; for [`Role::Client`], an admin certificate is
    /// used when the directory holds no client certificate (admins may do what clients do).
    pub(crate) async fn connect(&self, role: Role) -> anyhow::Result<Client> {
        let config = |role| {
            let mut config = ClientConfig::new(self.nodes.clone(), &self.certs);
            config.role = role;
            config.name = self.cert_name.clone();
            config.timeout = self.timeout;
            config
        };
        let connected = match Client::connect(config(role)).await {
            Err(ClientError::Certificates(CertError::NoCertificate { .. }))
                if role == Role::Client =>
            {
                Client::connect(config(Role::Admin)).await
            }
            other => other,
        };
        connected.context("cannot connect to the cluster")
    }
}

/// Output options.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct OutputArgs {
    /// Print one JSON object on stdout (errors too, as {"error": {...}}).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Parses `HOST:PORT`, resolving names (`localhost:7000`); the first address wins.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// Parses a duration: a number with `ms`, `s` or `m` (a bare number is seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 5s or 1m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use ms, s, m or h"
            ));
        }
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{s:?} must be positive and at most a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(3 * 3600)));
        for bad in ["", "0s", "-1s", "5d", "25h", "s", "1e9"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_parse_and_resolve() {
        assert_eq!(
            parse_addr("127.0.0.1:7000"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 7000)))
        );
        assert_eq!(parse_addr("localhost:7000").map(|a| a.port()), Ok(7000));
        assert!(parse_addr("127.0.0.1").is_err());
    }
}
