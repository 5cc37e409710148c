//! `wallaroo cert init [DIR] [--force]` and `wallaroo cert issue NAME`: the cluster's
//! certificates.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Make a new cluster CA and a node certificate signed by it.
    ///
    /// Writes DIR/ca.pem, DIR/ca.key, DIR/node.pem and DIR/node.key. Nodes accept only peers
    /// and clients that present a certificate of this CA. Give each node a certificate of its
    /// own with `wallaroo cert issue`, or copy this directory (which holds the CA's key) to
    /// every node and to the machine that runs deploy/status/stop.
    Init {
        /// Directory to write the files to (created if missing).
        #[arg(default_value = "wallaroo-certs")]
        dir: PathBuf,
        /// Replace existing files; nodes that keep the old CA can no longer connect.
        #[arg(long)]
        force: bool,
    },
    /// Give one node (or client) a certificate of its own, signed by the cluster CA.
    ///
    /// Writes OUT/ca.pem, OUT/node.pem and OUT/node.key, but not the CA's key: copy OUT to
    /// that node and start it with `--certs OUT`. The CA's directory stays with whoever runs
    /// `cert issue`.
    Issue {
        /// The name the certificate is issued to (its common name), e.g. the host's name.
        name: String,
        /// The directory made by `wallaroo cert init`, holding ca.key.
        #[arg(long, default_value = "wallaroo-certs")]
        ca: PathBuf,
        /// Directory to write to; `wallaroo-certs-NAME` by default.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the files of an earlier certificate in OUT.
        #[arg(long)]
        force: bool,
    },
}

pub fn main(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Init { dir, force } => {
            let files = wallaroo_transport::init_certs(&dir, force)?;
            println!("wrote the cluster CA and a node certificate:");
            println!("  {}  the cluster CA's certificate", files.ca.display());
            println!(
                "  {}  the cluster CA's key (secret)",
                files.ca_key.display()
            );
            println!("  {}  the node certificate", files.cert.display());
            println!(
                "  {}  the node certificate's key (secret)",
                files.key.display()
            );
            println!(
                "copy {} to every node and to the machine that runs deploy/status/stop; \
                 keep it private: the key files are secret",
                dir.display()
            );
            Ok(())
        }
        Command::Issue {
            name,
            ca,
            out,
            force,
        } => {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("wallaroo-certs-{name}")));
            let files = wallaroo_transport::issue_cert(&ca, &out, &name, force)?;
            println!(
                "wrote a certificate for '{name}', signed by the CA in {}:",
                ca.display()
            );
            println!("  {}  the cluster CA's certificate", files.ca.display());
            println!("  {}  the certificate", files.cert.display());
            println!("  {}  its key (secret)", files.key.display());
            println!(
                "copy {} to that machine and give it as --certs; it holds no CA key",
                out.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from_args(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn init_defaults_to_wallaroo_certs() {
        let Command::Cert(args) = parse(&["wallaroo", "cert", "init"]).unwrap().command else {
            panic!("not cert");
        };
        let super::Command::Init { dir, force } = args.command else {
            panic!("not init");
        };
        assert_eq!(dir, std::path::Path::new("wallaroo-certs"));
        assert!(!force);
    }

    #[test]
    fn init_takes_a_dir_and_force() {
        let Command::Cert(args) = parse(&["wallaroo", "cert", "init", "certs", "--force"])
            .unwrap()
            .command
        else {
            panic!("not cert");
        };
        let super::Command::Init { dir, force } = args.command else {
            panic!("not init");
        };
        assert_eq!(dir, std::path::Path::new("certs"));
        assert!(force);
    }

    #[test]
    fn issue_takes_a_name_and_defaults_to_the_init_directory() {
        let Command::Cert(args) = parse(&["wallaroo", "cert", "issue", "n1"]).unwrap().command
        else {
            panic!("not cert");
        };
        let super::Command::Issue {
            name,
            ca,
            out,
            force,
        } = args.command
        else {
            panic!("not issue");
        };
        assert_eq!(name, "n1");
        assert_eq!(ca, std::path::Path::new("wallaroo-certs"));
        assert_eq!(out, None);
        assert!(!force);
        assert!(
            parse(&["wallaroo", "cert", "issue"]).is_err(),
            "a name is needed"
        );
    }

    #[test]
    fn cert_needs_a_subcommand() {
        assert!(parse(&["wallaroo", "cert"]).is_err());
    }
}
