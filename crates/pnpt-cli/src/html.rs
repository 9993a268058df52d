//! `report.html`: the evaluation as one self-contained page (no network, no script), written
//! by the job ([`write()`]) next to the `report.json` and `report.md` of
//! [`pnpt::evaluate::evaluate`]. The command's, not the library's: a program embedding `pnpt`
//! shows its results its own way, and calls [`to_html`] if it wants this page.
//!
//! It holds the run's header, the metrics table (the numbers of `report.md`; every cell carries
//! `data-category` — absent in the mean row — and `data-metric`, a [`METRIC_COLUMNS`] key, so
//! tools can read it), the training loss per epoch (from `extra["history"]`) and the image-level
//! ROC curve of every category as inline SVG, with the operating point at the decision
//! threshold, the heat maps' colour scale per category, and a gallery per category: the
//! highest-scoring normal images (false alarms when above the threshold), the lowest-scoring
//! anomalous ones (misses when not above it) and a few correct ones, each with score, threshold
//! and verdict. Heat maps are linked relatively (`heatmaps/<category>/...`, percent-encoded),
//! so the page works wherever the output folder is copied. All text is HTML-escaped.

use std::fmt::Write as _;

use std::path::Path;

use pnpt::evaluate::{COLOUR_RULE, CategoryReport, ImageResult, METRIC_COLUMNS, Report, metric_values};
use pnpt::io::write_atomic;
use serde_json::Value;

use crate::Result;

/// Gallery size per category: highest-scoring normal images, lowest-scoring anomalous images,
/// and correct ones.
const GALLERY: (usize, usize, usize) = (4, 4, 4);

