//! The service and `pnpt predict` with real parts: a tiny detector fitted once on synthetic
//! data (shared by every test of this binary), the service on a loopback port driven over HTTP,
//! the `pnpt` binary as a subprocess, and the web page in headless Chromium.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pnpt::backend::Cpu;
use pnpt::data::image::{self, DynamicImage, ImageFormat, Rgb, RgbImage};
use pnpt::model::Detector;
use pnpt_cli::serve::{ServeOptions, Server};
use serde_json::Value;

mod common;

use common::{fixture, pnpt_bin};

fn start(options: ServeOptions) -> Server {
    Server::start(fixture().detector.clone(), "127.0.0.1:0", options).unwrap()
}

fn url(s: &Server, path: &str) -> String {
    format!("http://{}{path}", s.addr)
}

/// GET `path`: status and body.
fn get(s: &Server, path: &str) -> (u16, String) {
    let r = minreq::get(url(s, path)).with_timeout(60).send().unwrap();
    (r.status_code, r.as_str().unwrap().to_string())
}

/// Waits (up to 60 s) until `/metrics` of the service at `addr` has the line `want` (a gauge
/// and its value).
fn wait_metric(addr: std::net::SocketAddr, want: &str) {
    let want = format!("{want}\n");
    let t0 = Instant::now();
    loop {
        let metrics = minreq::get(format!("http://{addr}/metrics")).with_timeout(60).send().unwrap();
        if metrics.as_str().unwrap().contains(&want) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "never {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// POSTs `body` to `/v1/predict?query` with `content_type`; the response.
fn post_as(s: &Server, query: &str, content_type: &str, body: Vec<u8>) -> minreq::Response {
    minreq::post(url(s, &format!("/v1/predict?{query}")))
        .with_header("Content-Type", content_type)
        .with_body(body)
        .with_timeout(60)
        .send()
        .unwrap()
}

/// POSTs a PNG body to `/v1/predict?query`; status and JSON.
fn post(s: &Server, query: &str, body: Vec<u8>) -> (u16, Value) {
    let r = post_as(s, query, "image/png", body);
    (r.status_code, json(r.as_str().unwrap()))
}

fn assert_good_request_succeeds(s: &Server) {
    let (status, v) = post(s, "", fixture().good_png.clone());
    assert_eq!(status, 200, "{v}");
    assert!(v["score"].is_number(), "{v}");
}

fn png_bytes(img: DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn detector_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Detector<Cpu>>();
    // Scores from 4 threads at once equal the single-threaded score.
    let f = fixture();
    let image = image::load_from_memory(&f.good_png).unwrap();
    let one = std::slice::from_ref(&image);
    let alone = f.detector.predict(one).unwrap()[0].score;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| f.detector.predict(one).unwrap()[0].score)).collect();
        for h in handles {
            assert!((h.join().unwrap() - alone).abs() < 1e-5);
        }
    });
}

