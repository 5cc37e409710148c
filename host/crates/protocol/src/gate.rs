//! One worker's checkpoint barrier.
//!
//! A checkpoint's barrier reaches each worker's inbox behind exactly the source input logged
//! before the checkpoint's cut. From then until the worker's snapshot:
//! - source input waits (it belongs to the next epoch);
//! - routed input made by a worker of the same epoch is processed (it is the tail of the
//!   input before the cut, routed here by another worker);
//! - routed input made by a worker that has already taken this checkpoint's snapshot comes from
//!   input after the cut: it waits until this worker has taken its own snapshot too, then goes
//!   first, before source input. Snapshots are not taken at the same instant everywhere, so
//!   without this a worker's snapshot would count input another worker's snapshot does not.
//!
//! Every worker takes every checkpoint's snapshot, so a worker's epoch is the number of
//! snapshots it has taken and routed batches carry their sender's.

/// Where an input came from, as the gate needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Logged source input, cut by barriers.
    Source,
    /// A batch another worker (here or on another member) routed, made in its `epoch`.
    Routed { epoch: u64 },
}

/// What to do with an input now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Process,
    /// Source input after the barrier: keep it, in order, until the snapshot.
    Hold,
    /// Routed input from a later epoch: keep it, in order, and process it right after this
    /// worker's snapshot, before held source input.
    Ahead,
}

#[derive(Debug, Default, Clone)]
pub struct Gate {
    epoch: u64,
    at_barrier: bool,
}

impl Gate {
    /// A gate whose worker has taken `epoch` snapshots (0 on a fresh start).
    pub fn new(epoch: u64) -> Self {
        Gate {
            epoch,
            at_barrier: false,
        }
    }

    pub fn admit(&self, input: Input) -> Admit {
        match input {
            Input::Source if self.at_barrier => Admit::Hold,
            Input::Routed { epoch } if epoch > self.epoch => Admit::Ahead,
            _ => Admit::Process,
        }
    }

    /// The barrier reached the worker. True the first time (the worker is now aligned).
    pub fn barrier(&mut self) -> bool {
        !std::mem::replace(&mut self.at_barrier, true)
    }

    /// The worker took its snapshot: it is in the next epoch. Returns the new epoch. The
    /// caller processes what waited `Ahead` first, then what was held.
    pub fn snapshot(&mut self) -> u64 {
        self.at_barrier = false;
        self.epoch += 1;
        self.epoch
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn at_barrier(&self) -> bool {
        self.at_barrier
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_a_barrier_everything_is_processed() {
        let gate = Gate::default();
        assert_eq!(gate.admit(Input::Source), Admit::Process);
        assert_eq!(gate.admit(Input::Routed { epoch: 0 }), Admit::Process);
    }

    #[test]
    fn at_the_barrier_source_input_waits_and_routed_input_of_the_epoch_goes_on() {
        let mut gate = Gate::default();
        assert!(gate.barrier());
        assert!(
            !gate.barrier(),
            "a second barrier is not a second alignment"
        );
        assert_eq!(gate.admit(Input::Source), Admit::Hold);
        assert_eq!(gate.admit(Input::Routed { epoch: 0 }), Admit::Process);
    }

    #[test]
    fn routed_input_from_a_worker_past_its_snapshot_waits_for_this_workers_snapshot() {
        let mut gate = Gate::default();
        gate.barrier();
        assert_eq!(gate.admit(Input::Routed { epoch: 1 }), Admit::Ahead);
        // Also before this worker saw the barrier: the sender is already past it.
        let fresh = Gate::default();
        assert_eq!(fresh.admit(Input::Routed { epoch: 1 }), Admit::Ahead);
        assert_eq!(gate.snapshot(), 1);
        assert_eq!(gate.admit(Input::Routed { epoch: 1 }), Admit::Process);
        assert_eq!(gate.admit(Input::Source), Admit::Process);
    }

    #[test]
    fn a_restarted_gate_counts_from_its_epoch() {
        let gate = Gate::new(5);
        assert_eq!(gate.epoch(), 5);
        assert_eq!(gate.admit(Input::Routed { epoch: 5 }), Admit::Process);
        assert_eq!(gate.admit(Input::Routed { epoch: 6 }), Admit::Ahead);
    }
}
