use super::*;

fn samples() -> Vec<Record> {
    vec![
        Record::Input {
            source: 2,
            stream: 0xfeed,
            seq: 7,
            frames: vec![b"hello".to_vec(), Vec::new()],
        },
        Record::State {
            checkpoint: 3,
            entries: vec![
                KeyState {
                    step: 4,
                    key: b"word".to_vec(),
                    value: vec![0, 1, 2, 255],
                },
                KeyState {
                    step: 1,
                    key: Vec::new(),
                    value: Vec::new(),
                },
            ],
        },
        Record::Commit {
            checkpoint: 3,
            cut: 1,
            full: true,
            streams: vec![StreamPosition {
                source: 2,
                stream: 0xfeed,
                next_seq: 9,
            }],
        },
        Record::Output {
            epoch: 3,
            sink: 0,
            payloads: vec![b"word => 1\n".to_vec()],
        },
        Record::Released { epoch: 3 },
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
    assert_eq!(lsns, vec![1, 2, 3, 4, 5]);
    let records: Vec<Record> = recovered.records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(records, samples());
    assert_eq!(recovered.truncated_bytes, 0);
    assert_eq!(wal.next_lsn(), 6);
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
    assert_eq!(recovered.records.len(), 4);
    assert!(recovered.truncated_bytes > 0);
    wal.append(&Record::Released { epoch: 9 }).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered) = open(dir.path());
    assert_eq!(
        recovered.records.last().unwrap(),
        &(5, Record::Released { epoch: 9 })
    );
}

#[test]
fn a_flipped_bit_ends_the_log_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let segment = log_of_samples(dir.path());
    let mut data = std::fs::read(&segment).unwrap();
    let mut body = Vec::new();
    samples()[0].encode(&mut body);
    let first = 8 + body.len();
    // Inside the second record's body.
    let offset = HEADER_LEN as usize + first + 8 + 5;
    data[offset] ^= 0x10;
    std::fs::write(&segment, &data).unwrap();

    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records.len(), 1);
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        HEADER_LEN + first as u64,
        "truncated at the corrupt record"
    );
}

#[test]
fn segments_after_a_corrupt_one_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { segment_bytes: 64 };
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).unwrap();
    for i in 0..20 {
        wal.append(&Record::Released { epoch: i }).unwrap();
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
            Record::Released { epoch } => *epoch,
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
    wal.append(&Record::Released { epoch: 1 }).unwrap();
    wal.sync().unwrap();
    drop(wal);
    assert_eq!(open(&missing).1.records.len(), 1);
}

#[test]
fn a_rollback_record_survives_a_reopen_and_format_1_segments_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let segment = log_of_samples(dir.path());
    // Format 1 had every record kind but the rollback: its segments read as they are.
    let mut data = std::fs::read(&segment).unwrap();
    data[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&segment, data).unwrap();
    let (mut wal, recovered) = open(dir.path());
    assert_eq!(recovered.records.len(), samples().len());
    wal.append(&Record::Rollback { to: 2 }).unwrap();
    wal.sync().unwrap();
    // Not into the format-1 segment, which a build of that format must still read whole.
    let segments = wal.segments();
    assert_eq!(segments.len(), 2, "{segments:?}");
    assert_eq!(segment::version(&segments[0]).unwrap(), 1);
    assert_eq!(segment::version(&segments[1]).unwrap(), FORMAT_VERSION);
    drop(wal);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.records.len(), samples().len() + 1);
    assert_eq!(
        recovered.records.last().unwrap().1,
        Record::Rollback { to: 2 }
    );
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
        wal.append(&Record::Released { epoch: i }).unwrap();
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

#[test]
fn a_flush_synced_outside_the_log_makes_records_durable_while_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path());
    wal.append(&Record::Released { epoch: 1 }).unwrap();
    wal.append(&Record::Released { epoch: 2 }).unwrap();
    let pending = wal.flush().unwrap();
    wal.append(&Record::Released { epoch: 3 }).unwrap();
    assert_eq!(pending.sync().unwrap(), 2);
    drop(wal);
    assert_eq!(open(dir.path()).1.records.len(), 3);
}

#[test]
fn a_list_count_larger_than_its_record_is_corruption_not_an_allocation() {
    let mut body = Vec::new();
    Record::Output {
        epoch: 1,
        sink: 0,
        payloads: vec![b"x".to_vec()],
    }
    .encode(&mut body);
    // The payload count sits after kind (1), epoch (8) and sink (4).
    body[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(Record::decode(&body), None);
}
