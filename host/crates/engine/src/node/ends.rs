//! Which of a node's sources have ended: a generator that ran out is asked no more, and a
//! node asked to finish does so once they all have.
//!
//! A node's input has ended when nothing is pending and something ended. Pending: a connection
//! open, an acknowledged stream seen (in this run, and with a log in earlier ones: their
//! positions are kept in the log) that its sender has not ended, a generator that has not run
//! out. A plain connection cannot end its stream (a close may be a crash): a source fed only
//! by plain senders never ends. A source that runs nowhere on this node (a generator another
//! node runs) is neither. In a cluster, the input has ended when nothing is pending on any
//! node and something ended on one.

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

    /// Where the node's input stands. `logged` gives the positions the log keeps of each
    /// source's acknowledged streams (nothing without a log).
    pub(crate) fn input(&self, logged: impl Fn(u32) -> Vec<(u64, u64)>) -> InputEnd {
        let mut input = InputEnd::default();
        for (i, s) in self.sources.iter().enumerate() {
            match s.kind {
                Kind::Absent => {}
                Kind::Generator => {
                    input.pending |= !s.generator_ended;
                    input.ended |= s.generator_ended;
                }
                Kind::Tcp => {
                    let mut streams = s.streams.clone();
                    for (stream, at) in logged(i as u32) {
                        *streams.entry(stream).or_default() |= at == STREAM_ENDED;
                    }
                    input.pending |= s.open > 0 || streams.values().any(|&ended| !ended);
                    input.ended |= streams.values().any(|&ended| ended);
                }
            }
        }
        input
    }
}

/// Where a node's input stands: something may still come (`pending`), something has ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputEnd {
    pub pending: bool,
    pub ended: bool,
}

impl InputEnd {
    /// A node alone has nothing more to take.
    pub fn over(self) -> bool {
        !self.pending && self.ended
    }

    /// The input of a cluster whose nodes' input stands as `nodes` has ended.
    pub fn all_over(nodes: impl IntoIterator<Item = InputEnd>) -> bool {
        let (mut pending, mut ended) = (false, false);
        for n in nodes {
            pending |= n.pending;
            ended |= n.ended;
        }
        !pending && ended
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
        assert!(!ends.input(none).over(), "no stream yet");
        ends.opened(0);
        ends.stream(0, 7, 0);
        ends.opened(0);
        ends.stream(0, 8, 0);
        ends.stream_ended(0, 7);
        ends.closed(0);
        assert!(!ends.input(none).over(), "stream 8 goes on");
        ends.stream_ended(0, 8);
        assert!(!ends.input(none).over(), "its connection is still open");
        ends.closed(0);
        assert!(ends.input(none).over());
        // A plain connection holds the end back while it is open.
        ends.opened(0);
        assert!(!ends.input(none).over());
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
            !ends.input(logged).over(),
            "stream 2 stopped at 40 without an end"
        );
        ends.stream_ended(0, 2);
        assert!(ends.input(logged).over());
    }

    #[test]
    fn a_generator_ends_when_it_says_so_and_a_source_not_run_here_has_ended() {
        let mut ends = Ends::new(2);
        ends.generating(0);
        assert!(!ends.input(none).over());
        ends.generator_ended(0);
        assert!(ends.input(none).over(), "source 1 runs nowhere here");
    }

    #[test]
    fn a_clusters_input_has_ended_when_nothing_is_pending_anywhere_and_something_ended() {
        let idle = InputEnd::default();
        let ended = InputEnd {
            pending: false,
            ended: true,
        };
        let open = InputEnd {
            pending: true,
            ended: true,
        };
        assert!(!idle.over(), "a node alone that saw nothing waits");
        assert!(InputEnd::all_over([idle, ended, idle]));
        assert!(!InputEnd::all_over([open, ended]));
        assert!(!InputEnd::all_over([idle, idle]));
    }
}
