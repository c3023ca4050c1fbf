//! The segment log's recovery under random damage: random appends (some with idempotency
//! keys) into small segments, then the last segment's tail truncated, overwritten with
//! garbage or bit-flipped at a random point, then the log reopened. Every append that was
//! complete before the damage point must be intact; nothing else may come back except a
//! prefix of the append the damage cut into (none of it if that append had a key); a key
//! comes back exactly when its records do; and the log takes appends again.
//!
//! Runs as every fuzz target does ([`testkit::fuzz::Fuzz`]): for `LINTAS_FUZZ_SECONDS` from
//! `LINTAS_FUZZ_SEED`, printed with any failure.

use std::path::{Path, PathBuf};

use backplane::{LogOptions, Mark, SegmentLog};
use bytes::Bytes;
use rand::Rng;
use rand::rngs::StdRng;
use testkit::TempDir;
use testkit::fuzz::Fuzz;

/// One append as the fuzzer made it.
struct Made {
    records: Vec<Bytes>,
    key: Option<String>,
    first: u64,
    /// The segment it went to and the segment's length once it was durable.
    segment: PathBuf,
    end_pos: u64,
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    names.sort();
    names.pop().unwrap()
}

async fn one_case(rng: &mut StdRng, case: &str) {
    let dir = TempDir::new();
    let options = LogOptions {
        segment_bytes: rng.random_range(64..4096),
    };
    let log = SegmentLog::open(dir.path(), options).unwrap();
    let mut made = Vec::new();
    for n in 0..rng.random_range(1..40u32) {
        let records: Vec<Bytes> = (0..rng.random_range(1..5))
            .map(|_| {
                let len = rng.random_range(0..300);
                Bytes::from((0..len).map(|_| rng.random()).collect::<Vec<u8>>())
            })
            .collect();
        let key = rng.random_bool(0.4).then(|| format!("key-{n}"));
        let range = match &key {
            Some(k) => {
                let mark = Mark {
                    key: k.clone(),
                    first: 0,
                    count: 0,
                    body_hash: u64::from(n),
                    at_ms: 1,
                };
                log.append_marked(records.clone(), mark).await.unwrap()
            }
            None => log.append(records.clone()).await.unwrap(),
        };
        let segment = last_segment(dir.path());
        let end_pos = std::fs::metadata(&segment).unwrap().len();
        made.push(Made {
            records,
            key,
            first: range.start,
            segment,
            end_pos,
        });
    }
    drop(log);
    // Damage the last segment from a random point on.
    let segment = last_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    if bytes.is_empty() {
        return;
    }
    let at = rng.random_range(0..bytes.len());
    match rng.random_range(0..3) {
        0 => bytes.truncate(at),
        1 => {
            let garbage = rng.random_range(1..64);
            bytes.truncate(at);
            bytes.extend((0..garbage).map(|_| rng.random::<u8>()));
        }
        _ => bytes[at] ^= 1 << rng.random_range(0..8),
    }
    std::fs::write(&segment, &bytes).unwrap();

    let (log, marks) = SegmentLog::open_with_marks(dir.path(), options).unwrap_or_else(|e| {
        panic!("{case}: damage at byte {at} of the last segment refused the open: {e}")
    });
    let intact = |m: &Made| m.segment != segment || m.end_pos <= at as u64;
    let safe: u64 = made
        .iter()
        .filter(|m| intact(m))
        .map(|m| m.records.len() as u64)
        .sum();
    let end = log.end();
    let cut = made.iter().find(|m| !intact(m));
    let most = safe
        + cut
            .filter(|m| m.key.is_none())
            .map_or(0, |m| m.records.len() as u64);
    assert!(
        (safe..=most).contains(&end),
        "{case}: damage at byte {at}: end {end}, expected {safe}..={most}"
    );
    let stored = log.read(0, usize::MAX, usize::MAX).await.unwrap();
    assert_eq!(stored.len() as u64, end);
    for m in &made {
        for (i, r) in m.records.iter().enumerate() {
            let offset = m.first + i as u64;
            if offset < end {
                assert_eq!(
                    stored[offset as usize].payload, *r,
                    "{case}: record {offset} changed (damage at byte {at})"
                );
            }
        }
    }
    let remembered: Vec<&str> = marks.iter().map(|m| m.key.as_str()).collect();
    let expected: Vec<&str> = made
        .iter()
        .filter(|m| m.first + (m.records.len() as u64) <= end)
        .filter_map(|m| m.key.as_deref())
        .collect();
    assert_eq!(
        remembered, expected,
        "{case}: keys come back exactly with their records (damage at byte {at})"
    );
    for (mark, m) in marks.iter().zip(made.iter().filter(|m| m.key.is_some())) {
        assert_eq!(
            (mark.first, mark.count as usize),
            (m.first, m.records.len())
        );
    }
    assert_eq!(
        log.append(vec![Bytes::from_static(b"after")])
            .await
            .unwrap(),
        end..end + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_keeps_every_durable_record_and_returns_no_garbage() {
    let mut fuzz = Fuzz::from_env("segment log recovery");
    let mut rng = fuzz.rng();
    while fuzz.next_case() {
        one_case(&mut rng, &fuzz.at()).await;
    }
}