#[test]
fn library_api_thresholds_masks_and_unknown_products() {
    let f = fixture();
    let detector = Detector::<Cpu>::load(&f.dir, &Default::default()).unwrap();
    let t = detector.post().thresholds();
    assert_eq!(t.pixel.len(), 2, "pixel thresholds per category: {t:?}");
    assert_eq!(t.retrieval.len(), 2, "retrieval limits per category: {t:?}");
    let image = image::load_from_memory(&f.good_png).unwrap();
    let one = std::slice::from_ref(&image);
    let p = detector.predict(one).unwrap().remove(0);
    assert!(!p.unknown_category, "a normal image of a trained product: {p:?}");
    let mask = p.defect_mask().unwrap();
    assert_eq!(mask.len(), 64 * 64);
    assert_eq!(p.normalized_score.unwrap(), p.score / p.threshold.unwrap());
    // Forced category: the other class is used and named.
    let other = detector.categories().iter().find(|c| **c != p.category).unwrap().clone();
    let q = detector.predict_as(one, &other).unwrap().remove(0);
    assert_eq!(q.category, other);
    assert!(q.retrieval_distance >= p.retrieval_distance);
    assert!(detector.predict_as(one, "nope").unwrap_err().to_string().contains("unknown category `nope`"));
    // A product never trained on is flagged; the trained categories' test images are not.
    let foreign = pnpt::data::decode(&f.foreign).unwrap();
    let fp = detector.predict(&[foreign]).unwrap().remove(0);
    eprintln!(
        "foreign: distance {} (limit {:?})",
        fp.retrieval_distance,
        detector.post().thresholds().retrieval.get(&fp.category)
    );
    assert!(fp.unknown_category, "weave image retrieved as {} at {}", fp.category, fp.retrieval_distance);
    for path in &f.test_images {
        let p = detector.predict(&[pnpt::data::decode(path).unwrap()]).unwrap().remove(0);
        assert!(
            !p.unknown_category,
            "{}: distance {} > limit {:?}",
            path.display(),
            p.retrieval_distance,
            detector.post().thresholds().retrieval.get(&p.category)
        );
    }
    // Thresholds a caller sets are the ones that decide.
    let (model, mut post) = detector.into_parts();
    let mut t = post.category_thresholds(&p.category).unwrap();
    t.image = Some(p.score - 1.0);
    t.retrieval = Some(0.0);
    post.set_category_thresholds(&p.category, t).unwrap();
    t.image = Some(f32::NAN);
    assert!(post.set_category_thresholds(&p.category, t).is_err());
    assert!(post.set_category_thresholds("nope", t).is_err());
    let detector = Detector::new(model, post).unwrap();
    let r = detector.predict(one).unwrap().remove(0);
    assert!(r.is_anomalous && r.unknown_category);
}

#[test]
fn health_info_page_and_not_found() {
    let s = start(ServeOptions::default());
    let (status, h) = get(&s, "/healthz");
    assert_eq!((status, json(&h)["status"].as_str()), (200, Some("ok")));
    let info = json(&get(&s, "/v1/info").1);
    let names: Vec<&str> = info["categories"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bottle", "screw"]);
    assert!(info["categories"][0]["pixel_threshold"].is_number(), "{info}");
    let page = get(&s, "/").1;
    assert!(page.contains("<input id=\"file\" type=\"file\""), "{page}");
    let (status, body) = get(&s, "/nope");
    assert_eq!((status, json(&body)["code"].as_str()), (404, Some("not_found")));
    s.stop().unwrap();
}

#[test]
fn predict_raw_multipart_category_and_map() {
    let f = fixture();
    let s = start(ServeOptions::default());
    let (status, raw) = post(&s, "", f.good_png.clone());
    assert_eq!(status, 200, "{raw}");
    for key in [
        "category",
        "score",
        "threshold",
        "verdict",
        "ms",
        "unknown_category",
        "normalized_score",
        "retrieval_distance",
    ] {
        assert!(!raw[key].is_null(), "{key} missing: {raw}");
    }
    assert!(raw.get("overlay_png").is_none());
    assert_eq!(raw["category_given"], false);
    let (status, with_map) = post(&s, "map=png", f.good_png.clone());
    assert_eq!(status, 200);
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD.decode(with_map["overlay_png"].as_str().unwrap()).unwrap();
    let overlay = image::load_from_memory(&png).unwrap();
    assert_eq!((overlay.width(), overlay.height()), (256, 256));
    // Multipart gives the same score as the raw upload.
    let boundary = "pnpt-test-boundary";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").into_bytes();
    body.extend_from_slice(&f.good_png);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = post_as(&s, "", &format!("multipart/form-data; boundary={boundary}"), body);
    assert_eq!(r.status_code, 200);
    let multi = json(r.as_str().unwrap());
    assert_eq!(multi["score"], raw["score"]);
    // A given category is used.
    let (status, forced) = post(&s, "category=screw", f.good_png.clone());
    assert_eq!(status, 200);
    assert_eq!((forced["category"].as_str(), forced["category_given"].as_bool()), (Some("screw"), Some(true)));
    s.stop().unwrap();
}

/// One bad request per limit, each followed by a good request that still succeeds.
#[test]
fn every_limit_is_a_clear_4xx_and_the_service_goes_on() {
    let f = fixture();
    let s = start(ServeOptions::default().with_max_body(256 << 10).with_max_side(2048));
    let tiny = |w, h| png_bytes(DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb([9, 9, 9]))));
    let mut truncated = f.good_png.clone();
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("body over the limit", "", vec![0x89; 300 << 10], 413, "body_too_large"),
        ("image wider than the limit", "", tiny(4096, 1), 413, "image_too_large"),
        ("not an image", "", b"hello, this is text and not a picture".to_vec(), 415, "not_an_image"),
        ("truncated PNG", "", truncated, 422, "undecodable_image"),
        ("empty body", "", Vec::new(), 400, "empty_body"),
        ("unknown category", "category=teapot", f.good_png.clone(), 400, "unknown_category"),
        ("bad map value", "map=jpeg", f.good_png.clone(), 400, "bad_query"),
    ];
    for (what, query, body, want, code) in cases {
        let (status, v) = post(&s, query, body);
        assert_eq!(status, want, "{what}: {v}");
        assert_eq!(v["code"], code, "{what}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {v}");
        assert_good_request_succeeds(&s);
    }
    // The default limit is 8192 x 8192: a 9000 x 1 image is refused from its header.
    let d = start(ServeOptions::default());
    let (status, v) = post(&d, "", tiny(9000, 1));
    assert_eq!((status, v["code"].as_str()), (413, Some("image_too_large")), "{v}");
    assert_good_request_succeeds(&d);
    // ... and the body limit 32 MiB.
    let (status, v) = post(&d, "", vec![0x89; 33 << 20]);
    assert_eq!((status, v["code"].as_str()), (413, Some("body_too_large")), "{v}");
    assert_good_request_succeeds(&d);
    // A malformed multipart body.
    let r = post_as(&s, "", "multipart/form-data; boundary=xyz", b"--xyz\r\nno headers end".to_vec());
    assert_eq!((r.status_code, json(r.as_str().unwrap())["code"].as_str()), (400, Some("bad_multipart")));
    assert_good_request_succeeds(&s);
}

