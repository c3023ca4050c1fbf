//! Password guessing: it must not burn the node's CPU and memory, must slow down per client
//! address, and must not keep the real administrator out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;

use testkit::basic;

use crate::{Admin, PASSWORD, USER};

/// Guessing clients run at once, as in the report that found the problem.
const GUESSERS: u8 = 8;

/// One request from `from` to `addr` with `authorization`; waits for the answer at most
/// `hang_up_after`, then closes. Returns the status line's code when one came.
async fn raw_get(
    from: IpAddr,
    addr: SocketAddr,
    authorization: &str,
    hang_up_after: Duration,
) -> Option<u16> {
    let sock = TcpSocket::new_v4().ok()?;
    sock.bind(SocketAddr::new(from, 0)).ok()?;
    let mut stream = sock.connect(addr).await.ok()?;
    let req = format!(
        "GET /api/thing HTTP/1.1\r\nhost: admin\r\nauthorization: {authorization}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    tokio::time::timeout(hang_up_after, stream.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Starts `GUESSERS` clients sending wrong passwords until `stop`, each request from a new
/// loopback address (an attacker with many addresses), each hanging up after `hang_up_after`.
/// Returns the count of guesses sent.
fn start_guessing(
    admin: &Admin,
    hang_up_after: Duration,
    stop: &CancellationToken,
) -> Arc<AtomicUsize> {
    let addr: SocketAddr = admin
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the admin base is an address");
    let sent = Arc::new(AtomicUsize::new(0));
    for client in 0..GUESSERS {
        let (sent, stop) = (sent.clone(), stop.clone());
        tokio::spawn(async move {
            let wrong = basic(USER, &format!("guess-{client}"));
            for n in 0u32.. {
                let from = IpAddr::V4(Ipv4Addr::new(
                    127,
                    1 + client,
                    (n / 250) as u8,
                    (n % 250) as u8 + 1,
                ));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = raw_get(from, addr, &wrong, hang_up_after) => {}
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    sent
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_login_gets_through_while_others_guess() {
    let admin = Admin::start().await;
    let stop = CancellationToken::new();
    let sent = start_guessing(&admin, Duration::from_millis(20), &stop);
    testkit::wait_until("guesses to be under way", testkit::PATIENCE, || async {
        sent.load(Ordering::Relaxed) >= 4 * usize::from(GUESSERS)
    })
    .await;
    let started = Instant::now();
    let r = admin.get("/api/thing").await;
    let took = started.elapsed();
    stop.cancel();
    assert_eq!(r.status, 200, "{}", r.body);
    eprintln!("correct login under guessing answered in {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "a correct login took {took:?} while others guessed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_leaves_memory_bounded() {
    // Measured in a process of its own, so other tests running beside it (`cargo test` runs
    // a binary's tests in threads) do not count.
    const CHILD: &str = "LINTAS_TEST_RSS_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "guessing::guessing_leaves_memory_bounded",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        eprintln!("{text}");
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        return;
    }
    let admin = Admin::start().await;
    assert_eq!(admin.get("/api/thing").await.status, 200);
    let before = rss();
    let stop = CancellationToken::new();
    let sent = start_guessing(&admin, Duration::from_millis(5), &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let during = rss();
    // A fresh correct login queues behind whatever verification is still running, so once it
    // answers the guesses' work is done.
    let fresh = basic(USER, PASSWORD).replacen("Basic", "basic", 1);
    let r = admin
        .send(Method::GET, "/api/thing", &[("authorization", &fresh)], "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let after = rss();
    let mib = |b: u64| b / (1024 * 1024);
    eprintln!(
        "{} guesses in 3 s: RSS {} MiB before, {} MiB at the end of guessing, {} MiB after",
        sent.load(Ordering::Relaxed),
        mib(before),
        mib(during),
        mib(after)
    );
    assert!(
        after.saturating_sub(before) < 200 * 1024 * 1024
            && during.saturating_sub(before) < 200 * 1024 * 1024,
        "RSS grew from {} MiB to {} MiB (during) / {} MiB (after)",
        mib(before),
        mib(during),
        mib(after)
    );
}

#[tokio::test]
async fn failures_from_one_address_back_off_with_429() {
    let admin = Admin::start().await;
    // Logged in before the guessing starts: the remembered login keeps working.
    assert_eq!(admin.get("/api/thing").await.status, 200);
    let wrong = basic(USER, "wrong");
    for attempt in 1..=6 {
        let r = admin
            .send(Method::GET, "/api/thing", &[("authorization", &wrong)], "")
            .await;
        assert_eq!(r.status, 401, "attempt {attempt}: {}", r.body);
    }
    let r = admin
        .send(Method::GET, "/api/thing", &[("authorization", &wrong)], "")
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(
        r.body,
        r#"{"error":"too many failed logins from this address; try again in 1 s"}"#
    );
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(admin.get("/api/thing").await.status, 200);
}