// Gallery images keep their natural size (capped at the page width), so every panel of every
// heat map shows at one scale whether or not it has a ground-truth panel.
const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}\
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th:first-child,td.l{text-align:left}tr.mean{font-weight:bold;background:#f4f4f4}\
.plots{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}\
.gallery{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.card{max-width:100%}\
.card img{max-width:100%;display:block}.card figcaption{padding:2px 0}\
.bad b{color:#b00}.ok b{color:#070}.meta{color:#555}svg text{font:11px sans-serif}";

/// `text` with `& < > " '` replaced by entities, safe in element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative path as a URL path: its names joined by `/`, every byte of them but
/// `A-Z a-z 0-9 - . _ ~` percent-encoded (category and file names are user data: spaces, `#`,
/// `?`, `%`...). The bytes are the OS's own, UTF-8 or not, so the link finds the file.
fn url_path(path: &Path) -> String {
    let mut s = String::new();
    for (i, name) in path.components().enumerate() {
        if i > 0 {
            s.push('/');
        }
        for &b in name.as_os_str().as_encoded_bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                s.push(b as char);
            } else {
                let _ = write!(s, "%{b:02X}");
            }
        }
    }
    s
}

/// The ROC curve of image scores: `(FPR, TPR)` points from `(0, 0)` to `(1, 1)`, one per
/// distinct score swept from the highest down (ties form one step, as in `pnpt-metrics`).
/// With no positives (negatives) the TPR (FPR) stays 0.
pub fn roc_points(scores: &[f32], labels: &[bool]) -> Vec<(f64, f64)> {
    let mut order: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = order.iter().filter(|o| o.1).count().max(1) as f64;
    let negatives = order.iter().filter(|o| !o.1).count().max(1) as f64;
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut points = vec![(0.0, 0.0)];
    for (i, &(score, label)) in order.iter().enumerate() {
        if label {
            tp += 1
        } else {
            fp += 1
        }
        if order.get(i + 1).is_none_or(|next| next.0.total_cmp(&score).is_ne()) {
            points.push((fp as f64 / negatives, tp as f64 / positives));
        }
    }
    if order.is_empty() {
        points.push((1.0, 1.0));
    }
    points
}

/// `(FPR, TPR)` of the verdict `score > threshold` (the detector's rule).
pub fn operating_point(results: &[ImageResult], threshold: f32) -> (f64, f64) {
    let rate = |anomalous: bool| {
        let all = results.iter().filter(|r| r.anomalous == anomalous);
        let flagged = all.clone().filter(|r| r.score > threshold).count();
        flagged as f64 / all.count().max(1) as f64
    };
    (rate(false), rate(true))
}

/// A tick label: whole numbers without decimals, small ones in scientific notation.
fn tick(v: f64) -> String {
    if v == v.round() && v.abs() < 1e6 {
        format!("{v:.0}")
    } else if v.abs() >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// An SVG chart frame mapping data ranges `x`, `y` onto a fixed-size plot area.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    const W: f64 = 360.0;
    const H: f64 = 270.0;
    /// Left, right, top, bottom margins.
    const M: (f64, f64, f64, f64) = (56.0, 14.0, 10.0, 40.0);

    /// Ranges of zero width are widened so every point maps somewhere finite.
    fn new(x: (f64, f64), y: (f64, f64)) -> Self {
        let widen = |(a, b): (f64, f64)| {
            if b > a { (a, b) } else { (a - 0.5 * a.abs().max(1e-9), b + 0.5 * b.abs().max(1e-9)) }
        };
        Self { x: widen(x), y: widen(y) }
    }

    fn at(&self, x: f64, y: f64) -> (f64, f64) {
        let (l, r, t, b) = Self::M;
        (
            l + (x - self.x.0) / (self.x.1 - self.x.0) * (Self::W - l - r),
            Self::H - b - (y - self.y.0) / (self.y.1 - self.y.0) * (Self::H - t - b),
        )
    }

    fn polyline(&self, points: &[(f64, f64)], attrs: &str) -> String {
        let pts: Vec<String> =
            points.iter().map(|&(x, y)| self.at(x, y)).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        format!("<polyline fill=\"none\" {attrs} points=\"{}\"/>", pts.join(" "))
    }

    /// A dot at `(x, y)` with a hover text.
    fn dot(&self, x: f64, y: f64, r: f64, colour: &str, title: &str) -> String {
        let (cx, cy) = self.at(x, y);
        format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{r}\" fill=\"{colour}\"><title>{}</title></circle>",
            escape(title)
        )
    }

    /// The whole `<svg>`: axes box, three ticks per axis, axis labels, then `body`.
    fn svg(&self, x_label: &str, y_label: &str, body: &str) -> String {
        let (l, r, t, b) = Self::M;
        let (w, h) = (Self::W, Self::H);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\
             <rect x=\"{l}\" y=\"{t}\" width=\"{}\" height=\"{}\" fill=\"#fff\" stroke=\"#888\"/>",
            w - l - r,
            h - t - b
        );
        for f in [0.0, 0.5, 1.0] {
            let (vx, vy) = (self.x.0 + f * (self.x.1 - self.x.0), self.y.0 + f * (self.y.1 - self.y.0));
            let (px, _) = self.at(vx, self.y.0);
            let (_, py) = self.at(self.x.0, vy);
            let _ = write!(
                s,
                "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                h - b + 14.0,
                tick(vx),
                l - 4.0,
                py + 4.0,
                tick(vy)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <text transform=\"translate(12 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>{body}</svg>",
            l + (w - l - r) / 2.0,
            h - 6.0,
            escape(x_label),
            t + (h - t - b) / 2.0,
            escape(y_label)
        );
        s
    }
}

/// The training loss per epoch from `extra["history"]` (`[{"epoch", "loss", ...}]`, as
/// `train_mvtec` stores `TrainReport::history`); entries without both numbers are left out.
fn loss_history(report: &Report) -> Vec<(f64, f64)> {
    let Some(Value::Array(epochs)) = report.extra.get("history") else { return Vec::new() };
    epochs
        .iter()
        .filter_map(|e| Some((e.get("epoch")?.as_f64()?, e.get("loss")?.as_f64()?)))
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect()
}

fn loss_svg(history: &[(f64, f64)]) -> String {
    let range = |f: fn(&(f64, f64)) -> f64| {
        history.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
    };
    let (lo, hi) = range(|p| p.1);
    let pad = 0.05 * (hi - lo);
    let frame = Frame::new(range(|p| p.0), (lo - pad, hi + pad));
    let mut body = frame.polyline(history, "stroke=\"#1f5fbf\" stroke-width=\"2\"");
    for &(e, loss) in history {
        body.push_str(&frame.dot(e, loss, 3.0, "#1f5fbf", &format!("epoch {e}: loss {loss:.5}")));
    }
    frame.svg("epoch", "training loss", &body)
}

