//! Fuzz targets for the HTTP/1 head and body parsers, called directly (no sockets), so they
//! try thousands of cases a second.
//!
//! - `heads_and_bodies_read_as_the_reference_reads_them`: the requests of
//!   [`testkit::fuzz::http1::case`] go through [`head::parse_request`] and [`Progress`] as
//!   the serve loop uses them, and what lintas would forward is read back by the reference
//!   (hyper's server): every request lintas forwards must read, on its own, as exactly the
//!   request the reference read at that place in the client's bytes (same method, target, headers, body and trailers).
//! - `chunked_framing_ends_where_a_strict_reference_ends_it`: chunked bodies, mutated and fed
//!   in random pieces, against [`reference_chunked`], a strict RFC 9112 §7.1 decoder: when
//!   lintas finds the end, the reference finds it at the same byte, and lintas never waits
//!   for bytes past an end the reference found.
//!
//! Both run for `LINTAS_FUZZ_SECONDS` from `LINTAS_FUZZ_SEED` ([`testkit::fuzz`]).

use rand::Rng;
use rand::rngs::StdRng;
use testkit::fuzz::Fuzz;
use testkit::fuzz::http1::{case, chunked, mutate, pick, reference};

use super::body::Progress;
use super::head::{self, BodyLen, RequestCtx};

/// What lintas does with one client byte string: the bytes it forwards for the requests
/// it accepts, up to the first it refuses or cannot finish.
struct Forwarded {
    /// Each accepted request as sent to the backend: rewritten head, then body bytes.
    requests: Vec<Vec<u8>>,
    /// Why lintas stopped, for failure messages.
    stop: String,
}

/// Feeds `bytes` through the head parser and body progress the way the serve loop does,
/// handing the body to [`Progress::take`] in pieces of random size.
fn through_lintas(rng: &mut StdRng, bytes: &[u8]) -> Forwarded {
    let ctx = RequestCtx {
        peer_ip: "10.9.8.7",
        ..head::tests::test_ctx(None, crate::route::Router::default())
    };
    let mut requests = Vec::new();
    let mut at = 0;
    let stop = loop {
        let head = match head::parse_request(&bytes[at..], &ctx) {
            Ok(head) => head,
            Err(e) => break format!("head: {e:?}"),
        };
        let start = at + head.len;
        let mut progress = Progress::new(head.body);
        let (mut pending, mut fed, mut taken) = (Vec::new(), start, 0);
        let refused = loop {
            if progress.is_done() {
                break None;
            }
            if fed == bytes.len() {
                break Some("body: waiting for more".to_owned());
            }
            let piece = rng.random_range(1..=bytes.len() - fed);
            pending.extend_from_slice(&bytes[fed..fed + piece]);
            fed += piece;
            match progress.take(&pending) {
                Ok(n) => {
                    assert!(n <= pending.len(), "took {n} of {} bytes", pending.len());
                    pending.drain(..n);
                    taken += n;
                }
                Err(e) => break Some(format!("body: {e}")),
            }
        };
        if let Some(why) = refused {
            break why;
        }
        if let BodyLen::Length(n) = head.body {
            assert_eq!(taken as u64, n, "a sized body is exactly its length");
        }
        let mut out = head.out;
        out.extend_from_slice(&bytes[start..start + taken]);
        requests.push(out);
        at = start + taken;
        if !head.keep_alive || head.upgrade {
            break "connection ends".to_owned();
        }
    };
    Forwarded { requests, stop }
}

