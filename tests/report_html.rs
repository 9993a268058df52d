//! `report.html` in a real browser: a detector fitted for one epoch on a tiny synthetic set is
//! evaluated with heat maps and its page written (`pnpt_cli::html`), then headless Chromium loads the report with a probe script added
//! and the dumped DOM must show every image loaded and the metrics table holding the report's
//! numbers. One category is renamed to `m&m's <odd> #1` so escaping and URL encoding of user
//! data are exercised too.
//!
//! Without `chromium`, `chromium-browser`, `google-chrome` or `google-chrome-stable` on `PATH`
//! the test prints why and passes, unless `PNPT_TEST_BROWSER=1` (set by `.ci/run`, which
//! installs chromium) demands one.
//!
//! Also: `examples/score_maps.rs` prints the metric keys `report.json` writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use pnpt::backend::Cpu;
use pnpt::data::Dataset;
use pnpt::evaluate::{EvaluateOptions, METRIC_COLUMNS, evaluate, metric_values};
use pnpt::model::{PnptConfig, TrainOptions};
use pnpt::synth::synthetic::{SynthKind, SyntheticConfig, generate};
use serde_json::{Value, json};

// The example itself, so the test checks what it really prints (its `main` goes unused here).
#[path = "../examples/score_maps.rs"]
#[allow(dead_code)]
mod score_maps;

const ODD: &str = "m&m's <odd> #1";

/// Collects, once every image has loaded or failed (the `load` event), the images that did not
/// decode and the metrics cells, as JSON in `<pre id="pnpt-probe">`.
const PROBE: &str = "<script>addEventListener('load', () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const cells = [...document.querySelectorAll('#metrics td[data-metric]')]
    .map(td => ({category: td.dataset.category ?? null, metric: td.dataset.metric, text: td.textContent}));
  const out = document.createElement('pre');
  out.id = 'pnpt-probe';
  out.textContent = JSON.stringify({images: document.images.length, broken, cells});
  document.body.appendChild(out);
});</script>";

fn browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file());
    match found {
        Some(p) => Some(p),
        None if std::env::var("PNPT_TEST_BROWSER").as_deref() == Ok("1") => {
            panic!(
                "PNPT_TEST_BROWSER=1 but no chromium/chromium-browser/google-chrome on PATH (apt-get install chromium)"
            )
        }
        None => {
            eprintln!("skipping: no headless browser on PATH (apt-get install chromium runs this test)");
            None
        }
    }
}

