//! `wallaroo receive --listen HOST:PORT [--output F]`

use std::path::PathBuf;

use anyhow::Context as _;
use wallaroo_connectors::ReceiveOptions;
use wallaroo_connectors::latency::LatencyRecorder;

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
    /// Count the lines received and the latency of lines stamped by `wallaroo send --stamp`;
    /// write the figures (JSON) to this file at the end.
    #[arg(long)]
    latency: Option<PathBuf>,
    /// Stop by itself once this many lines have arrived (with --latency).
    #[arg(long, requires = "latency")]
    expect_lines: Option<u64>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let options = ReceiveOptions {
        listen: args.listen,
        output: args.output,
        rate: args.rate,
        latency: args
            .latency
            .as_ref()
            .map(|_| LatencyRecorder::new(args.expect_lines)),
    };
    let rt = crate::io_runtime()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(recorder) = options
        .latency
        .as_ref()
        .filter(|_| args.expect_lines.is_some())
    {
        let mut reached = recorder.reached();
        let stop = stop_tx.clone();
        rt.spawn(async move {
            let _ = reached.wait_for(|r| *r).await;
            let _ = stop.send(true);
        });
    }
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
    if let (Some(path), Some(recorder)) = (&args.latency, &options.latency) {
        std::fs::write(path, recorder.report_json() + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
