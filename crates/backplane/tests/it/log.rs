//! The embedded log against a real file system: appends, reads, recovery after torn writes
//! and after SIGKILL, segment rolling and trimming.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use backplane::{Entry, LogError, LogOptions, SegmentLog};
use bytes::Bytes;

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "lintas-stream-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn payload(i: u64) -> Bytes {
    Bytes::from(format!("record-{i}"))
}

pub fn open(dir: &Path, segment_bytes: u64) -> SegmentLog {
    SegmentLog::open(dir, LogOptions { segment_bytes }).expect("the log opens")
}

pub async fn read_all(log: &SegmentLog) -> Vec<Entry> {
    log.read(0, usize::MAX, usize::MAX)
        .await
        .expect("the log reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_come_back_in_order_with_consecutive_offsets() {
    let dir = TempDir::new("order");
    let log = open(&dir.0, 1 << 20);
    assert_eq!(
        log.append(vec![payload(0), payload(1)]).await.unwrap(),
        0..2
    );
    assert_eq!(log.append(vec![payload(2)]).await.unwrap(), 2..3);
    assert_eq!(log.end(), 3);
    let got = read_all(&log).await;
    let want: Vec<Entry> = (0..3)
        .map(|i| Entry {
            offset: i,
            payload: payload(i),
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(log.read(1, 1, usize::MAX).await.unwrap(), want[1..2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_syncs_and_lose_nothing() {
    let dir = TempDir::new("concurrent");
    let log = open(&dir.0, 1 << 20);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { (i, log.append(vec![payload(i)]).await.unwrap()) })
        })
        .collect();
    let mut offsets = Vec::new();
    for t in tasks {
        let (i, range) = t.await.unwrap();
        assert_eq!(range.end - range.start, 1);
        offsets.push((range.start, i));
    }
    offsets.sort();
    assert_eq!(
        offsets.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    for e in read_all(&log).await {
        let (_, i) = offsets[e.offset as usize];
        assert_eq!(e.payload, payload(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_continues_after_the_last_record() {
    let dir = TempDir::new("reopen");
    {
        let log = open(&dir.0, 1 << 20);
        log.append((0..5).map(payload).collect()).await.unwrap();
    }
    let log = open(&dir.0, 1 << 20);
    assert_eq!(log.end(), 5);
    assert_eq!(log.append(vec![payload(5)]).await.unwrap(), 5..6);
    assert_eq!(read_all(&log).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_write_at_the_tail_is_cut_off_on_open() {
    let dir = TempDir::new("torn");
    {
        let log = open(&dir.0, 1 << 20);
        log.append((0..3).map(payload).collect()).await.unwrap();
    }
    let segment = dir.0.join("00000000000000000000.log");
    let good_len = std::fs::metadata(&segment).unwrap().len();
    // Half a record, as a crash in the middle of a write leaves it.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[42, 0, 0, 0, 1, 2, 3, 4, 3, 0]);
    std::fs::write(&segment, &bytes).unwrap();

    let log = open(&dir.0, 1 << 20);
    assert_eq!(log.end(), 3);
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), good_len);
    assert_eq!(log.append(vec![payload(3)]).await.unwrap(), 3..4);
    assert_eq!(read_all(&log).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_the_tail_refuses_to_open_and_names_the_place() {
    let dir = TempDir::new("damage");
    {
        let log = open(&dir.0, 1 << 20);
        log.append((0..3).map(payload).collect()).await.unwrap();
    }
    // Segments roll at the first append over 1 byte: segment 0 holds 0..3, segment 3 is new.
    {
        let log = open(&dir.0, 1);
        log.append(vec![payload(3)]).await.unwrap();
    }
    let first = dir.0.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[20] ^= 0xff; // inside record 0's payload
    std::fs::write(&first, &bytes).unwrap();

    let err = SegmentLog::open(&dir.0, LogOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Corrupt {
                position: 0,
                reason: "checksum mismatch",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("00000000000000000000.log: damaged at byte 0 (checksum mismatch)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_and_trimming_deletes_only_fully_consumed_ones() {
    let dir = TempDir::new("trim");
    let log = open(&dir.0, 40);
    for i in 0..10 {
        log.append(vec![payload(i)]).await.unwrap();
    }
    let segments = || std::fs::read_dir(&dir.0).unwrap().count();
    let before = segments();
    assert!(before > 2, "{before} segments");
    assert_eq!(log.trim_before(0, u64::MAX).unwrap(), 0);
    let trimmed = log.trim_before(6, u64::MAX).unwrap();
    assert!(trimmed > 0);
    assert_eq!(segments(), before - trimmed);
    assert!(log.start() <= 6 && log.start() > 0, "start {}", log.start());
    let rest = log.read(0, usize::MAX, usize::MAX).await.unwrap();
    assert_eq!(rest.first().map(|e| e.offset), Some(log.start()));
    assert_eq!(rest.last().map(|e| e.offset), Some(9));
    // Everything reopens from the first kept segment.
    drop(log);
    let log = open(&dir.0, 40);
    assert_eq!(
        (log.end(), read_all(&log).await.len() as u64),
        (10, 10 - rest[0].offset)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_are_woken_when_records_become_durable() {
    let dir = TempDir::new("wake");
    let log = open(&dir.0, 1 << 20);
    let mut end = log.subscribe();
    let writer = log.clone();
    tokio::spawn(async move { writer.append(vec![payload(0)]).await.unwrap() });
    tokio::time::timeout(Duration::from_secs(20), end.wait_for(|&e| e == 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read_all(&log).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_records_are_refused_before_anything_is_written() {
    let dir = TempDir::new("big");
    let log = open(&dir.0, 1 << 20);
    let big = Bytes::from(vec![0u8; backplane::MAX_RECORD + 1]);
    let err = log.append(vec![big]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "record of {} bytes is over the {}-byte limit",
            backplane::MAX_RECORD + 1,
            backplane::MAX_RECORD
        )
    );
    assert_eq!(log.end(), 0);
}

/// Child half of the crash test: appends forever from several tasks, printing each
/// acknowledged offset and its payload's number, until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dir) = std::env::var("LINTAS_CRASH_DIR") else {
        return;
    };
    let log = open(Path::new(&dir), 64 * 1024);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for task in 0..8u64 {
        let (log, tx) = (log.clone(), tx.clone());
        tokio::spawn(async move {
            for n in 0.. {
                let id = task * 1_000_000_000 + n;
                let range = log.append(vec![payload(id)]).await.unwrap();
                let _ = tx.send((range.start, id));
            }
        });
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    while let Some((offset, id)) = rx.recv().await {
        writeln!(out, "{offset} {id}").unwrap();
        out.flush().unwrap();
    }
}

/// SIGKILL in the middle of appending: every acknowledged record is there, intact, at its
/// offset, and the log accepts appends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_record_survives_sigkill() {
    let dir = TempDir::new("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["log::crash_child", "--exact", "--nocapture"])
        .env("LINTAS_CRASH_DIR", &dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut acked = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split(' ');
            if let (Some(Ok(offset)), Some(Ok(id))) = (
                parts.next().map(str::parse::<u64>),
                parts.next().map(str::parse::<u64>),
            ) {
                acked.push((offset, id));
            }
        }
        acked
    });
    // Let it write a few thousand records across several segments, then kill it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&dir.0).map(|d| d.count()).unwrap_or(0) < 4
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let acked = reader.join().unwrap();
    assert!(
        acked.len() > 100,
        "only {} appends acknowledged",
        acked.len()
    );

    let log = open(&dir.0, 64 * 1024);
    let stored = read_all(&log).await;
    assert_eq!(stored.first().map(|e| e.offset), Some(0));
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.offset, i as u64, "offsets must be gapless");
    }
    for (offset, id) in acked {
        let e = &stored[offset as usize];
        assert_eq!(
            e.payload,
            payload(id),
            "acknowledged record {offset} lost or changed"
        );
    }
    let end = log.end();
    assert_eq!(log.append(vec![payload(7)]).await.unwrap(), end..end + 1);
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("the file exists")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_directory_and_segments_are_private() {
    let dir = TempDir::new("modes");
    let log = open(&dir.0.join("stream"), 64);
    for i in 0..4 {
        log.append(vec![payload(i)]).await.unwrap();
    }
    assert_eq!(mode(&dir.0.join("stream")), 0o700);
    let segments: Vec<_> = std::fs::read_dir(dir.0.join("stream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(segments.len() > 1, "{segments:?}");
    for segment in segments {
        assert_eq!(mode(&segment), 0o600, "{}", segment.display());
    }
}
