use super::*;

fn samples() -> Vec<Record> {
    vec![
        Record::Input {
            source: 2,
            stream: 0xfeed,
            seq: 7,
            time: 1_700_000_000_123_456_789,
            frames: vec![b"hello".to_vec(), Vec::new()],
        },
        Record::State {
            checkpoint: 3,
            steps: StateSteps::Named(vec!["count word".into(), "sums".into()]),
            entries: vec![
                KeyState {
                    step: 0,
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

#[test]
fn removed_keys_read_back_unless_they_name_a_step_beyond_their_table() {
    let removed = Record::Removed {
        checkpoint: 4,
        steps: StateSteps::Named(vec!["count".into(), "usage".into()]),
        keys: vec![(1, b"quiet".to_vec()), (0, Vec::new())],
    };
    let mut body = Vec::new();
    removed.encode(&mut body);
    assert_eq!(Record::decode(&body), Some(removed));
    let mut body = Vec::new();
    Record::Removed {
        checkpoint: 4,
        steps: StateSteps::Named(vec!["count".into()]),
        keys: vec![(1, b"quiet".to_vec())],
    }
    .encode(&mut body);
    assert_eq!(Record::decode(&body), None);
}

#[test]
fn input_logged_before_event_times_reads_back_with_time_zero() {
    // The input record of logs written before messages had event times.
    let mut body = vec![1];
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(&0xfeedu64.to_le_bytes());
    body.extend_from_slice(&7u64.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // one frame,
    body.extend_from_slice(&5u32.to_le_bytes()); // of 5 bytes
    body.extend_from_slice(b"hello");
    assert_eq!(
        Record::decode(&body),
        Some(Record::Input {
            source: 2,
            stream: 0xfeed,
            seq: 7,
            time: 0,
            frames: vec![b"hello".to_vec()],
        })
    );
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

/// Appends `samples()`, syncs them, then appends `unsynced` records that are written to the
/// file but never synced (what a crash of the process leaves), and closes the log.
fn log_with_unsynced_tail(dir: &Path, unsynced: u64) -> PathBuf {
    let (mut wal, _) = open(dir);
    for r in samples() {
        wal.append(&r).unwrap();
    }
    wal.sync().unwrap();
    for epoch in 0..unsynced {
        wal.append(&Record::Released { epoch: 100 + epoch })
            .unwrap();
    }
    drop(wal.flush().unwrap());
    wal.segments().pop().unwrap()
}

/// Every file in `dir` with its bytes.
fn files(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect()
}

fn corruption(dir: &Path, options: WalOptions) -> Corruption {
    match Wal::open(dir, options) {
        Err(WalError::Corrupt(c)) => *c,
        Err(e) => panic!("not a corruption error: {e}"),
        Ok((_, recovered)) => panic!("opened a corrupt log ({} records)", recovered.records.len()),
    }
}

fn flip(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize] ^= 0x10;
    std::fs::write(path, data).unwrap();
}

/// The offset of record `n` (from 0) of `samples()` in its segment.
fn sample_offset(n: usize) -> u64 {
    HEADER_LEN
        + samples()[..n]
            .iter()
            .map(|r| {
                let mut body = Vec::new();
                r.encode(&mut body);
                8 + body.len() as u64
            })
            .sum::<u64>()
}

/// A log of input from one acknowledged stream, checkpointed every few batches: 40 records,
/// in segments of about 200 bytes.
fn acknowledged_log(dir: &Path) -> (Vec<Record>, Vec<PathBuf>) {
    let options = WalOptions {
        segment_bytes: 200,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(dir, options).unwrap();
    let mut records = Vec::new();
    let mut seq = 0;
    for i in 0..40u64 {
        let record = if i % 4 == 3 {
            Record::Commit {
                checkpoint: i / 4 + 1,
                cut: i,
                full: false,
                streams: vec![StreamPosition {
                    source: 0,
                    stream: 0xabc,
                    next_seq: seq,
                }],
            }
        } else {
            let frames = vec![format!("word{i}").into_bytes(); 2];
            seq += 2;
            Record::Input {
                source: 0,
                stream: 0xabc,
                seq: seq - 2,
                time: seq,
                frames,
            }
        };
        wal.append(&record).unwrap();
        wal.sync().unwrap();
        records.push(record);
    }
    (records, wal.segments())
}

#[test]
fn a_torn_tail_after_the_last_sync_is_cut_and_appending_goes_on_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let segment = log_with_unsynced_tail(dir.path(), 2);
    // A crash in the middle of writing the last record, which was never synced.
    let len = std::fs::metadata(&segment).unwrap().len();
    let f = OpenOptions::new().write(true).open(&segment).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);

    let (mut wal, recovered) = open(dir.path());
    assert_eq!(recovered.records.len(), samples().len() + 1);
    assert!(recovered.truncated_bytes > 0);
    assert!(recovered.discarded.is_none());
    wal.append(&Record::Released { epoch: 9 }).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered) = open(dir.path());
    assert_eq!(
        recovered.records.last().unwrap(),
        &(7, Record::Released { epoch: 9 })
    );
}

#[test]
fn a_torn_tail_of_zeros_or_garbage_after_the_last_sync_is_cut() {
    let seed: u64 = std::env::var("WALLAROO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001);
    println!("WALLAROO_TEST_SEED={seed}");
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    for tail in [vec![0u8; 8192], (0..65536).map(|_| next()).collect()] {
        let dir = tempfile::tempdir().unwrap();
        let segment = log_with_unsynced_tail(dir.path(), 1);
        // Pages of a write that reached the disk out of order: the unsynced record's bytes
        // are lost, what follows is zeros or whatever the disk held.
        let mut data = std::fs::read(&segment).unwrap();
        data.truncate(sample_offset(samples().len()) as usize + 3);
        data.extend_from_slice(&tail);
        std::fs::write(&segment, &data).unwrap();
        let (_, recovered) = open(dir.path());
        assert_eq!(recovered.records.len(), samples().len());
        assert!(recovered.discarded.is_none());
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            sample_offset(samples().len())
        );
    }
}

#[test]
fn a_flipped_byte_with_intact_records_after_it_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let segment = log_of_samples(dir.path());
    // Inside the second record's body.
    flip(&segment, sample_offset(1) + 8 + 5);
    // Without the durable mark (as a log written before it existed), only the intact records
    // after the bad one tell it from a torn tail.
    std::fs::remove_file(durable::path(dir.path())).unwrap();
    let before = files(dir.path());

    let c = corruption(dir.path(), WalOptions::default());
    assert_eq!(c.path, segment);
    assert_eq!(c.offset, sample_offset(1));
    assert_eq!(c.lsn, 2);
    assert_eq!(c.why, Why::RecordsAfter);
    assert_eq!(c.lost.records, 3, "commit, output, released");
    assert_eq!(c.lost.checkpoints, vec![3]);
    assert_eq!(c.lost.inputs, 0);
    assert_eq!(
        c.lost.bytes,
        std::fs::metadata(&segment).unwrap().len() - sample_offset(1)
    );
    assert_eq!(c.lost.unreadable_bytes, sample_offset(2) - sample_offset(1));
    let message = WalError::Corrupt(Box::new(c)).to_string();
    for part in [
        &segment.display().to_string(),
        &format!("offset {}", sample_offset(1)),
        "3 intact records",
        "checkpoint 3",
        "--discard-corrupt-log",
        "backup",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert_eq!(files(dir.path()), before, "opening changed the log");
}

#[test]
fn corruption_of_records_once_reported_durable_is_refused_even_at_the_very_end() {
    let dir = tempfile::tempdir().unwrap();
    let segment = log_of_samples(dir.path());
    // The last record was synced: losing its end is no torn write.
    let len = std::fs::metadata(&segment).unwrap().len();
    let f = OpenOptions::new().write(true).open(&segment).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let before = files(dir.path());
    let c = corruption(dir.path(), WalOptions::default());
    assert_eq!(c.why, Why::BeforeDurable { durable: 5 });
    assert_eq!((c.lsn, c.offset), (5, sample_offset(4)));
    assert_eq!(c.lost.records, 0);
    assert_eq!(files(dir.path()), before);

    // Cut at a record boundary, the log ends cleanly but short of what it had made durable.
    let f = OpenOptions::new().write(true).open(&segment).unwrap();
    f.set_len(sample_offset(4)).unwrap();
    drop(f);
    let before = files(dir.path());
    let c = corruption(dir.path(), WalOptions::default());
    assert_eq!(c.why, Why::Missing { durable: 5 });
    assert_eq!(files(dir.path()), before);
}

#[test]
fn corruption_in_a_segment_before_the_newest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (records, segments) = acknowledged_log(dir.path());
    assert!(segments.len() > 3, "{segments:?}");
    std::fs::remove_file(durable::path(dir.path())).unwrap();
    // The very end of the second segment: nothing after it in that file.
    let len = std::fs::metadata(&segments[1]).unwrap().len();
    let f = OpenOptions::new().write(true).open(&segments[1]).unwrap();
    f.set_len(len - 1).unwrap();
    drop(f);
    let before = files(dir.path());
    let c = corruption(dir.path(), WalOptions::default());
    assert_eq!(c.why, Why::NotNewestSegment);
    assert_eq!(c.path, segments[1]);
    assert_eq!(c.lost.later_segments, segments.len() - 2);
    assert_eq!(c.lost.records, records.len() as u64 - c.lsn);
    assert_eq!(files(dir.path()), before);

    // A segment missing between two others.
    let dir = tempfile::tempdir().unwrap();
    let (_, segments) = acknowledged_log(dir.path());
    std::fs::remove_file(&segments[1]).unwrap();
    let before = files(dir.path());
    let c = corruption(dir.path(), WalOptions::default());
    assert!(
        matches!(&c.why, Why::Gap { next, .. } if *next == segments[2]),
        "{c}"
    );
    assert_eq!(c.path, segments[0]);
    assert_eq!(files(dir.path()), before);
}

#[test]
fn discarding_a_corrupt_log_drops_from_the_bad_record_on_and_reports_exactly_that() {
    let dir = tempfile::tempdir().unwrap();
    let (records, segments) = acknowledged_log(dir.path());
    // Inside the second record of the third segment.
    let first_lsn: Lsn = segments[2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut body = Vec::new();
    records[first_lsn as usize - 1].encode(&mut body);
    let bad_offset = HEADER_LEN + 8 + body.len() as u64;
    flip(&segments[2], bad_offset + 8 + 1);
    let bytes_after: u64 = segments[2..]
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum::<u64>()
        - bad_offset;

    let discard = WalOptions {
        discard_corrupt: true,
        ..WalOptions::default()
    };
    let (mut wal, recovered) = Wal::open(dir.path(), discard).unwrap();
    let bad_lsn = first_lsn + 1;
    let c = recovered.discarded.expect("reports what it dropped");
    assert_eq!(
        (c.path.clone(), c.offset, c.lsn),
        (segments[2].clone(), bad_offset, bad_lsn)
    );
    assert_eq!(c.why, Why::NotNewestSegment);
    // What it dropped, computed from what was written: every record after the bad one, the
    // bad one, and the stream's frames from where the kept records leave it (the bad record
    // held the frames right after that).
    let mut expected = Lost::default();
    for r in &records[bad_lsn as usize..] {
        expected.count(r);
    }
    expected.bad_records = 1;
    let Record::Input { seq: bad_seq, .. } = &records[bad_lsn as usize - 1] else {
        panic!("the bad record is an input record");
    };
    expected.streams[0].from_seq = *bad_seq;
    let mut bad_body = Vec::new();
    records[bad_lsn as usize - 1].encode(&mut bad_body);
    expected.bytes = bytes_after;
    expected.unreadable_bytes =
        8 + bad_body.len() as u64 + HEADER_LEN * (segments.len() - 3) as u64;
    expected.later_segments = segments.len() - 3;
    assert_eq!(c.lost, expected);
    assert!(!c.lost.checkpoints.is_empty() && !c.lost.streams.is_empty());
    assert!(
        c.dropped().contains("stream 0xabc frames"),
        "{}",
        c.dropped()
    );
    assert!(
        c.dropped().contains(" intact records in ")
            && c.dropped().contains(", 1 unreadable record ("),
        "{}",
        c.dropped()
    );
    assert_eq!(recovered.records.len() as u64, bad_lsn - 1);
    assert_eq!(recovered.truncated_bytes, bytes_after);

    // The file ends at the bad record, later segments are gone, and the log goes on from there.
    assert_eq!(std::fs::metadata(&segments[2]).unwrap().len(), bad_offset);
    assert!(segments[3..].iter().all(|p| !p.exists()));
    assert_eq!(wal.next_lsn(), bad_lsn);
    wal.append(&Record::Released { epoch: 7 }).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered) = open(dir.path());
    assert!(recovered.discarded.is_none());
    assert_eq!(
        recovered.records.last().unwrap(),
        &(bad_lsn, Record::Released { epoch: 7 })
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

/// `samples()` as format 1 wrote them (state by position, no rollback record), in a segment of
/// that format.
fn format_1_segment(dir: &Path) -> PathBuf {
    let segment = segment::path(dir, 1);
    let mut data = b"WALLAROO".to_vec();
    data.extend_from_slice(&1u32.to_le_bytes());
    for r in samples() {
        let r = match r {
            Record::State {
                checkpoint,
                entries,
                ..
            } => Record::State {
                checkpoint,
                steps: StateSteps::Positions,
                entries,
            },
            other => other,
        };
        segment::write_record(&mut data, &r).unwrap();
    }
    std::fs::write(&segment, data).unwrap();
    segment
}

#[test]
fn a_rollback_record_survives_a_reopen_and_format_1_segments_still_read() {
    let dir = tempfile::tempdir().unwrap();
    format_1_segment(dir.path());
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

/// A format-2 segment as that format's builds wrote it, byte for byte: checkpoint 1's state of
/// the keys "word" (5) and "bird" (1) in the step at position 3 of the app spec, then its
/// commit.
#[rustfmt::skip]
const FORMAT_2_SEGMENT: &[u8] = &[
    // header: magic, format 2
    b'W', b'A', b'L', b'L', b'A', b'R', b'O', b'O', 0x02, 0x00, 0x00, 0x00,
    // state record: length 47, crc32; kind 2, checkpoint 1, 2 entries
    0x2f, 0x00, 0x00, 0x00, 0x0c, 0x59, 0x5d, 0xc2,
    0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
    // step 3, key "word", value [5]
    0x03, 0x00, 0x00, 0x00,
    0x04, 0x00, 0x00, 0x00, b'w', b'o', b'r', b'd', 0x01, 0x00, 0x00, 0x00, 0x05,
    // step 3, key "bird", value [1]
    0x03, 0x00, 0x00, 0x00,
    0x04, 0x00, 0x00, 0x00, b'b', b'i', b'r', b'd', 0x01, 0x00, 0x00, 0x00, 0x01,
    // commit record: length 22, crc32; kind 3, checkpoint 1, cut 1, not full, no streams
    0x16, 0x00, 0x00, 0x00, 0xbb, 0x46, 0x1d, 0xd3,
    0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[test]
fn a_format_2_log_reads_its_state_by_position_and_new_records_go_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let old = segment::path(dir.path(), 1);
    std::fs::write(&old, FORMAT_2_SEGMENT).unwrap();
    let (mut wal, recovered) = open(dir.path());
    let key = |key: &[u8], value| KeyState {
        step: 3,
        key: key.to_vec(),
        value: vec![value],
    };
    let records: Vec<Record> = recovered.records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        records,
        vec![
            Record::State {
                checkpoint: 1,
                steps: StateSteps::Positions,
                entries: vec![key(b"word", 5), key(b"bird", 1)],
            },
            Record::Commit {
                checkpoint: 1,
                cut: 1,
                full: false,
                streams: Vec::new(),
            },
        ]
    );
    assert_eq!(recovered.truncated_bytes, 0);
    let named = Record::State {
        checkpoint: 2,
        steps: StateSteps::Named(vec!["count word".into()]),
        entries: vec![KeyState {
            step: 0,
            ..key(b"word", 6)
        }],
    };
    wal.append(&named).unwrap();
    wal.sync().unwrap();
    drop(wal);
    assert_eq!(
        std::fs::read(&old).unwrap(),
        FORMAT_2_SEGMENT,
        "the old segment changed"
    );
    let (wal, recovered) = open(dir.path());
    assert_eq!(
        segment::version(&wal.segments()[1]).unwrap(),
        FORMAT_VERSION
    );
    assert_eq!(recovered.records.last().unwrap().1, named);
}

#[test]
fn a_state_record_carries_its_step_names_and_entries_refer_to_them_by_index() {
    let record = Record::State {
        checkpoint: 4,
        steps: StateSteps::Named(vec!["sums".into(), "count word".into()]),
        entries: vec![KeyState {
            step: 1,
            key: b"a".to_vec(),
            value: vec![9],
        }],
    };
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        // kind 7, checkpoint 4
        0x07, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // 2 step names: "sums", "count word"
        0x02, 0x00, 0x00, 0x00,
        0x04, 0x00, 0x00, 0x00, b's', b'u', b'm', b's',
        0x0a, 0x00, 0x00, 0x00, b'c', b'o', b'u', b'n', b't', b' ', b'w', b'o', b'r', b'd',
        // 1 entry: step 1 ("count word"), key "a", value [9]
        0x01, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, b'a', 0x01, 0x00, 0x00, 0x00, 0x09,
    ];
    let mut body = Vec::new();
    record.encode(&mut body);
    assert_eq!(body, bytes);
    assert_eq!(Record::decode(bytes), Some(record));
    // An entry naming a step past the table, or a name that is not UTF-8, is no record.
    let mut past = bytes.to_vec();
    past[39] = 2;
    assert_eq!(Record::decode(&past), None);
    let mut not_utf8 = bytes.to_vec();
    not_utf8[17] = 0xff;
    assert_eq!(Record::decode(&not_utf8), None);
}

#[test]
fn a_log_written_before_the_durable_mark_opens_and_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    log_of_samples(dir.path());
    std::fs::remove_file(durable::path(dir.path())).unwrap();
    let (mut wal, recovered) = open(dir.path());
    assert_eq!(recovered.records.len(), samples().len());
    assert_eq!(durable::read(dir.path()).unwrap().durable, 5);
    wal.append(&Record::Released { epoch: 1 }).unwrap();
    wal.sync().unwrap();
    assert_eq!(durable::read(dir.path()).unwrap().durable, 6);
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
    let options = WalOptions {
        segment_bytes: 64,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).unwrap();
    for i in 0..30 {
        wal.append(&Record::Released { epoch: i }).unwrap();
    }
    wal.sync().unwrap();
    let before = wal.segments().len();
    let removed = wal.compact_before(12).unwrap();
    assert!(removed > 0);
    assert_eq!(wal.segments().len(), before - removed);
    drop(wal);
    let (_, recovered) = Wal::open(dir.path(), options).unwrap();
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

#[test]
fn a_torn_write_of_the_durable_mark_leaves_the_other_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path());
    for epoch in 0..3 {
        wal.append(&Record::Released { epoch }).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let path = durable::path(dir.path());
    let mut data = std::fs::read(&path).unwrap();
    assert_eq!(durable::read(dir.path()).unwrap().durable, 3);
    // Syncs 1 and 3 went to the first slot, 2 to the second: spoil the first.
    data[10] ^= 1;
    std::fs::write(&path, &data).unwrap();
    assert_eq!(
        durable::read(dir.path()).unwrap().durable,
        2,
        "a lower bound"
    );
    data[42] ^= 1;
    std::fs::write(&path, &data).unwrap();
    assert_eq!(
        durable::read(dir.path()).unwrap().durable,
        0,
        "no bound at all"
    );
    // Without a bound the log still opens (it was not corrupt) and gets its mark again.
    assert_eq!(open(dir.path()).1.records.len(), 3);
    assert_eq!(durable::read(dir.path()).unwrap().durable, 3);
}

/// The first LSN in the segment at `path` (from its name).
fn first_lsn(path: &Path) -> Lsn {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// The acknowledged input among `records`, as the lost range it would be in a report: from
/// `from_seq` to the end of the last one.
fn stream_end(records: &[Record]) -> u64 {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Input { seq, frames, .. } => Some(seq + frames.len() as u64),
            _ => None,
        })
        .max()
        .unwrap()
}

fn discard() -> WalOptions {
    WalOptions {
        discard_corrupt: true,
        ..WalOptions::default()
    }
}

#[test]
fn a_missing_oldest_segment_is_refused_unless_compaction_removed_it() {
    let dir = tempfile::tempdir().unwrap();
    let (records, segments) = acknowledged_log(dir.path());
    let first = first_lsn(&segments[1]);
    std::fs::remove_file(&segments[0]).unwrap();
    let before = files(dir.path());
    let c = corruption(dir.path(), WalOptions::default());
    assert_eq!(
        c.why,
        Why::MissingHead {
            first,
            low: Some(1)
        },
        "{c}"
    );
    assert_eq!(
        (c.path.clone(), c.offset, c.lsn),
        (segments[1].clone(), 0, 1)
    );
    assert_eq!(c.lost.missing, first - 1);
    // Every frame before the first kept input record of the stream is gone.
    let kept_from = match &records[first as usize - 1..]
        .iter()
        .find(|r| matches!(r, Record::Input { .. }))
    {
        Some(Record::Input { seq, .. }) => *seq,
        _ => unreachable!(),
    };
    assert_eq!(
        c.lost.streams,
        vec![StreamRange {
            source: 0,
            stream: 0xabc,
            from_seq: 0,
            to_seq: kept_from,
        }]
    );
    assert!(c.to_string().contains("--discard-corrupt-log"), "{c}");
    assert!(c.to_string().contains("records 1 to"), "{c}");
    assert_eq!(files(dir.path()), before);

    // Without the durable mark (a log from before the low-water mark) it is refused as well:
    // no full checkpoint covers the missing records.
    std::fs::remove_file(durable::path(dir.path())).unwrap();
    let c = corruption(dir.path(), WalOptions::default());
    assert_eq!(c.why, Why::MissingHead { first, low: None }, "{c}");

    // Accepted explicitly, the log opens with what it holds, and from then on starts there.
    let (_, recovered) = Wal::open(dir.path(), discard()).unwrap();
    assert_eq!(recovered.discarded.unwrap().lost.missing, first - 1);
    assert_eq!(recovered.records.first().unwrap().0, first);
    let (_, recovered) = open(dir.path());
    assert!(recovered.discarded.is_none());
}

#[test]
fn segments_compaction_removed_leave_a_log_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (_, segments) = acknowledged_log(dir.path());
    let options = WalOptions {
        segment_bytes: 200,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).unwrap();
    let keep_from = first_lsn(&segments[2]);
    assert_eq!(wal.compact_before(keep_from).unwrap(), 2);
    drop(wal);
    let (_, recovered) = Wal::open(dir.path(), options.clone()).unwrap();
    assert!(recovered.discarded.is_none());
    assert_eq!(recovered.records.first().unwrap().0, keep_from);
    // The next segment is not covered by the low-water mark.
    std::fs::remove_file(&segments[2]).unwrap();
    let c = corruption(dir.path(), WalOptions::default());
    assert_eq!(
        c.why,
        Why::MissingHead {
            first: first_lsn(&segments[3]),
            low: Some(keep_from)
        }
    );
    assert_eq!(c.lsn, keep_from);

    // A log that keeps no low-water mark: a full checkpoint whose cut covers the missing
    // records justifies them.
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), options).unwrap();
    for epoch in 0..20 {
        wal.append(&Record::Released { epoch }).unwrap();
    }
    let cut = wal.next_lsn();
    wal.append(&Record::Commit {
        checkpoint: 1,
        cut,
        full: true,
        streams: Vec::new(),
    })
    .unwrap();
    wal.sync().unwrap();
    let segments = wal.segments();
    drop(wal);
    let removable: Vec<&PathBuf> = segments
        .iter()
        .zip(&segments[1..])
        .filter(|(_, next)| first_lsn(next) <= cut)
        .map(|(s, _)| s)
        .collect();
    assert!(!removable.is_empty());
    for s in removable {
        std::fs::remove_file(s).unwrap();
    }
    // With the low-water mark the head was not compacted: refused, but the report says the
    // state is in the full checkpoint.
    let c = corruption(dir.path(), WalOptions::default());
    assert_eq!(c.lost.state_kept_by, Some(1), "{c}");
    assert!(c.lost.streams.is_empty());
    assert!(
        c.to_string().contains("full checkpoint 1 holds the state"),
        "{c}"
    );
    std::fs::remove_file(durable::path(dir.path())).unwrap();
    let (_, recovered) = open(dir.path());
    assert!(recovered.discarded.is_none());
}

