//! `wallaroo receive --listen HOST:PORT [--output F]`

use std::path::PathBuf;

use wallaroo_connectors::ReceiveOptions;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long)]
    listen: String,
    /// Write here instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Read at most this many bytes per second per connection (to play a slow consumer).
    #[arg(long)]
    rate: Option<u64>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let options = ReceiveOptions {
        listen: args.listen,
        output: args.output,
        rate: args.rate,
    };
    let rt = crate::io_runtime()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut signals = rt.block_on(async { crate::Signals::catch() })?;
    rt.spawn(async move {
        signals.next().await;
        let _ = stop_tx.send(true);
    });
    let total = rt.block_on(wallaroo_connectors::receive(
        &options,
        |addr| eprintln!("listening on {addr}"),
        stop_rx,
    ))?;
    eprintln!("received {total} bytes");
    Ok(())
}