#[tokio::test]
async fn heads_and_bodies_read_as_the_reference_reads_them() {
    let mut fuzz = Fuzz::from_env("h1 parsers");
    let mut rng = fuzz.rng();
    let (mut forwarded, mut refused) = (0, 0);
    while fuzz.next_case() {
        let bytes = case(&mut rng);
        let lintas = through_lintas(&mut rng, &bytes);
        let expected = reference(&bytes).await;
        // Each forwarded request read on its own: a backend connection may carry any of
        // them, and lintas sends an HTTP/1.0 request without the client's keep-alive.
        let mut got = Vec::new();
        for request in &lintas.requests {
            got.push(reference(request).await);
        }
        let explain = || {
            format!(
                "{}: client sent \"{}\"\nlintas forwarded \"{}\" and stopped ({})\n\
                 the reference read {expected:#?}\nand from lintas's requests {got:#?}",
                fuzz.at(),
                bytes.escape_ascii(),
                lintas.requests.concat().escape_ascii(),
                lintas.stop,
            )
        };
        assert!(got.len() <= expected.len(), "{}", explain());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.as_slice(), std::slice::from_ref(e), "{}", explain());
        }
        forwarded += got.len();
        refused += expected.len() - got.len();
    }
    eprintln!(
        "h1 parsers: {forwarded} requests forwarded, {refused} refused that the reference read"
    );
}

/// How a strict decoder reads a chunked body at the start of some bytes.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// The body ends after this many bytes.
    Ends(usize),
    /// The bytes end before the body does, and nothing so far is wrong.
    NeedsMore,
    /// The framing breaks RFC 9112 §7.1.
    Broken,
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte of a field value: HTAB, SP, VCHAR, obs-text.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || b > 0x20 && b != 0x7f
}

/// The CRLF-ended line at `at`; `NeedsMore` when its end has not arrived, `Broken` for a
/// bare CR or LF.
fn crlf_line(bytes: &[u8], at: usize) -> Result<&[u8], Framing> {
    let rest = &bytes[at..];
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        let cr = rest.iter().position(|&b| b == b'\r');
        return Err(match cr {
            Some(cr) if cr + 1 < rest.len() => Framing::Broken,
            _ => Framing::NeedsMore,
        });
    };
    match rest[..lf].strip_suffix(b"\r") {
        Some(line) if !line.contains(&b'\r') => Ok(line),
        _ => Err(Framing::Broken),
    }
}

/// `chunk-ext` (RFC 9112 §7.1.1): `*( BWS ";" BWS name [ BWS "=" BWS value ] )`, where a
/// value is a token or a quoted-string.
fn valid_extensions(mut v: &[u8]) -> bool {
    let bws = |v: &[u8]| -> usize { v.iter().take_while(|b| matches!(b, b' ' | b'\t')).count() };
    while !v.is_empty() {
        v = &v[bws(v)..];
        let Some(after) = v.strip_prefix(b";") else {
            return false;
        };
        v = &after[bws(after)..];
        let name = v.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return false;
        }
        v = &v[name..];
        let ws = bws(v);
        if v[ws..].first() != Some(&b'=') {
            continue;
        }
        v = &v[ws + 1..];
        v = &v[bws(v)..];
        if let Some(mut q) = v.strip_prefix(b"\"") {
            loop {
                match q {
                    [b'"', rest @ ..] => break v = rest,
                    [b'\\', c, rest @ ..] if is_field_byte(*c) => q = rest,
                    [c, rest @ ..] if is_field_byte(*c) && *c != b'\\' => q = rest,
                    _ => return false,
                }
            }
        } else {
            let token = v.iter().take_while(|&&b| is_tchar(b)).count();
            if token == 0 {
                return false;
            }
            v = &v[token..];
        }
    }
    true
}

/// A strict RFC 9112 §7.1 chunked decoder, written apart from lintas's.
fn reference_chunked(bytes: &[u8]) -> Framing {
    body_end(bytes).map_or_else(|f| f, Framing::Ends)
}