#[test]
fn a_missing_middle_segment_counts_its_records_and_the_frames_from_the_last_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (records, segments) = acknowledged_log(dir.path());
    std::fs::remove_file(&segments[1]).unwrap();
    let c = corruption(dir.path(), WalOptions::default());
    let kept = first_lsn(&segments[1]) - 1;
    assert_eq!(
        c.lost.missing,
        first_lsn(&segments[2]) - first_lsn(&segments[1])
    );
    assert_eq!(c.lost.records, records.len() as u64 - c.lost.missing - kept);
    assert_eq!(c.lost.streams.len(), 1);
    assert_eq!(
        (c.lost.streams[0].from_seq, c.lost.streams[0].to_seq),
        (stream_end(&records[..kept as usize]), stream_end(&records))
    );
    assert!(c.to_string().contains("missing"), "{c}");
}

#[test]
fn a_log_shorter_than_its_mark_counts_the_missing_records() {
    // The only segment cut inside its header.
    let dir = tempfile::tempdir().unwrap();
    let segment = log_of_samples(dir.path());
    let f = OpenOptions::new().write(true).open(&segment).unwrap();
    f.set_len(5).unwrap();
    drop(f);
    let c = corruption(dir.path(), WalOptions::default());
    assert_eq!(
        c.lost.missing + c.lost.bad_records,
        samples().len() as u64,
        "{c}"
    );
    assert_eq!((c.lost.bytes, c.lost.unreadable_bytes), (5, 5));

    // The newest segment removed.
    let dir = tempfile::tempdir().unwrap();
    let (records, segments) = acknowledged_log(dir.path());
    let last = segments.last().unwrap();
    std::fs::remove_file(last).unwrap();
    let c = corruption(dir.path(), WalOptions::default());
    assert!(matches!(c.why, Why::Missing { .. }), "{c}");
    assert_eq!(
        c.lost.missing,
        records.len() as u64 - (first_lsn(last) - 1),
        "{c}"
    );
    let (_, recovered) = Wal::open(dir.path(), discard()).unwrap();
    assert_eq!(recovered.discarded.unwrap().lost.missing, c.lost.missing);
}

