//! Which of a node's sources have ended, for a node asked to finish once they all have.
//!
//! A TCP source has ended when no connection to it is open and every acknowledged stream it
//! has seen (in this run, and with a log in earlier ones: their positions are kept in the log)
//! was ended by its sender, at least one of them. A plain connection cannot end its stream: a
//! close is not an end (it may be a crash), so a source fed only by plain senders never ends.
//! A generator has ended when its generator says it has nothing more. A source that runs
//! nowhere on this node (a generator another node runs) feeds nothing here: it has ended.

use std::collections::HashMap;

/// An acknowledged stream's position once its sender ended it: the log keeps it as any
/// position (see `SourceHandle::end_stream`).
pub const STREAM_ENDED: u64 = u64::MAX - 1;

#[derive(Debug, Default)]
pub(crate) struct SourceEnd {
    kind: Kind,
    /// Connections open now.
    open: usize,
    /// Acknowledged streams seen in this run, and whether each has ended.
    streams: HashMap<u64, bool>,
    generator_ended: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Feeds nothing on this node.
    #[default]
    Absent,
    Tcp,
    Generator,
}

/// The end of every source of a node.
#[derive(Debug, Default)]
pub(crate) struct Ends {
    sources: Vec<SourceEnd>,
}

impl Ends {
    pub(crate) fn new(sources: usize) -> Self {
        Self {
            sources: (0..sources).map(|_| SourceEnd::default()).collect(),
        }
    }

    fn source(&mut self, source: u32) -> &mut SourceEnd {
        &mut self.sources[source as usize]
    }

    pub(crate) fn listening(&mut self, source: u32) {
        self.source(source).kind = Kind::Tcp;
    }

    pub(crate) fn generating(&mut self, source: u32) {
        self.source(source).kind = Kind::Generator;
    }

    pub(crate) fn opened(&mut self, source: u32) {
        self.source(source).open += 1;
    }

    pub(crate) fn closed(&mut self, source: u32) {
        let s = self.source(source);
        s.open = s.open.saturating_sub(1);
    }

    /// An acknowledged stream said hello (at position `at`, which is [`STREAM_ENDED`] once it
    /// has ended).
    pub(crate) fn stream(&mut self, source: u32, stream: u64, at: u64) {
        let ended = self.source(source).streams.entry(stream).or_default();
        *ended |= at == STREAM_ENDED;
    }

    pub(crate) fn stream_ended(&mut self, source: u32, stream: u64) {
        self.source(source).streams.insert(stream, true);
    }

    pub(crate) fn generator_ended(&mut self, source: u32) {
        self.source(source).generator_ended = true;
    }

    pub(crate) fn generator_has_ended(&self, source: u32) -> bool {
        self.sources[source as usize].generator_ended
    }

    /// Every source has ended. `logged` gives the positions the log keeps of each source's
    /// acknowledged streams (nothing without a log).
    pub(crate) fn all_ended(&self, logged: impl Fn(u32) -> Vec<(u64, u64)>) -> bool {
        self.sources.iter().enumerate().all(|(i, s)| match s.kind {
            Kind::Absent => true,
            Kind::Generator => s.generator_ended,
            Kind::Tcp => {
                let mut streams = s.streams.clone();
                for (stream, at) in logged(i as u32) {
                    *streams.entry(stream).or_default() |= at == STREAM_ENDED;
                }
                s.open == 0 && !streams.is_empty() && streams.values().all(|&ended| ended)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: u32) -> Vec<(u64, u64)> {
        Vec::new()
    }

    #[test]
    fn a_tcp_source_ends_once_every_acknowledged_stream_ended_and_no_connection_is_open() {
        let mut ends = Ends::new(1);
        ends.listening(0);
        assert!(!ends.all_ended(none), "no stream yet");
        ends.opened(0);
        ends.stream(0, 7, 0);
        ends.opened(0);
        ends.stream(0, 8, 0);
        ends.stream_ended(0, 7);
        ends.closed(0);
        assert!(!ends.all_ended(none), "stream 8 goes on");
        ends.stream_ended(0, 8);
        assert!(!ends.all_ended(none), "its connection is still open");
        ends.closed(0);
        assert!(ends.all_ended(none));
        // A plain connection holds the end back while it is open.
        ends.opened(0);
        assert!(!ends.all_ended(none));
    }

    #[test]
    fn streams_the_log_knows_count_and_an_ended_position_is_an_end() {
        let mut ends = Ends::new(2);
        ends.listening(0);
        ends.listening(1);
        let logged = |source| match source {
            0 => vec![(1, STREAM_ENDED), (2, 40)],
            _ => vec![(3, STREAM_ENDED)],
        };
        assert!(
            !ends.all_ended(logged),
            "stream 2 stopped at 40 without an end"
        );
        ends.stream_ended(0, 2);
        assert!(ends.all_ended(logged));
    }

    #[test]
    fn a_generator_ends_when_it_says_so_and_a_source_not_run_here_has_ended() {
        let mut ends = Ends::new(2);
        ends.generating(0);
        assert!(!ends.all_ended(none));
        ends.generator_ended(0);
        assert!(ends.all_ended(none), "source 1 runs nowhere here");
    }
}