/// With one worker and no queue, a request that arrives while another is scored is answered
/// 503 at once (its body read first: a body never waits for a worker).
#[test]
fn full_queue_answers_503_with_retry_after() {
    let f = fixture();
    let s = start(ServeOptions::default().with_workers(1).with_queue(0));
    // A large image with its overlay keeps the worker for a while (seconds here); should it
    // be scored before the second request comes, the test tries again.
    let big = png_bytes(DynamicImage::ImageRgb8(RgbImage::from_pixel(6000, 6000, Rgb([90, 90, 90]))));
    let mut refused = None;
    for _ in 0..5 {
        let (addr, big) = (s.addr, big.clone());
        let slow = std::thread::spawn(move || {
            let r = minreq::post(format!("http://{addr}/v1/predict?map=png")).with_body(big).with_timeout(300).send();
            r.unwrap().status_code
        });
        wait_metric(s.addr, "pnpt_requests_in_progress 1");
        let r = post_as(&s, "", "image/png", f.good_png.clone());
        assert_eq!(slow.join().unwrap(), 200);
        if r.status_code == 503 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status_code, 200, "{}", r.as_str().unwrap());
    }
    let r = refused.expect("the large image was always scored before the next request came");
    assert_eq!(
        r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("retry-after")).map(|(_, v)| v.as_str()),
        Some("1")
    );
    assert_eq!(json(r.as_str().unwrap())["code"], "busy");
    assert_good_request_succeeds(&s);
    let metrics = get(&s, "/metrics").1;
    assert!(metrics.contains("pnpt_http_requests_total{route=\"/v1/predict\",status=\"503\"} 1"), "{metrics}");
    assert!(metrics.contains("pnpt_refusals_total{reason=\"busy\"} 1"), "{metrics}");
    assert!(metrics.contains("pnpt_requests_in_progress 0"), "{metrics}");
    for line in ["pnpt_images_scored_total", "pnpt_predict_duration_seconds_count"] {
        let n: u64 = metrics.lines().find_map(|l| l.strip_prefix(line)).unwrap().trim().parse().unwrap();
        assert!(n >= 2, "{line} {n}: {metrics}");
    }
}