#[test]
fn a_damaged_segment_header_is_corruption_and_can_be_discarded() {
    for at in [0u64, 9] {
        // In a segment between others with good headers.
        let dir = tempfile::tempdir().unwrap();
        let (records, segments) = acknowledged_log(dir.path());
        flip(&segments[2], at);
        let before = files(dir.path());
        let c = corruption(dir.path(), WalOptions::default());
        assert!(matches!(c.why, Why::BadHeader { .. }), "{c}");
        assert_eq!((c.path.clone(), c.offset), (segments[2].clone(), 0));
        let kept = first_lsn(&segments[2]) - 1;
        assert_eq!(c.lsn, kept + 1);
        assert_eq!(c.lost.records, records.len() as u64 - kept, "{c}");
        assert!(c.to_string().contains("--discard-corrupt-log"), "{c}");
        assert_eq!(files(dir.path()), before);
        let (wal, recovered) = Wal::open(dir.path(), discard()).unwrap();
        assert!(recovered.discarded.is_some());
        assert_eq!(recovered.records.len() as u64, kept);
        assert_eq!(wal.next_lsn(), kept + 1);
        drop(wal);
        assert!(open(dir.path()).1.discarded.is_none());

        // In the only segment, with records after it.
        let dir = tempfile::tempdir().unwrap();
        let segment = log_of_samples(dir.path());
        flip(&segment, at);
        let c = corruption(dir.path(), WalOptions::default());
        assert!(matches!(c.why, Why::BadHeader { .. }), "{c}");
        assert_eq!(c.lost.records, samples().len() as u64);
    }
}