fn roc_svg(c: &CategoryReport) -> String {
    let scores: Vec<f32> = c.results.iter().map(|r| r.score).collect();
    let labels: Vec<bool> = c.results.iter().map(|r| r.anomalous).collect();
    let frame = Frame::new((0.0, 1.0), (0.0, 1.0));
    let mut body = frame.polyline(&[(0.0, 0.0), (1.0, 1.0)], "stroke=\"#bbb\" stroke-dasharray=\"4 4\"");
    body.push_str(&frame.polyline(&roc_points(&scores, &labels), "stroke=\"#1f5fbf\" stroke-width=\"2\""));
    if let Some(t) = c.scale.threshold {
        let (fpr, tpr) = operating_point(&c.results, t);
        body.push_str(&frame.dot(fpr, tpr, 5.0, "#d0008f", &format!("threshold {t:.4}: FPR {fpr:.3}, TPR {tpr:.3}")));
    }
    frame.svg("false-positive rate (normal images flagged)", "true-positive rate", &body)
}

/// Verdict text and CSS class of one image under `threshold`.
fn verdict(r: &ImageResult, threshold: Option<f32>) -> (&'static str, &'static str) {
    match (r.flagged(threshold), r.anomalous) {
        (None, _) => ("no threshold", ""),
        (Some(true), true) => ("detected", "ok"),
        (Some(false), false) => ("passed", "ok"),
        (Some(true), false) => ("false alarm", "bad"),
        (Some(false), true) => ("miss", "bad"),
    }
}

/// The gallery's groups: heading and images, each image in at most one group.
fn gallery(c: &CategoryReport) -> Vec<(&'static str, Vec<&ImageResult>)> {
    let threshold = c.scale.threshold;
    let mut by_score: Vec<&ImageResult> = c.results.iter().collect();
    by_score.sort_by(|a, b| b.score.total_cmp(&a.score));
    let normal_high: Vec<&ImageResult> = by_score.iter().copied().filter(|r| !r.anomalous).take(GALLERY.0).collect();
    let anomalous_low: Vec<&ImageResult> =
        by_score.iter().rev().copied().filter(|r| r.anomalous).take(GALLERY.1).collect();
    let shown = |r: &ImageResult| normal_high.iter().chain(&anomalous_low).any(|s| std::ptr::eq(*s, r));
    // The clearest correct ones: the highest-scoring detections and the lowest-scoring passes.
    let correct = |anomalous: bool| {
        by_score.iter().copied().filter(move |r| r.anomalous == anomalous && r.flagged(threshold) == Some(anomalous))
    };
    let mut right: Vec<&ImageResult> = correct(true).filter(|r| !shown(r)).take(GALLERY.2 / 2).collect();
    let rest = GALLERY.2 - right.len();
    right.extend(correct(false).rev().filter(|r| !shown(r)).take(rest));
    vec![
        ("Highest-scoring normal images (false alarms when above the threshold)", normal_high),
        ("Lowest-scoring anomalous images (misses when not above the threshold)", anomalous_low),
        ("Correct verdicts", right),
    ]
}

fn card(s: &mut String, r: &ImageResult, threshold: Option<f32>) {
    let (text, class) = verdict(r, threshold);
    let stem = r.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = escape(&format!("{}/{stem}", r.defect));
    let _ = write!(s, "<figure class=\"card {class}\">");
    match &r.heatmap {
        Some(h) => {
            let _ = write!(s, "<img src=\"{}\" alt=\"heat map of {name}\">", escape(&url_path(h)));
        }
        None => s.push_str("<p>(heat maps were not written)</p>"),
    }
    let t = threshold.map_or("none".into(), |t| format!("{t:.4}"));
    let _ =
        write!(s, "<figcaption><b>{text}</b> · {name} · score {:.4} · threshold {t}</figcaption></figure>", r.score);
}

/// Writes [`to_html`] to `dir/report.html` (temp + rename).
pub fn write(report: &Report, dir: impl AsRef<Path>) -> Result<()> {
    write_atomic(&dir.as_ref().join("report.html"), to_html(report).as_bytes())?;
    Ok(())
}

