//! A deterministic simulator for the protocol core (`wallaroo-protocol`): the real coordinator,
//! participants and gates, driven by a model engine, simulated logs and a simulated network
//! under seeded faults, with the exactly-once invariants checked as it goes. See README.md.

pub mod rng;
pub mod wal;
pub mod world;

pub use world::{LIVENESS_BOUND, Options, Outcome};

/// Runs one seed to the end (or to the first violation).
pub fn run(seed: u64, options: &Options) -> Outcome {
    world::World::new(seed, options).run(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_trace_byte_for_byte() {
        let options = Options {
            full_trace: true,
            ..Options::default()
        };
        for seed in [1, 2, 3] {
            let a = run(seed, &options);
            let b = run(seed, &options);
            assert!(
                a.trace.len() > 100,
                "seed {seed}: a trace of {} lines",
                a.trace.len()
            );
            assert_eq!(a.trace.join("\n"), b.trace.join("\n"), "seed {seed}");
            assert_eq!(a.events, b.events);
        }
    }
}
