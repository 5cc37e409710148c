use super::*;

fn samples() -> Vec<Record> {
    vec![
        Record::Input {
            source: 2,
            seq: 7,
            payload: b"hello".to_vec(),
        },
        Record::State {
            checkpoint: 3,
            step: 4,
            key: b"word".to_vec(),
            value: vec![0, 1, 2, 255],
        },
        Record::Commit { checkpoint: 3 },
        Record::Output {
            epoch: 3,
            sink: 0,
            seq: 11,
            payload: Vec::new(),
        },
    ]
}

fn open(dir: &Path) -> (Wal, Recovered) {
    Wal::open(dir, WalOptions::default()).unwrap()
}

/// Writes `samples()` to a new log in `dir`, closes it, and returns its segment.
fn log_of_samples(dir: &Path) -> PathBuf {
    let (mut wal, _) = open(dir);
    for r in samples() {
        wal.append(&r).unwrap();
    }
    wal.sync().unwrap();
    wal.segments().pop().unwrap()
}

#[test]
fn every_record_kind_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    assert!(open(dir.path()).1.records.is_empty());
    log_of_samples(dir.path());
    let (wal, recovered) = open(dir.path());
    let lsns: Vec<Lsn> = recovered.records.iter().map(|(l, _)| *l).collect();
    assert_eq!(lsns, vec![1, 2, 3, 4]);
    let records: Vec<Record> = recovered.records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(records, samples());
    assert_eq!(recovered.truncated_bytes, 0);
    assert_eq!(wal.next_lsn(), 5);
}

#[test]
fn a_torn_tail_is_cut_and_appending_goes_on_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let segment = log_of_samples(dir.path());
    // A crash in the middle of writing the last record.
    let len = std::fs::metadata(&segment).unwrap().len();
    let f = OpenOptions::new().write(true).open(&segment).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);

    let (mut wal, recovered) = open(dir.path());
    assert_eq!(recovered.records.len(), 3);
    assert!(recovered.truncated_bytes > 0);
    wal.append(&Record::Commit { checkpoint: 9 }).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered) = open(dir.path());
    assert_eq!(
        recovered.records.last().unwrap(),
        &(4, Record::Commit { checkpoint: 9 })
    );
}

#[test]
fn a_flipped_bit_ends_the_log_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let segment = log_of_samples(dir.path());
    let mut data = std::fs::read(&segment).unwrap();
    // Inside the second record's body (the first is 8 + 22 bytes after the header).
    let offset = HEADER_LEN as usize + 30 + 8 + 5;
    data[offset] ^= 0x10;
    std::fs::write(&segment, &data).unwrap();

    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records.len(), 1);
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        HEADER_LEN + 30,
        "truncated at the corrupt record"
    );
}

#[test]
fn segments_after_a_corrupt_one_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { segment_bytes: 64 };
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).unwrap();
    for i in 0..20 {
        wal.append(&Record::Commit { checkpoint: i }).unwrap();
    }
    wal.sync().unwrap();
    let segments = wal.segments();
    assert!(segments.len() > 3, "{segments:?}");
    drop(wal);
    let f = OpenOptions::new().write(true).open(&segments[1]).unwrap();
    f.set_len(HEADER_LEN + 5).unwrap();
    drop(f);
    let (wal, recovered) = Wal::open(dir.path(), options).unwrap();
    assert_eq!(wal.segments().len(), 2);
    let checkpoints: Vec<u64> = recovered
        .records
        .iter()
        .map(|(_, r)| match r {
            Record::Commit { checkpoint } => *checkpoint,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        checkpoints,
        (0..checkpoints.len() as u64).collect::<Vec<_>>()
    );
}

#[test]
fn empty_and_missing_directories_start_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not/yet/there");
    let (wal, recovered) = open(&missing);
    assert!(recovered.records.is_empty());
    assert_eq!(wal.next_lsn(), 1);
    drop(wal);
    // A segment whose header never reached the disk holds nothing and is started over.
    let segment = segment::path(&missing, 1);
    std::fs::write(&segment, b"WALL").unwrap();
    let (mut wal, recovered) = open(&missing);
    assert!(recovered.records.is_empty());
    wal.append(&Record::Commit { checkpoint: 1 }).unwrap();
    wal.sync().unwrap();
    drop(wal);
    assert_eq!(open(&missing).1.records.len(), 1);
}

#[test]
fn a_log_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = b"WALLAROO".to_vec();
    data.extend_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    std::fs::write(segment::path(dir.path(), 1), data).unwrap();
    let err = Wal::open(dir.path(), WalOptions::default()).err().unwrap();
    assert!(matches!(err, WalError::IncompatibleVersion { .. }), "{err}");
    assert!(err.to_string().contains("new data directory"), "{err}");
}

#[test]
fn compaction_removes_only_segments_wholly_before_the_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), WalOptions { segment_bytes: 64 }).unwrap();
    for i in 0..30 {
        wal.append(&Record::Commit { checkpoint: i }).unwrap();
    }
    wal.sync().unwrap();
    let before = wal.segments().len();
    let removed = wal.compact_before(12).unwrap();
    assert!(removed > 0);
    assert_eq!(wal.segments().len(), before - removed);
    drop(wal);
    let (_, recovered) = Wal::open(dir.path(), WalOptions { segment_bytes: 64 }).unwrap();
    let first = recovered.records.first().unwrap().0;
    assert!(first <= 12, "record 12 must survive, first kept is {first}");
    assert_eq!(recovered.records.last().unwrap().0, 30);
}
