//! `report.md`: the metrics tables, every method side by side, and the heat maps' colour scales.

use std::fmt::Write as _;

use pnpt_metrics::CategoryMetrics;

use super::{COLOUR_RULE, METRIC_COLUMNS, Report, metric_values};

impl Report {
    /// The `report.md` text: one table row per category and the mean.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# PNPT evaluation\n\npreset `{}`, seed {}, device `{}`, training {:.1} s, inference {:.1} ms/image\n\n",
            self.preset, self.seed, self.device, self.train_seconds, self.ms_per_image
        );
        s.push_str("| category |");
        for (_, heading) in METRIC_COLUMNS {
            let _ = write!(s, " {heading} |");
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(METRIC_COLUMNS.len()));
        let row = |s: &mut String, name: &str, m: &CategoryMetrics, r: f64| {
            let _ = write!(s, "| {name} |");
            for v in metric_values(m, r) {
                let _ = write!(s, " {v:.3} |");
            }
            s.push('\n');
        };
        for c in &self.categories {
            row(&mut s, &c.name, &c.metrics, c.retrieval_accuracy);
        }
        row(&mut s, "**mean**", &self.mean, self.mean_retrieval_accuracy);
        if self.methods.len() > 1 {
            let _ = writeln!(
                s,
                "\nScoring method `{}` above. Every method on the same test images (image AUROC / pixel AUROC / AUPRO):\n",
                self.method
            );
            s.push_str("| category |");
            for m in &self.methods {
                let _ = write!(s, " {} |", m.method);
            }
            s.push_str("\n|---|");
            s.push_str(&"---|".repeat(self.methods.len()));
            s.push('\n');
            let cell = |m: &CategoryMetrics| format!(" {:.3} / {:.3} / {:.3} |", m.image_auroc, m.pixel_auroc, m.aupro);
            for (i, c) in self.categories.iter().enumerate() {
                let _ = write!(s, "| {} |", c.name);
                for m in &self.methods {
                    s.push_str(&cell(&m.categories[i].1));
                }
                s.push('\n');
            }
            s.push_str("| **mean** |");
            for m in &self.methods {
                s.push_str(&cell(&m.mean));
            }
            s.push('\n');
        }
        if let Some(a) = &self.agreement {
            let r = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.2}"));
            let _ = writeln!(
                s,
                "\n## Validation against test\n\nSpearman's rank correlation over the {} scoring candidates between their \
                 validation (pseudo-anomalies) and test metrics: objective {}, image AUROC {}, pixel AUROC {}, AUPRO {}. \
                 Validation chose `{}`; the best on test (for the record) is `{}`.\n",
                a.candidates.len(),
                r(a.objective),
                r(a.image_auroc),
                r(a.pixel_auroc),
                r(a.aupro),
                a.candidates[a.chosen].rule,
                a.candidates[a.best_on_test].rule
            );
            s.push_str("| candidate | validation image / pixel AUROC / AUPRO | test image / pixel AUROC / AUPRO |\n|---|---|---|\n");
            for (i, c) in a.candidates.iter().enumerate() {
                let mark = if i == a.chosen { " (chosen)" } else { "" };
                let f = |x: &crate::validation::Scores| {
                    format!("{:.3} / {:.3} / {:.3}", x.image_auroc, x.pixel_auroc, x.aupro)
                };
                let _ = writeln!(s, "| `{}`{mark} | {} | {} |", c.rule, f(&c.validation), f(&c.test));
            }
            s.push_str("\nPer category (objective):");
            for (c, x) in &a.categories {
                let _ = write!(s, " {c} {};", r(*x));
            }
            s.push('\n');
        }
        for (c, r) in &self.skipped {
            let _ = writeln!(s, "\nskipped `{c}`: {r}");
        }
        let _ = writeln!(s, "\n## Heat maps\n\n{}\n", COLOUR_RULE);
        for c in &self.categories {
            let _ = writeln!(s, "* {}: {}", c.name, c.scale.describe());
        }
        s.push_str("\n`report.html` shows the curves and the images to look at.\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::super::{sample_agreement, sample_report};

    #[test]
    fn markdown_states_every_colour_scale() {
        let md = sample_report().to_markdown();
        assert!(md.contains("| a\"b | 0.500 | NaN | 0.300 |"), "{md}");
        assert!(
            md.contains("* <x>&y: lo 0.5000 (median test-map pixel), threshold 1.0000 (middle of the bar), hi 1.5000"),
            "{md}"
        );
    }

    #[test]
    fn agreement_is_stated_in_json_and_markdown() {
        let mut report = sample_report();
        report.agreement = Some(sample_agreement());
        let md = report.to_markdown();
        assert!(md.contains("objective 1.00, image AUROC 1.00, pixel AUROC –, AUPRO -0.50"), "{md}");
        assert!(md.contains("| `memory <b>` (chosen) | 0.625 / 0.625 / 0.625 | 0.875 / 0.875 / 0.875 |"), "{md}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["agreement"]["objective"], 1.0);
        assert!(json["agreement"]["pixel_auroc"].is_null());
        assert_eq!(json["agreement"]["candidates"][0]["test"]["aupro"], 0.75);
        assert!(
            serde_json::from_str::<serde_json::Value>(&sample_report().to_json()).unwrap().get("agreement").is_none()
        );
    }
}
