//! The two opt-in extensions of the plain framed protocols, both announced by the side that
//! connects, so plain Wallaroo senders and receivers keep working unchanged.
//!
//! **Acknowledged source mode.** A client's first frame (in the source's framing) is
//! [`ACK_HELLO`] followed by its stream id (u64, big endian). The node answers with a stream of
//! u64 big-endian numbers: first where the client must resume (the position in its stream of
//! the first frame the node has not logged, or [`RESUME_AT_LAST_ACK`] when the node keeps no
//! log), then, as frames become durable, how many frames of this connection are acknowledged.
//! After a lost connection the client reconnects, says hello again and resends from the
//! position it is told.
//!
//! **The end of an acknowledged stream.** A client may end its stream with the frame
//! [`END_OF_STREAM`]: it takes one position in the stream and is acknowledged like any frame,
//! once the end is durable. A hello for a stream that has ended is answered with
//! [`STREAM_ENDED`] as the resume position: nothing more may be sent on it.
//!
//! **Tagged sink framing.** A node with exactly-once sinks starts each connection with
//! [`TAGGED_HELLO`], then the sink's identity (u32 big-endian length, UTF-8), then writes each
//! frame as epoch (u64 BE), sequence within the epoch (u64 BE), length (u32 BE), payload.
//! (epoch, sequence) only grows within one sink's output, so a receiver drops any frame at or
//! below the last it kept from that sink: what a release repeated after a crash.

pub const ACK_HELLO: &[u8] = b"\0wallaroo-ack\x01";
pub const RESUME_AT_LAST_ACK: u64 = u64::MAX;
pub const END_OF_STREAM: &[u8] = b"\0wallaroo-end\x01";
pub use wallaroo_engine::STREAM_ENDED;
pub const TAGGED_HELLO: &[u8] = b"\0wallaroo-tagged\x01";

/// The stream id in a hello frame, or None if the frame is an ordinary message.
pub fn parse_ack_hello(frame: &[u8]) -> Option<u64> {
    let id = frame.strip_prefix(ACK_HELLO)?;
    Some(u64::from_be_bytes(id.try_into().ok()?))
}

pub fn ack_hello(stream: u64) -> Vec<u8> {
    let mut frame = ACK_HELLO.to_vec();
    frame.extend_from_slice(&stream.to_be_bytes());
    frame
}

pub fn tagged_hello(identity: &str) -> Vec<u8> {
    let mut out = TAGGED_HELLO.to_vec();
    out.extend_from_slice(&(identity.len() as u32).to_be_bytes());
    out.extend_from_slice(identity.as_bytes());
    out
}

pub fn encode_tagged(epoch: u64, seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

pub const TAG_HEADER: usize = 20;

/// Splits a tag header into (epoch, sequence, payload length).
pub fn decode_tag(header: &[u8; TAG_HEADER]) -> (u64, u64, usize) {
    let epoch = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
    let seq = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(header[16..].try_into().expect("4 bytes"));
    (epoch, seq, len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_round_trip_and_ordinary_frames_are_not_hellos() {
        assert_eq!(parse_ack_hello(&ack_hello(42)), Some(42));
        assert_eq!(parse_ack_hello(b"hello world"), None);
        assert_eq!(parse_ack_hello(&ack_hello(42)[..ACK_HELLO.len() + 3]), None);
        let mut framed = Vec::new();
        encode_tagged(3, 9, b"abc", &mut framed);
        let header: [u8; TAG_HEADER] = framed[..TAG_HEADER].try_into().unwrap();
        assert_eq!(decode_tag(&header), (3, 9, 3));
        assert_eq!(&framed[TAG_HEADER..], b"abc");
    }
}