#[test]
fn a_log_whose_segments_all_name_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, segments) = acknowledged_log(dir.path());
    for s in &segments {
        let mut data = std::fs::read(s).unwrap();
        data[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        std::fs::write(s, data).unwrap();
    }
    let err = Wal::open(dir.path(), discard()).err().unwrap();
    assert!(matches!(err, WalError::IncompatibleVersion { .. }), "{err}");
}

/// What `f` logs at WARN and above, one entry per event.
fn warnings<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    (out, text.lines().map(str::to_string).collect())
}

#[test]
fn a_discard_is_reported_by_the_caller_alone_and_a_missing_mark_is_warned_of_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_, segments) = acknowledged_log(dir.path());
    flip(&segments[2], HEADER_LEN + 9);
    let (opened, logged) = warnings(|| Wal::open(dir.path(), discard()));
    let (_, recovered) = opened.unwrap();
    let dropped = recovered.discarded.unwrap().dropped();
    assert!(
        !logged
            .iter()
            .any(|l| l.contains("discarded the write-ahead log")),
        "the caller prints {dropped:?}; the log must not print it too: {logged:?}"
    );

    std::fs::remove_file(durable::path(dir.path())).unwrap();
    let (_, logged) = warnings(|| open(dir.path()));
    let missing = logged
        .iter()
        .filter(|l| l.contains("durable mark is missing"))
        .count();
    assert_eq!(missing, 1, "{logged:?}");
    // Opening wrote it again: the next open is quiet.
    let (_, logged) = warnings(|| open(dir.path()));
    assert!(logged.is_empty(), "{logged:?}");
}

#[test]
fn a_lost_head_of_input_alone_counts_the_frames_a_kept_checkpoint_counts() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_bytes: 100,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(dir.path(), options).unwrap();
    // The first segment holds input only; the next ones checkpoints counting it.
    wal.append(&Record::Input {
        source: 0,
        stream: 5,
        seq: 0,
        time: 0,
        frames: vec![vec![b'x'; 100]; 3],
    })
    .unwrap();
    for checkpoint in 1..4 {
        wal.append(&Record::Commit {
            checkpoint,
            cut: 2,
            full: false,
            streams: vec![StreamPosition {
                source: 0,
                stream: 5,
                next_seq: 3,
            }],
        })
        .unwrap();
    }
    wal.sync().unwrap();
    let segments = wal.segments();
    drop(wal);
    assert!(
        segments.len() > 1 && first_lsn(&segments[1]) == 2,
        "{segments:?}"
    );
    std::fs::remove_file(&segments[0]).unwrap();
    let c = corruption(dir.path(), WalOptions::default());
    assert_eq!(c.lost.missing, 1);
    assert_eq!(
        c.lost.streams,
        vec![StreamRange {
            source: 0,
            stream: 5,
            from_seq: 0,
            to_seq: 3,
        }],
        "{c}"
    );
}
