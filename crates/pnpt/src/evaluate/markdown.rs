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
    use super::super::tests::sample_report;

    #[test]
    fn markdown_states_every_colour_scale() {
        let md = sample_report().to_markdown();
        assert!(md.contains("| a\"b | 0.500 | NaN | 0.300 |"), "{md}");
        assert!(
            md.contains("* <x>&y: lo 0.5000 (median test-map pixel), threshold 1.0000 (middle of the bar), hi 1.5000"),
            "{md}"
        );
    }
}
