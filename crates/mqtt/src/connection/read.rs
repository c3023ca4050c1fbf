//! Reading from the client without a read buffer per connection.
//!
//! Most connections are idle most of the time, and a buffer kept ready for their next read
//! would be most of what they cost. So every read goes into one scratch buffer of the
//! worker thread and what came is appended at once to the connection's `input`, which is
//! allocated to fit it: an idle connection holds no buffer at all, and a busy one still
//! reads up to [`SCRATCH_BYTES`] per system call. The copy costs less than the read; the
//! decoder slices packets out of `input` without copying again.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// The most one read takes: the scratch buffer of each thread.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    /// The thread's scratch buffer; borrowed only within one poll, never across an await.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Reads what `reader` has and appends it to `input`; `Ok(0)` at the end of the stream.
/// Cancel-safe: bytes are appended in the poll that reads them.
pub(super) async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    input: &mut BytesMut,
) -> io::Result<usize> {
    poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(scratch);
            ready!(Pin::new(&mut *reader).poll_read(cx, &mut buf))?;
            input.extend_from_slice(buf.filled());
            Poll::Ready(Ok(buf.filled().len()))
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn reads_append_to_what_is_pending_in_a_buffer_of_their_size() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let mut input = BytesMut::new();
        client.write_all(b"abc").await.expect("write");
        assert_eq!(read_some(&mut server, &mut input).await.expect("read"), 3);
        assert_eq!(
            input.capacity(),
            8,
            "Vec's smallest allocation, not a read buffer"
        );
        let big = vec![7; SCRATCH_BYTES + 10];
        client.write_all(&big).await.expect("write");
        assert_eq!(
            read_some(&mut server, &mut input).await.expect("read"),
            SCRATCH_BYTES
        );
        assert_eq!(read_some(&mut server, &mut input).await.expect("read"), 10);
        assert_eq!(&input[..3], b"abc");
        assert_eq!(&input[3..], &big[..]);
        drop(client);
        assert_eq!(read_some(&mut server, &mut input).await.expect("eof"), 0);
    }
}
