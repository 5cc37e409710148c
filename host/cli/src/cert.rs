//! `wallaroo cert init [DIR] [--force]`: the cluster's certificates.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Make a new cluster CA and the node certificate signed by it.
    ///
    /// Writes DIR/ca.pem, DIR/ca.key, DIR/node.pem and DIR/node.key. Nodes accept only peers
    /// and clients that present a certificate of this CA, so the directory must be copied to
    /// every node and to the machine that runs deploy/status/stop.
    Init {
        /// Directory to write the files to (created if missing).
        #[arg(default_value = "wallaroo-certs")]
        dir: PathBuf,
        /// Replace existing files; nodes that keep the old CA can no longer connect.
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
        let super::Command::Init { dir, force } = args.command;
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
        let super::Command::Init { dir, force } = args.command;
        assert_eq!(dir, std::path::Path::new("certs"));
        assert!(force);
    }

    #[test]
    fn cert_needs_a_subcommand() {
        assert!(parse(&["wallaroo", "cert"]).is_err());
    }
}
