//! Sinks' side of a node: the batches of encoded output each sink takes from its bounded queue,
//! and how a sink reports how far it has written (what exactly-once release waits on).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Encoded output for one sink, in order.
#[derive(Debug, Default)]
pub struct SinkBatch {
    /// The checkpoint epoch this output belongs to, when it is released only after that
    /// checkpoint commits (exactly-once); 0 otherwise.
    pub epoch: u64,
    pub frames: Vec<Vec<u8>>,
}

/// One sink's queue, and where the sink reports how far it has written.
pub struct SinkQueue {
    pub batches: flume::Receiver<SinkBatch>,
    pub(super) written: Arc<AtomicU64>,
}

impl SinkQueue {
    /// The sink has written out (and flushed) everything of `epoch` and before.
    pub fn written(&self, epoch: u64) {
        self.written.fetch_max(epoch, Ordering::SeqCst);
    }
}
