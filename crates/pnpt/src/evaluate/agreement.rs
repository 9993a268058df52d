//! Whether validation predicts the test split: every scoring candidate that validation scored
//! on pseudo-anomalies is also scored on the real test images, and the two orderings of the
//! candidates are compared by Spearman's rank correlation, per category and over the mean.
//! The test labels are read here to *measure* validation, never to choose: the detector's rule
//! was fixed before [`super::evaluate`] runs.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use pnpt_model::Components;
use pnpt_model::ScoringRule;
use pnpt_model::detector::Detector;
use serde::Serialize;

use crate::Result;
use crate::validation::{Scores, Validation, score_rules};

/// One candidate's validation and test metrics (means over the categories of both).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateAgreement {
    /// The candidate, as validation printed it (`fused w=0.10 top100 positional`).
    pub rule: String,
    /// Validation means.
    pub validation: Scores,
    /// Test means.
    pub test: Scores,
    /// Test metrics per category (validation's are in [`Candidate::categories`](crate::validation::Candidate::categories)).
    pub test_categories: BTreeMap<String, Scores>,
}

/// Validation against test over the candidates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// Every candidate, in validation's order.
    pub candidates: Vec<CandidateAgreement>,
    /// Index of the candidate validation chose.
    pub chosen: usize,
    /// Index of the candidate with the best test objective (for the record, never used).
    pub best_on_test: usize,
    /// Spearman's correlation of the objective (mean of image AUROC, pixel AUROC and AUPRO)
    /// averaged over categories: validation's against the test's. `null` when either is flat.
    pub objective: Option<f64>,
    /// The same for each metric alone.
    pub image_auroc: Option<f64>,
    /// The same for each metric alone.
    pub pixel_auroc: Option<f64>,
    /// The same for each metric alone.
    pub aupro: Option<f64>,
    /// Per category, the correlation of its own objective.
    pub categories: BTreeMap<String, Option<f64>>,
}

/// Test metrics of every candidate of `validation`, per category, accumulated by [`Self::add`].
pub(super) struct AgreementBuilder<'a> {
    validation: &'a Validation,
    test: Vec<BTreeMap<String, Scores>>,
}

impl<'a> AgreementBuilder<'a> {
    pub(super) fn new(validation: &'a Validation) -> Self {
        Self { validation, test: vec![BTreeMap::new(); validation.candidates.len()] }
    }

    /// Scores every candidate on one category's test components.
    pub(super) fn add<B: Backend>(
        &mut self,
        detector: &Detector<B>,
        category: &str,
        parts: &Components,
        masks: &[u8],
        labels: &[bool],
    ) -> Result<()> {
        let rules: Vec<ScoringRule> = self.validation.candidates.iter().map(|c| c.rule).collect();
        let scores = score_rules(detector, category, parts, &rules, masks, labels, true)?;
        for (per, s) in self.test.iter_mut().zip(scores) {
            per.insert(category.to_string(), s);
        }
        Ok(())
    }

    /// The correlations over the categories both sides scored; `None` with fewer than two
    /// candidates or no shared category.
    pub(super) fn finish(self) -> Option<Agreement> {
        let v = self.validation;
        let shared: Vec<&String> =
            self.test.first()?.keys().filter(|c| v.candidates[0].categories.contains_key(*c)).collect();
        if v.candidates.len() < 2 || shared.is_empty() {
            return None;
        }
        let objective = |s: &Scores| (s.image_auroc + s.pixel_auroc + s.aupro) / 3.0;
        let mean = |per: &BTreeMap<String, Scores>| {
            let n = shared.len() as f64;
            let sum = |f: fn(&Scores) -> f64| shared.iter().map(|c| f(&per[*c])).sum::<f64>() / n;
            Scores { image_auroc: sum(|s| s.image_auroc), pixel_auroc: sum(|s| s.pixel_auroc), aupro: sum(|s| s.aupro) }
        };
        let candidates: Vec<CandidateAgreement> = v
            .candidates
            .iter()
            .zip(&self.test)
            .map(|(c, t)| CandidateAgreement {
                rule: c.rule.to_string(),
                validation: mean(&c.categories),
                test: mean(t),
                test_categories: shared.iter().map(|&c| (c.clone(), t[c])).collect(),
            })
            .collect();
        let corr = |f: fn(&Scores) -> f64| {
            let a: Vec<f64> = candidates.iter().map(|c| f(&c.validation)).collect();
            let b: Vec<f64> = candidates.iter().map(|c| f(&c.test)).collect();
            pnpt_metrics::spearman(&a, &b).ok().flatten()
        };
        let categories = shared
            .iter()
            .map(|&c| {
                let a: Vec<f64> = v.candidates.iter().map(|x| objective(&x.categories[c])).collect();
                let b: Vec<f64> = self.test.iter().map(|t| objective(&t[c])).collect();
                (c.clone(), pnpt_metrics::spearman(&a, &b).ok().flatten())
            })
            .collect();
        let best_on_test = (0..candidates.len()).fold(0, |best, i| {
            if objective(&candidates[i].test) > objective(&candidates[best].test) { i } else { best }
        });
        Some(Agreement {
            chosen: v.chosen,
            best_on_test,
            objective: corr(objective),
            image_auroc: corr(|s| s.image_auroc),
            pixel_auroc: corr(|s| s.pixel_auroc),
            aupro: corr(|s| s.aupro),
            categories,
            candidates,
        })
    }
}

