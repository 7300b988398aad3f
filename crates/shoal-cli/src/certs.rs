//! `shoal certs`: the cluster CA and the certificates it issues (see docs/security.md).
//!
//! A certificate is issued from the CA's directory (`--ca`, which holds `ca.key`) into the
//! directory its holder is given (`--out`, which gets `ca.pem` and never `ca.key`); `--certs`
//! alone stands for both, as `shoal dev`'s single directory does.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_transport::Role;
use shoal_transport::certs::{self, CertFiles, IfExists};

use crate::exit::Outcome;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Make a new cluster CA (ca.pem, ca.key) in the directory.
    Init(Target),
    /// Issue a node certificate; NAME is the node id (`shoal server --node-id NAME`).
    Node(Named),
    /// Issue a client certificate (get, put, delete).
    Client(Named),
    /// Issue an admin certificate (also cluster status and changes).
    Admin(Named),
}

#[derive(Debug, Args)]
pub(crate) struct Issuing {
    /// The directory with the CA and for the certificate, where --ca or --out is not given.
    #[arg(
        long,
        value_name = "DIR",
        env = "SHOAL_CERTS",
        hide_env = true,
        required_unless_present_all = ["ca", "out"]
    )]
    certs: Option<PathBuf>,
    /// The directory holding the cluster CA (ca.pem and ca.key) [default: --certs].
    #[arg(long, value_name = "DIR")]
    ca: Option<PathBuf>,
    /// Where the certificate, its key and a copy of ca.pem go, never ca.key (created, mode
    /// 0700, if missing) [default: --certs].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace existing files instead of refusing.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The certificate directory (created if missing).
    #[arg(long, value_name = "DIR", env = "SHOAL_CERTS", hide_env = true)]
    certs: PathBuf,
    /// Replace existing files instead of refusing.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct Named {
    /// The holder's name: 1 to 63 characters from A-Z a-z 0-9 . _ -
    name: String,
    #[command(flatten)]
    target: Issuing,
}

pub(crate) fn run(command: Command) -> anyhow::Result<Outcome> {
    let (files, what) = match &command {
        Command::Init(t) => (
            certs::init_ca(&t.certs, if_exists(t)).context("cannot make the cluster CA")?,
            "cluster CA".to_owned(),
        ),
        Command::Node(n) => issue(n, Role::Node)?,
        Command::Client(n) => issue(n, Role::Client)?,
        Command::Admin(n) => issue(n, Role::Admin)?,
    };
    print_files(&what, &files);
    Ok(Outcome::Done)
}

fn issue(named: &Named, role: Role) -> anyhow::Result<(CertFiles, String)> {
    let target = &named.target;
    // clap requires --certs unless both others are given.
    let dir = |given: &Option<PathBuf>| {
        given
            .as_ref()
            .or(target.certs.as_ref())
            .cloned()
            .context("give --certs DIR, or both --ca DIR and --out DIR")
    };
    let (ca, out) = (dir(&target.ca)?, dir(&target.out)?);
    let if_exists = if target.force {
        IfExists::Replace
    } else {
        IfExists::Refuse
    };
    let files = certs::issue_into(&ca, &out, role, &named.name, if_exists)
        .with_context(|| format!("cannot issue the {role} certificate {:?}", named.name))?;
    if certs::ca_key_in(&out).is_some() {
        eprintln!(
            "note: {} holds the CA key; give the {role} a directory without it \
             (`shoal certs {role} {} --ca {} --out DIR`)",
            display(&out),
            named.name,
            display(&ca)
        );
    }
    Ok((files, format!("{role} certificate {}", named.name)))
}

fn if_exists(target: &Target) -> IfExists {
    if target.force {
        IfExists::Replace
    } else {
        IfExists::Refuse
    }
}

fn print_files(what: &str, files: &CertFiles) {
    println!("{what}:");
    println!("  certificate  {}", display(&files.cert));
    println!("  private key  {} (mode 0600)", display(&files.key));
}

fn display(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}