/// The `report.html` text (see the [module documentation](crate::html)).
pub fn to_html(report: &Report) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>PNPT evaluation</title><style>{STYLE}</style></head><body>\n\
         <h1>PNPT evaluation</h1>\n<p class=\"meta\">preset <b>{}</b> · seed {} · scoring method <b>{}</b> · device <b>{}</b> · \
         training {:.1} s · inference {:.1} ms/image</p>\n<h2>Metrics</h2>\n<table id=\"metrics\"><thead><tr><th>category</th>",
        escape(&report.preset),
        report.seed,
        escape(&report.method),
        escape(&report.device),
        report.train_seconds,
        report.ms_per_image
    );
    for (_, heading) in METRIC_COLUMNS {
        let _ = write!(s, "<th>{heading}</th>");
    }
    s.push_str("</tr></thead><tbody>\n");
    let rows = report.categories.iter().map(|c| (Some(c.name.as_str()), &c.metrics, c.retrieval_accuracy));
    for (name, m, r) in rows.chain([(None, &report.mean, report.mean_retrieval_accuracy)]) {
        let category = name.map(|n| format!(" data-category=\"{}\"", escape(n))).unwrap_or_default();
        let _ = write!(
            s,
            "<tr{}><td class=\"l\">{}</td>",
            if name.is_none() { " class=\"mean\"" } else { "" },
            escape(name.unwrap_or("mean"))
        );
        for ((key, _), v) in METRIC_COLUMNS.iter().zip(metric_values(m, r)) {
            let _ = write!(s, "<td{category} data-metric=\"{key}\">{v:.3}</td>");
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
    if report.methods.len() > 1 {
        let _ = write!(
            s,
            "<p>Every scoring method on the same test images (image AUROC / pixel AUROC / AUPRO; <b>{}</b> above):</p>\n<table><tr><th>category</th>",
            escape(&report.method)
        );
        for m in &report.methods {
            let _ = write!(s, "<th>{}</th>", escape(&m.method));
        }
        s.push_str("</tr>\n");
        let names = report.categories.iter().map(|c| c.name.as_str()).chain(["mean"]);
        for (i, name) in names.enumerate() {
            let _ = write!(
                s,
                "<tr{}><td class=\"l\">{}</td>",
                if i == report.categories.len() { " class=\"mean\"" } else { "" },
                escape(name)
            );
            for m in &report.methods {
                let x = m.categories.get(i).map_or(&m.mean, |c| &c.1);
                let _ = write!(s, "<td>{:.3} / {:.3} / {:.3}</td>", x.image_auroc, x.pixel_auroc, x.aupro);
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
    }
    if let Some(a) = &report.agreement {
        let r = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.2}"));
        let _ = writeln!(
            s,
            "<p id=\"agreement\">Validation against test: Spearman's rank correlation over the {} scoring candidates \
             between their validation (pseudo-anomalies) and test metrics is <b>{}</b> (image AUROC {}, pixel AUROC {}, \
             AUPRO {}). Validation chose <b>{}</b>; the best on test would have been <b>{}</b> (report.md lists every \
             candidate).</p>",
            a.candidates.len(),
            r(a.objective),
            r(a.image_auroc),
            r(a.pixel_auroc),
            r(a.aupro),
            escape(&a.candidates[a.chosen].rule),
            escape(&a.candidates[a.best_on_test].rule)
        );
    }
    for (c, r) in &report.skipped {
        let _ = writeln!(s, "<p>skipped <b>{}</b>: {}</p>", escape(c), escape(r));
    }
    s.push_str("<h2>Training loss</h2>\n");
    let history = loss_history(report);
    if history.is_empty() {
        s.push_str("<p>No training history in this report (an evaluation of a saved detector).</p>\n");
    } else {
        let _ = writeln!(s, "<figure>{}</figure>", loss_svg(&history));
    }
    s.push_str("<h2>Image-level ROC</h2>\n<p>The magenta dot is the operating point at the category's decision threshold.</p>\n<div class=\"plots\">\n");
    for c in &report.categories {
        let op = c.scale.threshold.map_or("no decision threshold".into(), |t| {
            let (fpr, tpr) = operating_point(&c.results, t);
            format!("threshold {t:.4}: FPR {fpr:.3}, TPR {tpr:.3}")
        });
        let _ = writeln!(
            s,
            "<figure>{}<figcaption><b>{}</b> · AUROC {:.3} · {op}</figcaption></figure>",
            roc_svg(c),
            escape(&c.name),
            c.metrics.image_auroc
        );
    }
    let _ = write!(
        s,
        "</div>\n<h2>Heat maps</h2>\n<p>{}</p>\n<table><tr><th>category</th><th>colour scale</th></tr>\n",
        escape(COLOUR_RULE)
    );
    for c in &report.categories {
        let _ = writeln!(
            s,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            escape(&c.name),
            escape(&c.scale.describe())
        );
    }
    s.push_str("</table>\n");
    for c in &report.categories {
        let _ = writeln!(s, "<h3>{}</h3>", escape(&c.name));
        for (heading, images) in gallery(c) {
            if images.is_empty() {
                continue;
            }
            let _ = write!(s, "<h4>{heading}</h4>\n<div class=\"gallery\">");
            for r in images {
                card(&mut s, r, c.scale.threshold);
            }
            s.push_str("</div>\n");
        }
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use pnpt::evaluate::{sample_agreement, sample_report};

    use super::*;

    #[test]
    fn roc_points_of_a_hand_worked_case() {
        // Sorted: 0.9 (+), 0.8 (−), then a tie at 0.7 (+ and −) that moves both rates at once, 0.1 (−).
        let scores = [0.7, 0.1, 0.9, 0.7, 0.8];
        let labels = [true, false, true, false, false];
        let points = roc_points(&scores, &labels);
        assert_eq!(points, vec![(0.0, 0.0), (0.0, 0.5), (1.0 / 3.0, 0.5), (2.0 / 3.0, 1.0), (1.0, 1.0)]);
        // The area under these points is the AUROC of pnpt-metrics.
        let area: f64 = points.windows(2).map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0).sum();
        assert!((area - pnpt::metrics::auroc(&scores, &labels).unwrap()).abs() < 1e-12);
        assert_eq!(roc_points(&[], &[]), vec![(0.0, 0.0), (1.0, 1.0)]);
        // `score > 1.0` on the sample report flags one of two normal images (1.2) and one of two
        // anomalous ones (2.0).
        let report = sample_report();
        assert_eq!(operating_point(&report.categories[0].results, 1.0), (0.5, 0.5));
    }

    #[test]
    fn escaping_and_url_paths() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(url_path(Path::new("heatmaps/a b#?%&/x_1.png")), "heatmaps/a%20b%23%3F%25%26/x_1.png");
        assert_eq!(url_path(Path::new("heatmaps/é")), "heatmaps/%C3%A9");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let odd = Path::new("heatmaps/c").join(std::ffi::OsStr::from_bytes(b"crack_\xff.png"));
            assert_eq!(url_path(&odd), "heatmaps/c/crack_%FF.png");
        }
    }

    #[test]
    fn html_holds_every_number_the_curves_and_the_gallery() {
        let report = sample_report();
        let html = to_html(&report);
        for c in &report.categories {
            for ((key, _), v) in METRIC_COLUMNS.iter().zip(metric_values(&c.metrics, c.retrieval_accuracy)) {
                let cell = format!("<td data-category=\"{}\" data-metric=\"{key}\">{v:.3}</td>", escape(&c.name));
                assert!(html.contains(&cell), "{cell}");
            }
            assert!(html.contains(&escape(&c.scale.describe())), "colour scale of {}", c.name);
        }
        assert!(html.contains("<td data-metric=\"aupro\">0.300</td>"), "mean row");
        assert!(html.contains("0.875") && html.contains("0.625"), "the second category's own numbers");
        assert!(!html.contains("<x>") && !html.contains("a\"b"), "category names are escaped");
        assert_eq!(html.matches("<svg").count(), 1 + report.categories.len(), "loss curve and one ROC per category");
        assert!(html.contains("epoch 3: loss 0.40000"));
        // good_001 scores 1.2 > 1.0: a false alarm; crack_000 scores 0.9: a miss; both shown.
        assert!(html.contains("<b>false alarm</b> · good/001 · score 1.2000 · threshold 1.0000"));
        assert!(html.contains("<b>miss</b> · crack/000 · score 0.9000"));
        assert!(html.contains("<img src=\"heatmaps/c/crack_001.png\""));
        assert!(!html.contains("<script"), "no script needed");
        let mut bare = report.clone();
        bare.extra.clear();
        assert!(to_html(&bare).contains("No training history"));
    }

    #[test]
    fn agreement_is_stated_with_the_rule_escaped() {
        let mut report = sample_report();
        report.agreement = Some(sample_agreement());
        assert!(to_html(&report).contains("Validation chose <b>memory &lt;b&gt;</b>"), "the rule is escaped");
        assert!(!to_html(&sample_report()).contains("id=\"agreement\""));
    }
}