#[cfg(test)]
mod tests {
    use pnpt_model::{ScoreMode, ScoringMethod};

    use super::*;
    use crate::validation::Candidate;

    fn scores(image_auroc: f64, pixel_auroc: f64, aupro: f64) -> Scores {
        Scores { image_auroc, pixel_auroc, aupro }
    }

    fn candidate(weight: f64, per: [(&str, Scores); 2]) -> Candidate {
        let categories: BTreeMap<String, Scores> = per.iter().map(|(c, s)| (c.to_string(), *s)).collect();
        let n = 2.0;
        let mean = |f: fn(&Scores) -> f64| categories.values().map(f).sum::<f64>() / n;
        Candidate {
            rule: ScoringRule {
                method: ScoringMethod::Fused,
                memory_weight: weight,
                score: ScoreMode::Max,
                positional: false,
                positional_map: false,
                score_from: None,
            },
            image_auroc: mean(|s| s.image_auroc),
            pixel_auroc: mean(|s| s.pixel_auroc),
            aupro: mean(|s| s.aupro),
            categories,
        }
    }

    /// Three candidates: validation orders them 0 < 1 < 2 on both categories; the test agrees
    /// on `a` and reverses on `b`, so the per-category correlations are +1 and -1, and the
    /// means (worked by hand below) give the overall one.
    #[test]
    fn correlations_by_hand() {
        let v = Validation {
            candidates: vec![
                candidate(0.1, [("a", scores(0.5, 0.5, 0.5)), ("b", scores(0.5, 0.5, 0.5))]),
                candidate(0.5, [("a", scores(0.6, 0.6, 0.6)), ("b", scores(0.6, 0.6, 0.6))]),
                candidate(0.9, [("a", scores(0.7, 0.7, 0.7)), ("b", scores(0.7, 0.7, 0.7))]),
            ],
            chosen: 2,
            normal_images: 2,
            anomalous_images: 6,
        };
        let mut b = AgreementBuilder::new(&v);
        // Test objectives: a = 0.80, 0.85, 0.90; b = 0.99, 0.90, 0.70, so the means are
        // 0.895, 0.875, 0.800: reversed, rho = -1.
        for (t, (a, bb)) in b.test.iter_mut().zip([(0.80, 0.99), (0.85, 0.90), (0.90, 0.70)]) {
            t.insert("a".into(), scores(a, a, a));
            t.insert("b".into(), scores(bb, bb, bb));
        }
        let r = b.finish().unwrap();
        assert_eq!(r.categories["a"], Some(1.0));
        assert_eq!(r.categories["b"], Some(-1.0));
        assert_eq!(r.objective, Some(-1.0));
        assert_eq!((r.chosen, r.best_on_test), (2, 0));
        assert!((r.candidates[0].test.image_auroc - 0.895).abs() < 1e-12);
        assert_eq!(r.candidates[1].rule, "fused w=0.50 max");
    }

    #[test]
    fn one_candidate_has_no_ranking() {
        let v = Validation {
            candidates: vec![candidate(0.1, [("a", scores(0.5, 0.5, 0.5)), ("b", scores(0.5, 0.5, 0.5))])],
            chosen: 0,
            normal_images: 1,
            anomalous_images: 1,
        };
        let mut b = AgreementBuilder::new(&v);
        b.test[0].insert("a".into(), scores(0.9, 0.9, 0.9));
        assert!(b.finish().is_none());
    }
}