/// Where the chunked body at the start of `bytes` ends, or why that is not known.
fn body_end(bytes: &[u8]) -> Result<usize, Framing> {
    let mut at = 0;
    loop {
        let line = crlf_line(bytes, at)?;
        at += line.len() + 2;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let size = std::str::from_utf8(&line[..digits])
            .ok()
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        let (Some(size), true) = (size, valid_extensions(&line[digits..])) else {
            return Err(Framing::Broken);
        };
        if size == 0 {
            break;
        }
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_add(at))
            .ok_or(Framing::Broken)?;
        if end > bytes.len() {
            return Err(Framing::NeedsMore);
        }
        let crlf = &bytes[end..bytes.len().min(end + 2)];
        if !b"\r\n".starts_with(crlf) {
            return Err(Framing::Broken);
        }
        if crlf.len() < 2 {
            return Err(Framing::NeedsMore);
        }
        at = end + 2;
    }
    loop {
        let line = crlf_line(bytes, at)?;
        at += line.len() + 2;
        if line.is_empty() {
            return Ok(at);
        }
        let name = line.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0
            || line.get(name) != Some(&b':')
            || !line[name + 1..].iter().all(|&b| is_field_byte(b))
        {
            return Err(Framing::Broken);
        }
    }
}

#[test]
fn the_reference_decoder_reads_the_rfc_examples() {
    let cases: [(&[u8], Framing); 8] = [
        (b"5\r\nhello\r\n0\r\n\r\nNEXT", Framing::Ends(15)),
        (
            b"5 ; a = \"q\\\"\" ;b\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
            Framing::Ends(40),
        ),
        (b"5\r\nhello\r\n0\r\n", Framing::NeedsMore),
        (b"5\r\nhel", Framing::NeedsMore),
        (b"5\nhello\r\n0\r\n\r\n", Framing::Broken),
        (b"5\r\nhelloX\r\n", Framing::Broken),
        (b"\r\n", Framing::Broken),
        (b"0\r\n X: 1\r\n\r\n", Framing::Broken),
    ];
    for (bytes, want) in cases {
        assert_eq!(reference_chunked(bytes), want, "{}", bytes.escape_ascii());
    }
}

#[test]
fn chunked_framing_ends_where_a_strict_reference_ends_it() {
    let mut fuzz = Fuzz::from_env("h1 chunked");
    let mut rng = fuzz.rng();
    let (mut ended, mut refused) = (0, 0);
    while fuzz.next_case() {
        let mut bytes = chunked(&mut rng);
        let tails: [&[u8]; 4] = [b"", b"GET / HTTP/1.1\r\n\r\n", b"\r\n", b"0\r\n\r\n"];
        let tail: &&[u8] = pick(&mut rng, &tails);
        bytes.extend_from_slice(tail);
        if rng.random_bool(0.8) {
            mutate(&mut rng, &mut bytes);
        }
        let want = reference_chunked(&bytes);
        let mut progress = Progress::new(BodyLen::Chunked);
        let (mut pending, mut fed, mut taken) = (Vec::new(), 0, 0);
        let got = loop {
            if progress.is_done() {
                break Framing::Ends(taken);
            }
            if fed == bytes.len() {
                break Framing::NeedsMore;
            }
            let piece = rng.random_range(1..=bytes.len() - fed);
            pending.extend_from_slice(&bytes[fed..fed + piece]);
            fed += piece;
            match progress.take(&pending) {
                Ok(n) => {
                    pending.drain(..n);
                    taken += n;
                }
                Err(_) => break Framing::Broken,
            }
        };
        let explain = || format!("{}: body \"{}\"", fuzz.at(), bytes.escape_ascii());
        match (&got, &want) {
            // lintas is stricter than the RFC in places (line and size limits, framing
            // fields in trailers): refusing what the reference reads is allowed.
            (Framing::Broken, _) => refused += 1,
            (Framing::Ends(_), _) => {
                assert_eq!(got, want, "lintas ended the body elsewhere: {}", explain());
                ended += 1;
            }
            (Framing::NeedsMore, Framing::Ends(_) | Framing::Broken) => {
                panic!(
                    "lintas waits for bytes past the framing ({want:?}): {}",
                    explain()
                )
            }
            (Framing::NeedsMore, Framing::NeedsMore) => {}
        }
    }
    eprintln!("h1 chunked: {ended} bodies ended as the reference ended them, {refused} refused");
}
