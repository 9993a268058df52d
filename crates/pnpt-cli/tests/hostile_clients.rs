//! The service against slow, stalled, idle and too many clients, on real loopback sockets:
//! good requests keep being answered throughout, every bad client is turned away within its
//! deadline, and `/metrics` counts each refusal by reason. Every wait is bounded (generous
//! bounds that only prove "not hung"; nothing asserts a duration).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pnpt_cli::serve::{ServeOptions, Server};
use serde_json::Value;

mod common;

use common::fixture;

fn start(options: ServeOptions) -> Server {
    Server::start(fixture().detector.clone(), "127.0.0.1:0", options).unwrap()
}

fn metrics(addr: SocketAddr) -> String {
    let r = minreq::get(format!("http://{addr}/metrics")).with_timeout(60).send().unwrap();
    r.as_str().unwrap().to_string()
}

/// The value of the metric line that starts with `name` (`pnpt_refusals_total{reason="busy"}`).
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = metrics(addr);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn refusals(addr: SocketAddr, reason: &str) -> u64 {
    metric(addr, &format!("pnpt_refusals_total{{reason=\"{reason}\"}}"))
}

/// Waits (up to 60 s) until `metric` reaches `want`.
fn wait_for(addr: SocketAddr, name: &str, want: u64) {
    let t0 = Instant::now();
    while metric(addr, name) < want {
        assert!(t0.elapsed() < Duration::from_secs(60), "{name} never reached {want}: {}", metrics(addr));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A good predict request on a connection of its own: 200 with a score.
fn good_request(addr: SocketAddr) {
    let r = minreq::post(format!("http://{addr}/v1/predict"))
        .with_header("Content-Type", "image/png")
        .with_body(fixture().good_png.clone())
        .with_timeout(60)
        .send()
        .unwrap();
    let v: Value = serde_json::from_str(r.as_str().unwrap()).unwrap();
    assert_eq!(r.status_code, 200, "{v}");
    assert!(v["score"].is_number(), "{v}");
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

fn predict_head(addr: SocketAddr, length: usize) -> String {
    format!("POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n\r\n")
}

/// Everything the server sends until it closes (or 60 s pass).
fn read_answer(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !out.is_empty() => break,
            Err(e) => panic!("reading the answer: {e} (so far: {})", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server closed `s` (within 60 s); false while it stays open for `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

/// 40 clients upload one byte every 200 ms on a service with one worker and no queue: while
/// they upload, every good request is answered; each slow client gets 408 at its deadline.
#[test]
fn slow_uploads_do_not_starve_good_requests() {
    // 10 s: time enough for the good requests below on a busy machine, all within the storm.
    let s = start(ServeOptions::default().with_workers(1).with_queue(0).with_body_timeout_s(10.0));
    let addr = s.addr;
    let slow: Vec<std::thread::JoinHandle<String>> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = connect(addr);
                c.write_all(predict_head(addr, 10_000).as_bytes()).unwrap();
                c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                let t0 = Instant::now();
                let mut answer = Vec::new();
                let mut buf = [0u8; 4096];
                // One byte, then whatever the server said; until it closes or 60 s pass.
                while t0.elapsed() < Duration::from_secs(60) {
                    let _ = c.write_all(b"\x89");
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                String::from_utf8_lossy(&answer).into_owned()
            })
        })
        .collect();
    wait_for(addr, "pnpt_uploads_in_progress", 40);
    // The storm is on: good requests are answered, one after the other.
    for _ in 0..10 {
        good_request(addr);
    }
    assert!(metric(addr, "pnpt_uploads_in_progress") > 0, "the slow uploads ended before the good requests");
    assert_eq!(refusals(addr, "busy"), 0);
    for h in slow {
        let answer = h.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "slow upload answered: {answer}");
        assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    }
    assert_eq!(refusals(addr, "body_timeout"), 40);
    assert_eq!(metric(addr, "pnpt_uploads_in_progress"), 0);
    good_request(addr);
    s.stop().unwrap();
}

/// A request that declares 200 MB and then stalls is answered 413 at once, before any of its
/// body is read; the service goes on.
#[test]
fn a_stalled_oversized_upload_gets_413_at_once() {
    let s = start(ServeOptions::default());
    let mut c = connect(s.addr);
    c.write_all(predict_head(s.addr, 200_000_000).as_bytes()).unwrap();
    c.write_all(b"\x89PNG").unwrap();
    let answer = read_answer(&mut c);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(answer.contains("\"code\":\"body_too_large\"") && answer.contains("200000000"), "{answer}");
    assert_eq!(refusals(s.addr, "body_too_large"), 1);
    good_request(s.addr);
    s.stop().unwrap();
}

/// 200 idle connections and 5 that send half a request head are closed at the header
/// deadline, each counted under its reason; good requests are answered meanwhile.
#[test]
fn idle_and_half_sent_heads_are_closed_at_the_deadline() {
    let s = start(ServeOptions::default().with_header_timeout_s(1.0));
    let addr = s.addr;
    let mut idle: Vec<TcpStream> = (0..200).map(|_| connect(addr)).collect();
    let mut half: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut c = connect(addr);
            c.write_all(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Le").unwrap();
            c
        })
        .collect();
    good_request(addr);
    for (i, c) in idle.iter_mut().chain(half.iter_mut()).enumerate() {
        assert!(closed_within(c, Duration::from_secs(60)), "connection {i} still open after 60 s");
    }
    assert_eq!(refusals(addr, "header_timeout"), 5);
    assert!(refusals(addr, "idle_timeout") >= 200, "{}", metrics(addr));
    // An idle keep-alive connection after its answer is closed too.
    let mut kept = connect(addr);
    let body = &fixture().good_png;
    kept.write_all(predict_head(addr, body.len()).as_bytes()).unwrap();
    kept.write_all(body).unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(closed_within(&mut kept, Duration::from_secs(60)), "kept-alive connection still open after 60 s");
    good_request(addr);
    s.stop().unwrap();
}

/// At the connection cap a new connection closes the one idle longest; when every connection
/// is busy it is answered 503 `connection_limit` instead.
#[test]
fn at_the_cap_the_oldest_idle_connection_makes_room() {
    let s = start(ServeOptions::default().with_max_connections(10).with_header_timeout_s(120.0));
    let addr = s.addr;
    // Accepted in the order they connect, each the newest idle one when the next comes.
    let mut conns: Vec<TcpStream> = (0..15).map(|_| connect(addr)).collect();
    // Its connection comes after the 15, so it is answered after they were all accepted: the
    // last 5 of them closed the first 5, and it closes the 6th.
    good_request(addr);
    for (i, c) in conns.iter_mut().enumerate().take(6) {
        assert!(closed_within(c, Duration::from_secs(60)), "connection {i} of 15 still open");
    }
    let newest = conns.last_mut().unwrap();
    assert!(!closed_within(newest, Duration::from_millis(300)), "the newest connection was closed");
    // (The good request's own connection may have been the 10th when this one came.)
    assert!((6..=7).contains(&refusals(addr, "idle_evicted")), "{}", metrics(addr));
    drop(conns);
    s.stop().unwrap();

    // Every connection busy (uploading; `100 Continue` says its body is being read): a new
    // one is answered 503.
    let s = start(ServeOptions::default().with_max_connections(2));
    let busy: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = connect(s.addr);
            let head = predict_head(s.addr, 1000).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
            c.write_all(head.as_bytes()).unwrap();
            let mut line = [0u8; 25];
            c.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"HTTP/1.1 100 Continue\r\n\r\n");
            c
        })
        .collect();
    let mut c = connect(s.addr);
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answer = read_answer(&mut c);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"connection_limit\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    drop(busy);
    s.stop().unwrap();
}

/// Options that cannot work are refused before the service starts.
#[test]
fn options_that_cannot_work_are_refused() {
    for (options, what) in [
        (ServeOptions::default().with_header_timeout_s(0.0), "header_timeout_s"),
        (ServeOptions::default().with_body_timeout_s(f64::NAN), "body_timeout_s"),
        (ServeOptions::default().with_max_connections(0), "max_connections"),
        (ServeOptions::default().with_max_buffered(1 << 20), "max_buffered"),
    ] {
        let err = Server::start(fixture().detector.clone(), "127.0.0.1:0", options).unwrap_err().to_string();
        assert!(err.contains(what), "{what}: {err}");
    }
}
