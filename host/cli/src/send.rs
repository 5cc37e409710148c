//! `wallaroo send --host HOST:PORT --file F [...]`

use std::path::PathBuf;
use std::time::Duration;

use wallaroo_connectors::SendOptions;

#[derive(clap::Args)]
pub struct Args {
    /// The source's address.
    #[arg(long)]
    host: String,
    /// Each line is one message (without its line ending); empty lines are skipped.
    #[arg(long)]
    file: PathBuf,
    /// Send empty lines too, as empty messages.
    #[arg(long, conflicts_with = "binary")]
    keep_blank_lines: bool,
    /// The file already holds frames: a 4-byte big-endian length, then the payload.
    #[arg(long)]
    binary: bool,
    /// Messages per write.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Pause between writes, in nanoseconds.
    #[arg(long)]
    interval: Option<u64>,
    /// Stop after this many messages.
    #[arg(long)]
    messages: Option<u64>,
    /// Start the file over at its end (until --messages, or until stopped).
    #[arg(long)]
    repeat: bool,
    /// Acknowledged mode: wait until the node has stored every message, and when the
    /// connection is lost (a node crash), reconnect and resend what it has not stored.
    #[arg(long)]
    ack: bool,
    /// The acknowledged stream's id; the same id resumes the same stream [default: random].
    #[arg(long, requires = "ack")]
    stream_id: Option<u64>,
    /// End the acknowledged stream after the file: the node learns that nothing more comes
    /// from it (a node run with --finish finishes once all its streams have ended). Sending
    /// again on a stream that ended sends nothing.
    #[arg(long, requires = "ack", conflicts_with = "repeat")]
    end: bool,
    /// Offer a fixed load of this many messages per second, catching up at once after a stall
    /// (for latency measurements; --batch-size and --interval do not apply).
    #[arg(long)]
    rate: Option<u64>,
    /// Put each message's intended send time in front of it (`t<NANOS> `) for `wallaroo
    /// receive --latency`; needs --rate.
    #[arg(long, requires = "rate")]
    stamp: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let options = SendOptions {
        host: args.host,
        file: args.file,
        binary: args.binary,
        keep_blank_lines: args.keep_blank_lines,
        batch_size: args.batch_size,
        interval: args.interval.map(Duration::from_nanos),
        messages: args.messages,
        repeat: args.repeat,
        ack: args
            .ack
            .then(|| args.stream_id.unwrap_or_else(random_stream_id)),
        rate: args.rate,
        stamp: args.stamp,
        end: args.end,
    };
    let sent = crate::io_runtime()?.block_on(wallaroo_connectors::send(&options))?;
    eprintln!("sent {sent} messages to {}", options.host);
    Ok(())
}

/// A stream id unlikely to collide with another sender's: a randomly keyed hash of the clock and
/// the process id.
fn random_stream_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}