/// `chromium --headless --dump-dom` of `page`, killed after two minutes.
fn dump_dom(browser: &Path, page: &Path, profile: &Path) -> String {
    let mut child = Command::new(browser)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the browser");
    let start = Instant::now();
    while child.try_wait().expect("browser status").is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{} did not finish within 120 s", browser.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("browser output");
    assert!(out.status.success(), "{} failed: {:?}", browser.display(), out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn report_html_renders_in_chromium() {
    let Some(browser) = browser() else { return };
    let data = tempfile::tempdir().unwrap();
    let synth = SyntheticConfig {
        size: 64,
        train_good: 10,
        test_good: 3,
        test_defective: 3,
        categories: vec![SynthKind::Bottle, SynthKind::Weave],
        ..Default::default()
    };
    generate(data.path(), &synth).unwrap();
    std::fs::rename(data.path().join("weave"), data.path().join(ODD)).unwrap();
    let dataset = Dataset::open(data.path(), None).unwrap();
    let mut cfg = PnptConfig::cpu();
    cfg.input_size = 64;
    (cfg.model.hidden, cfg.model.semantic_tokens, cfg.model.heads, cfg.model.layers) = (32, 4, 4, 1);
    (cfg.train.epochs, cfg.train.batch_size) = (1, 4);
    let (detector, fitted) =
        pnpt::train::train::<Autodiff<Cpu>>(&cfg, &dataset, &Default::default(), &TrainOptions::default(), None)
            .unwrap();

    let out = tempfile::tempdir().unwrap();
    let options = EvaluateOptions::default()
        .with_out_dir(Some(out.path().to_path_buf()))
        .with_extra([("history".to_string(), json!(fitted.history))].into_iter().collect());
    let report = evaluate(&detector, &dataset, &options).unwrap();
    pnpt_cli::html::write(&report, out.path()).unwrap();
    assert_eq!(report.categories.len(), 2);
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("epoch 1: loss"), "training curve from extra[\"history\"]");
    // Real heat maps: one per test image, image | overlay (| ground truth) of 256-px panels.
    for c in &report.categories {
        assert!(c.scale.threshold.is_some(), "{}: thresholds were calibrated on held-out images", c.name);
        for r in &c.results {
            let (w, h) = pnpt::data::image::image_dimensions(out.path().join(r.heatmap.as_deref().unwrap())).unwrap();
            assert_eq!(
                (w, h),
                (if r.anomalous { 3 * 256 + 6 } else { 2 * 256 + 3 }, 256 + 3 + 10),
                "{}",
                r.path.display()
            );
        }
    }

    let page = out.path().join("probe.html");
    std::fs::write(&page, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let dom = dump_dom(&browser, &page, profile.path());
    let probe = dom
        .split_once("<pre id=\"pnpt-probe\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .unwrap_or_else(|| panic!("no probe result in the dumped DOM:\n{dom}"))
        .0
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let probe: Value = serde_json::from_str(&probe).unwrap();
    let shown = html.matches("<img ").count();
    assert!(shown > 0);
    assert_eq!(probe["images"].as_u64(), Some(shown as u64));
    assert_eq!(probe["broken"], json!([]), "images that did not load");

    // The table as the browser shows it holds the report's numbers, cell by cell.
    let cells = probe["cells"].as_array().unwrap();
    let rows = report.categories.iter().map(|c| (json!(c.name), &c.metrics, c.retrieval_accuracy));
    let mut checked = 0;
    for (category, m, r) in rows.chain([(Value::Null, &report.mean, report.mean_retrieval_accuracy)]) {
        for ((key, _), v) in METRIC_COLUMNS.iter().zip(metric_values(m, r)) {
            let cell = cells.iter().find(|c| c["category"] == category && c["metric"] == *key);
            assert_eq!(cell.and_then(|c| c["text"].as_str()), Some(format!("{v:.3}").as_str()), "{category} {key}");
            checked += 1;
        }
    }
    assert_eq!(cells.len(), checked, "no other cells");
    assert!(cells.iter().any(|c| c["category"] == ODD), "the odd category name round-trips through escaping");
}

/// `score_maps` and `report.json` name every metric alike (the AUPRO was `aupro_0.3` in one and
/// `aupro` in the other) and state the same AUPRO FPR limit.
#[test]
fn score_maps_prints_the_metric_keys_of_report_json() {
    use pnpt::evaluate::{CategoryReport, Report};
    use pnpt::heatmap::ColourScale;
    use pnpt::io::npy;
    let dir = tempfile::tempdir().unwrap();
    let (maps, masks, labels) =
        (dir.path().join("maps.npy"), dir.path().join("masks.npy"), dir.path().join("labels.npy"));
    // Two 2 x 2 maps: a normal image and one with a defect in its last pixel.
    let map_values = [0.1f32, 0.2, 0.1, 0.3, 0.1, 0.2, 0.2, 0.9];
    let mask_values = [0u8, 0, 0, 0, 0, 0, 0, 1];
    npy::write(&maps, &[2, 2, 2], &map_values).unwrap();
    npy::write(&masks, &[2, 2, 2], &mask_values).unwrap();
    npy::write(&labels, &[2], &[0u8, 1]).unwrap();
    let printed = score_maps::run(&score_maps::Args { maps, masks, labels }).unwrap();
    let printed: Value = serde_json::from_str(&printed).unwrap();

    let image_scores = pnpt::metrics::max_per_map(&map_values, 2, 2, 2).unwrap();
    let metrics = pnpt::metrics::evaluate(&map_values, &mask_values, &[false, true], &image_scores, 2, 2, 2).unwrap();
    let scale = ColourScale { lo: 0.0, hi: 1.0, threshold: None, centred: false, held_out: false };
    let category = CategoryReport {
        name: "c".into(),
        metrics: metrics.clone(),
        retrieval_accuracy: 1.0,
        images: 2,
        scale,
        results: vec![],
    };
    let report = Report {
        categories: vec![category],
        mean: metrics,
        mean_retrieval_accuracy: 1.0,
        skipped: vec![],
        preset: "cpu".into(),
        seed: 0,
        device: "cpu".into(),
        train_seconds: 0.0,
        ms_per_image: 0.0,
        method: "pnpt".into(),
        methods: vec![],
        agreement: None,
        extra: Default::default(),
    };
    let written: Value = serde_json::from_str(&report.to_json()).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<std::collections::BTreeSet<_>>();
    let mut printed_keys = keys(&printed);
    assert!(printed_keys.remove("aupro_fpr_limit"), "score_maps states the AUPRO's FPR limit: {printed}");
    assert_eq!(printed_keys, keys(&written["categories"]["c"]), "score_maps vs a metrics object of report.json");
    assert_eq!(printed["aupro_fpr_limit"], written["aupro_fpr_limit"]);
    assert_eq!(printed["aupro"], written["categories"]["c"]["aupro"]);
    assert_eq!(printed["image_auroc"].as_f64(), Some(1.0));
}