/// 200 requests from 8 concurrent clients: no 5xx but deliberate 503s; prints latency and
/// throughput (no assertion on speed).
#[test]
fn load_test_200_requests_8_clients() {
    let f = fixture();
    let s = start(ServeOptions::default());
    let (clients, per_client) = (8, 25);
    let t0 = Instant::now();
    let results: Vec<(u16, f64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    (0..per_client)
                        .map(|_| {
                            let t = Instant::now();
                            let r = post_as(&s, "", "image/png", f.good_png.clone());
                            (r.status_code, t.elapsed().as_secs_f64() * 1000.0)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    assert_eq!(results.len(), 200);
    let bad: Vec<u16> = results.iter().map(|r| r.0).filter(|&c| c != 200 && c != 503).collect();
    assert!(bad.is_empty(), "unexpected statuses: {bad:?}");
    let mut ok: Vec<f64> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    ok.sort_by(f64::total_cmp);
    assert!(!ok.is_empty());
    let pct = |q: f64| ok[((ok.len() - 1) as f64 * q).round() as usize];
    println!(
        "load test: 200 requests, 8 clients, 64x64 PNG, tiny detector: {} ok, {} busy (503); p50 {:.1} ms, p99 {:.1} ms; {:.1} images/s",
        ok.len(),
        200 - ok.len(),
        pct(0.5),
        pct(0.99),
        ok.len() as f64 / wall
    );
    s.stop().unwrap();
}

fn chromium() -> Option<PathBuf> {
    let names = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.is_file())
}

/// The web page in headless Chromium: `/?selftest=<data URL>` fetches the image and sends it as
/// a drop would; the dumped DOM must show the verdict and the overlay image.
#[test]
fn web_page_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("PNPT_TEST_BROWSER").map_or(true, |v| v != "1"),
            "PNPT_TEST_BROWSER=1 but no chromium binary on PATH"
        );
        println!(
            "skipped: no chromium binary on PATH (install Debian's `chromium`; PNPT_TEST_BROWSER=1 makes this a failure)"
        );
        return;
    };
    let f = fixture();
    let s = start(ServeOptions::default());
    use base64::Engine as _;
    let data_url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&f.good_png));
    let encoded: String = data_url
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url(&s, &format!("/?selftest={encoded}")))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    assert!(dom.contains("data-state=\"done\""), "the page did not finish: {dom}");
    let verdict = dom
        .split("id=\"verdict\"")
        .nth(1)
        .and_then(|s| s.split('>').nth(1))
        .and_then(|s| s.split('<').next())
        .unwrap_or("");
    assert!(["normal", "anomalous"].contains(&verdict), "verdict `{verdict}` in {dom}");
    let overlay = dom.split("<img id=\"overlay\"").nth(1).and_then(|s| s.split('>').next()).unwrap_or("");
    assert!(overlay.contains("src=\"data:image/png;base64,iVBOR") && !overlay.contains("hidden"), "overlay: {overlay}");
    let posted = get(&s, "/metrics").1;
    assert!(posted.contains("pnpt_http_requests_total{route=\"/v1/predict\",status=\"200\"} 1"), "{posted}");
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    use std::io::BufRead;
    let f = fixture();
    /// Kills the server if the test fails half-way, so no process outlives the test.
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Guard(
        pnpt_bin()
            .arg("serve")
            .arg(&f.dir)
            .args(["--addr", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("http://") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "pnpt serve ended before listening");
    }
    let addr: std::net::SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in `{line}`"))
        .parse()
        .unwrap();
    // A request in progress: headers and half the body sent.
    let mut stream = TcpStream::connect(addr).unwrap();
    let body = &f.good_png;
    write!(
        stream,
        "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..body.len() / 2]).unwrap();
    wait_metric(addr, "pnpt_uploads_in_progress 1");
    // The shell's builtin `kill`: slim images have no /bin/kill.
    let kill = Command::new("sh").arg("-c").arg(format!("kill -TERM {}", child.0.id())).status().unwrap();
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&body[body.len() / 2..]).unwrap();
    let mut answer = String::new();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
}
