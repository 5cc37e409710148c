//! `wallaroo-sim --seeds N [--base B] [--seed S] [--members M] [--workers W] [--trace]`
//!
//! Runs seeds B..B+N (or the one seed S) and prints what they did. A violation prints its
//! seed and the last events before it, and the run exits with status 1.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wallaroo_sim::{Options, run};

const USAGE: &str = "usage: wallaroo-sim [--seeds N] [--base B] [--seed S] [--members M] \
                     [--workers W] [--fault-secs T] [--trace]";

struct Args {
    seeds: u64,
    base: u64,
    one: Option<u64>,
    trace: bool,
    options: Options,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 100,
        base: 0,
        one: None,
        trace: false,
        options: Options::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--trace" {
            args.trace = true;
            args.options.full_trace = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag} {value}: not a number\n{USAGE}"))?;
        match flag.as_str() {
            "--seeds" => args.seeds = number,
            "--base" => args.base = number,
            "--seed" => args.one = Some(number),
            "--members" if (1..=5).contains(&number) => {
                args.options.members = Some(number as usize)
            }
            "--workers" if (1..=3).contains(&number) => {
                args.options.workers = Some(number as usize)
            }
            "--fault-secs" => args.options.fault_time = Some(Duration::from_secs(number)),
            "--members" | "--workers" => {
                return Err(format!("{flag} {number}: members are 1-5, workers 1-3"));
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let seeds: Vec<u64> = match args.one {
        Some(s) => vec![s],
        None => (args.base..args.base + args.seeds).collect(),
    };
    match args.one {
        Some(s) => println!("wallaroo-sim: seed {s}"),
        None => println!(
            "wallaroo-sim: {} seeds from base seed {} (replay one with --seed S)",
            seeds.len(),
            args.base
        ),
    }
    let started = Instant::now();
    let (mut sim_time, mut events, mut checkpoints, mut recoveries) = (Duration::ZERO, 0, 0, 0);
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut swaps: BTreeMap<&str, u64> = BTreeMap::new();
    let mut swap_faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut stop_faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut failed = None;
    for (i, &seed) in seeds.iter().enumerate() {
        let outcome = run(seed, &args.options);
        sim_time += outcome.sim_time;
        events += outcome.events;
        checkpoints += outcome.checkpoints;
        recoveries += outcome.recoveries;
        for (k, n) in &outcome.faults {
            *faults.entry(k).or_default() += n;
        }
        for (k, n) in &outcome.swaps {
            *swaps.entry(k).or_default() += n;
        }
        for (k, n) in &outcome.swap_faults {
            *swap_faults.entry(k).or_default() += n;
        }
        for (k, n) in &outcome.stop_faults {
            *stop_faults.entry(k).or_default() += n;
        }
        if args.trace {
            for line in &outcome.trace {
                println!("{line}");
            }
        }
        if let Some(v) = &outcome.violation {
            println!(
                "\nseed {seed} FAILED after {} seeds ({} members x {} workers): {v}",
                i + 1,
                outcome.members,
                outcome.workers
            );
            if !args.trace {
                println!("last events:");
                for line in &outcome.trace {
                    println!("  {line}");
                }
            }
            println!("replay: cargo run --release -p wallaroo-sim -- --seed {seed} --trace");
            failed = Some(seed);
            break;
        }
    }
    let wall = started.elapsed();
    let list = |m: &BTreeMap<&str, u64>| {
        let items: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
        items.join(", ")
    };
    println!(
        "seeds {}, simulated time {:.1} s, events {events}, checkpoints committed {checkpoints}, \
         recoveries {recoveries}\nfaults: {}\nswaps: {}\nfaults during a swap, by step: {}\n\
         data streams broken during a stop, by step: {}\n\
         wall {:.2} s, {:.0} simulated events per second",
        seeds.len(),
        sim_time.as_secs_f64(),
        list(&faults),
        list(&swaps),
        list(&swap_faults),
        list(&stop_faults),
        wall.as_secs_f64(),
        events as f64 / wall.as_secs_f64().max(1e-9)
    );
    match failed {
        Some(_) => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    }
}
