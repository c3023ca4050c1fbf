//! Slow and silent clients on the admin listener: they must not lock the operator out.

use std::time::Duration;

use testkit::PATIENCE;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::Admin;

/// Regression: 256 clients each trickling a request head took every connection the admin
/// listener had (256), and their trickle kept pushing its idle timeout back, so the
/// operator could not get in. Now the cap is 1024 and each head must be whole within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_lock_the_operator_out_and_are_cut_at_the_head_deadline() {
    let admin = Admin::start().await;
    let addr = admin.base.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..256 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /api/thing HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let trickle = tokio::spawn(async move {
        // One byte a second each, until the server closes them; how many were closed.
        let mut closed = vec![false; slow.len()];
        let started = tokio::time::Instant::now();
        while closed.iter().any(|c| !c) && started.elapsed() < PATIENCE {
            for (s, closed) in slow.iter_mut().zip(closed.iter_mut()) {
                if !*closed && s.write_all(b"X").await.is_err() {
                    *closed = true;
                }
                let mut probe = [0u8; 256];
                if !*closed && s.try_read(&mut probe).is_ok() {
                    *closed = true;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (closed.iter().filter(|c| **c).count(), slow)
    });

    let reply = tokio::time::timeout(Duration::from_secs(4), admin.get("/api/thing"))
        .await
        .expect("the operator waited behind slow clients");
    assert_eq!(reply.status, 200, "{}", reply.body);

    let (closed, _slow) = trickle.await.unwrap();
    assert_eq!(closed, 256, "slow heads still open after {PATIENCE:?}");
}
