//! When nothing is in flight among a set of members: the test a checkpoint's alignment and a
//! stop's drain both wait for.
//!
//! Each member reports whether it is settled (its workers at the barrier with no routed batch
//! queued, or for a drain, nothing queued at all) and how many routed batches it has sent to
//! other members and received from them since it started. Reports are not taken at one
//! instant, so one round can see a batch neither as queued nor as sent. The members are
//! quiescent once every member is settled, the sums of `sent` and `received` agree, and a
//! second round finds the same sums: nothing moved between the two rounds.

/// One member's report for one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alignment {
    /// Every worker is at the barrier (for a drain: true).
    pub aligned: bool,
    /// Batches queued on this member and not yet processed: routed ones while aligning,
    /// all of them while draining.
    pub routed_in_flight: usize,
    /// Routed batches handed to other members since start.
    pub sent: u64,
    /// Routed batches taken from other members since start.
    pub received: u64,
}

impl Alignment {
    /// This member alone has nothing left to do for the round.
    pub fn settled(&self) -> bool {
        self.aligned && self.routed_in_flight == 0
    }
}

/// Rounds of reports until quiescence.
#[derive(Debug, Default, Clone)]
pub struct Quiescence {
    last: Option<(u64, u64)>,
}

/// What one round showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    Quiescent,
    /// Not yet; the members still busy (by index), and batches on the wire.
    Busy {
        members: Vec<usize>,
        on_the_wire: u64,
    },
}

impl Quiescence {
    /// Takes one round of reports, one per member, in member order.
    pub fn round(&mut self, reports: &[Alignment]) -> Round {
        let settled = reports.iter().all(Alignment::settled);
        let sums = reports
            .iter()
            .fold((0, 0), |(s, r), a| (s + a.sent, r + a.received));
        if settled && sums.0 == sums.1 && self.last == Some(sums) {
            return Round::Quiescent;
        }
        self.last = settled.then_some(sums);
        Round::Busy {
            members: (0..reports.len())
                .filter(|&i| !reports[i].settled())
                .collect(),
            on_the_wire: sums.0.abs_diff(sums.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(aligned: bool, queued: usize, sent: u64, received: u64) -> Alignment {
        Alignment {
            aligned,
            routed_in_flight: queued,
            sent,
            received,
        }
    }

    #[test]
    fn quiescence_takes_two_equal_settled_rounds() {
        let mut q = Quiescence::default();
        let round = [at(true, 0, 3, 1), at(true, 0, 1, 3)];
        assert!(matches!(q.round(&round), Round::Busy { .. }));
        assert_eq!(q.round(&round), Round::Quiescent);
    }

    #[test]
    fn a_batch_that_moved_between_rounds_takes_another_round() {
        let mut q = Quiescence::default();
        q.round(&[at(true, 0, 3, 1), at(true, 0, 1, 3)]);
        // Node 0 sent one more, node 1 took it: sums agree, but they moved.
        assert!(matches!(
            q.round(&[at(true, 0, 4, 1), at(true, 0, 1, 4)]),
            Round::Busy { .. }
        ));
        assert_eq!(
            q.round(&[at(true, 0, 4, 1), at(true, 0, 1, 4)]),
            Round::Quiescent
        );
    }

    #[test]
    fn a_member_not_at_the_barrier_or_with_queued_batches_holds_it_up() {
        let mut q = Quiescence::default();
        let round = [at(false, 0, 0, 0), at(true, 2, 0, 0), at(true, 0, 0, 0)];
        for _ in 0..3 {
            assert_eq!(
                q.round(&round),
                Round::Busy {
                    members: vec![0, 1],
                    on_the_wire: 0
                }
            );
        }
    }

    #[test]
    fn batches_on_the_wire_hold_it_up_and_are_counted() {
        let mut q = Quiescence::default();
        let round = [at(true, 0, 5, 0), at(true, 0, 0, 3)];
        for _ in 0..3 {
            assert_eq!(
                q.round(&round),
                Round::Busy {
                    members: vec![],
                    on_the_wire: 2
                }
            );
        }
    }
}
