//! Choosing how a detector scores without looking at test labels.
//!
//! The held-out normal training images (never trained on, never in a memory bank) become a
//! validation set: each is kept as a normal example and also corrupted with synthetic defects
//! (cut-paste patches from other images of its category, scratches, stains, holes, colour spots:
//! [`pnpt_synth::pseudo_anomaly`]) with exact masks. Every candidate scoring — PNPT's map, the
//! patch memory's map, and the fused map at several memory weights — is scored on it from one
//! pass of the model, each with every image-score rule of `score_rules` (the max of the map, the
//! mean of its top k values) and, when the detector has positional statistics, with PNPT's map
//! standardised per class or per position ([`pnpt_model::fusion`]); the candidate with the best
//! mean of image AUROC, pixel AUROC and AUPRO over the categories wins (the first listed on a
//! tie). One more candidate joins them: the image score of the candidate that ranks images best
//! with the map of the one that outlines defects best ([`ScoringRule::score_from`]), since
//! the map that ranks whole images best and the one that outlines defects best are often not
//! the same. AUPRO weighs every defect region alike, so small defects count as much as large ones,
//! which pixel AUROC (dominated by the largest regions) does not see. The test split is not
//! read.

use std::collections::BTreeMap;

use burn::config::Config;
use burn::tensor::backend::Backend;
use pnpt_model::{Detector, ScoreMode, ScoringMethod, ScoringRule};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod set;

pub use set::ValidationSet;
pub(crate) use set::score_rules;

/// Options of [`validate`] and [`ValidationSet::build`]. Burn's `Config` derive writes the
/// `with_*` setters (code outside the crate builds it with them: `#[non_exhaustive]` refuses
/// struct literals there, so adding an option breaks no caller) and JSON save/load.
#[derive(Config, Debug)]
#[non_exhaustive]
pub struct ValidationOptions {
    /// Synthetic anomalies made from each held-out image.
    #[config(default = 3)]
    pub per_image: usize,
    /// Seed of the synthetic anomalies.
    #[config(default = 0)]
    pub seed: u64,
    /// Memory weights tried for `fused` (0.1 joined the grid when 0.25, its low end, kept
    /// winning: the optimum lay between `pnpt` alone and 0.25).
    #[config(default = "vec![0.1, 0.25, 0.5, 0.75]")]
    pub weights: Vec<f64>,
    /// Image-score rules tried with every method.
    #[config(default = "vec![ScoreMode::Max, ScoreMode::TopKMean(100)]")]
    pub score_rules: Vec<ScoreMode>,
    /// Training images per category used as cut-paste donors (at most).
    #[config(default = 8)]
    pub donors: usize,
    /// Images per forward.
    #[config(default = 8)]
    pub batch_size: usize,
    /// Whether [`crate::train::train`] switches the detector to the best candidate (otherwise
    /// the configured `scoring.method` stays and validation is only reported).
    #[config(default = true)]
    pub select: bool,
    /// Whether [`crate::train::train`] also validates PNPT's map after every epoch but the last
    /// (whose entry comes from the final validation), recorded in the training history: on
    /// ad13 one pass over 276 images, roughly 30 s against 200-250 s of training per epoch.
    #[config(default = true)]
    pub per_epoch: bool,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// One scoring candidate's validation result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The scoring rule it stands for (its fields sit at the top level of the JSON).
    #[serde(flatten)]
    pub rule: ScoringRule,
    /// Mean image AUROC over categories.
    pub image_auroc: f64,
    /// Mean pixel AUROC over categories.
    pub pixel_auroc: f64,
    /// Mean AUPRO (up to 30 % FPR) over categories.
    pub aupro: f64,
    /// Per category: image AUROC, pixel AUROC, AUPRO.
    pub categories: BTreeMap<String, Scores>,
}

/// One category's validation metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Image AUROC.
    pub image_auroc: f64,
    /// Pixel AUROC.
    pub pixel_auroc: f64,
    /// AUPRO up to 30 % FPR.
    pub aupro: f64,
}

impl Candidate {
    /// What the choice maximises.
    pub fn objective(&self) -> f64 {
        (self.image_auroc + self.pixel_auroc + self.aupro) / 3.0
    }
}

/// The validation of every candidate and the one chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Every candidate, in the order tried.
    pub candidates: Vec<Candidate>,
    /// Index of the chosen candidate.
    pub chosen: usize,
    /// Held-out normal images used.
    pub normal_images: usize,
    /// Synthetic anomalous images made from them.
    pub anomalous_images: usize,
}

impl Validation {
    /// The chosen candidate.
    pub fn best(&self) -> &Candidate {
        &self.candidates[self.chosen]
    }
}

/// One category's validation images: held-out normal images, then their pseudo-anomalies.
/// Scores every candidate on a validation set built by [`ValidationSet::build`] from the
/// detector's held-out images. Needs at least one held-out image.
pub fn validate<B: Backend>(
    detector: &Detector<B>,
    set: &ValidationSet,
    options: &ValidationOptions,
) -> Result<Validation> {
    let has_memory = detector.model().memory().is_some();
    let mut methods: Vec<(ScoringMethod, f64)> = vec![(ScoringMethod::Pnpt, 0.0)];
    if has_memory {
        methods.push((ScoringMethod::Memory, 1.0));
        methods.extend(options.weights.iter().map(|&w| (ScoringMethod::Fused, w)));
    }
    let rules = if options.score_rules.is_empty() {
        vec![detector.config().scoring.score]
    } else {
        options.score_rules.clone()
    };
    // Per-position standardisation: off, for the image score only, for score and map.
    let positional: &[(bool, bool)] = if detector.post().positional().is_empty() {
        &[(false, false)]
    } else {
        &[(false, false), (true, false), (true, true)]
    };
    let candidates: Vec<ScoringRule> = methods
        .iter()
        .flat_map(|&(method, memory_weight)| rules.iter().map(move |&score| (method, memory_weight, score)))
        .flat_map(|(method, memory_weight, score)| {
            // The memory map alone has no positional variant.
            let pos: &[(bool, bool)] = if method.uses_pnpt() { positional } else { &[(false, false)] };
            pos.iter().map(move |&(positional, positional_map)| ScoringRule {
                method,
                memory_weight,
                score,
                positional,
                positional_map,
                score_from: None,
            })
        })
        .collect();
    if set.normal_images == 0 {
        return Err(Error::Validation(
            "no held-out normal image to validate on (scoring.calibration_fraction is 0?)".into(),
        ));
    }
    let per_candidate = set.score(detector, &candidates, options.batch_size, true)?;
    let mut candidates: Vec<Candidate> = candidates
        .into_iter()
        .zip(per_candidate)
        .map(|(rule, categories)| {
            let n = categories.len().max(1) as f64;
            let mean = |f: fn(&Scores) -> f64| categories.values().map(f).sum::<f64>() / n;
            Candidate {
                rule,
                image_auroc: mean(|s| s.image_auroc),
                pixel_auroc: mean(|s| s.pixel_auroc),
                aupro: mean(|s| s.aupro),
                categories,
            }
        })
        .collect();
    candidates.extend(decoupled(&candidates));
    let mut chosen = 0;
    for (i, c) in candidates.iter().enumerate() {
        if c.objective() > candidates[chosen].objective() {
            chosen = i;
        }
    }
    Ok(Validation { candidates, chosen, normal_images: set.normal_images, anomalous_images: set.anomalous_images })
}

/// The candidate whose image score comes from the best candidate at ranking images (image
/// AUROC) and whose map from the best at outlining defects (pixel AUROC plus AUPRO), the first
/// listed on ties; `None` when one candidate is best at both, the pair is already listed, or it
/// cannot be written as one rule (per-position standardisation is one switch for PNPT's part of
/// both maps, and the map can have it only where the score's map does). Its metrics are
/// theirs: the image score of a rule depends only on the map it is read from, the pixel
/// metrics only on the anomaly map.
fn decoupled(candidates: &[Candidate]) -> Option<Candidate> {
    let best = |key: fn(&Candidate) -> f64| {
        (0..candidates.len()).fold(None, |b: Option<usize>, i| match b {
            Some(b) if key(&candidates[b]) >= key(&candidates[i]) => Some(b),
            _ => Some(i),
        })
    };
    let image = &candidates[best(|c| c.image_auroc)?];
    let map = &candidates[best(|c| c.pixel_auroc + c.aupro)?];
    let from = image.rule.score_source();
    let same = from == map.rule.map_source();
    let map_positional = map.rule.positional && map.rule.positional_map && map.rule.method.uses_pnpt();
    let positional = if from.method.uses_pnpt() {
        let score_positional = image.rule.positional;
        if map_positional && !score_positional {
            return None;
        }
        score_positional
    } else {
        map_positional
    };
    let rule = ScoringRule {
        score: image.rule.score,
        positional,
        positional_map: map_positional,
        score_from: (!same).then_some(from),
        ..map.rule
    };
    if candidates.iter().any(|c| c.rule == rule) {
        return None;
    }
    let categories: BTreeMap<String, Scores> = map
        .categories
        .iter()
        .filter_map(|(name, m)| {
            let i = image.categories.get(name)?;
            Some((name.clone(), Scores { image_auroc: i.image_auroc, pixel_auroc: m.pixel_auroc, aupro: m.aupro }))
        })
        .collect();
    Some(Candidate { rule, image_auroc: image.image_auroc, pixel_auroc: map.pixel_auroc, aupro: map.aupro, categories })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnpt_model::ScoreSource;

    fn candidate(method: ScoringMethod, memory_weight: f64, positional: (bool, bool), s: [f64; 3]) -> Candidate {
        let scores = Scores { image_auroc: s[0], pixel_auroc: s[1], aupro: s[2] };
        let (positional, positional_map) = positional;
        Candidate {
            rule: ScoringRule {
                method,
                memory_weight,
                score: ScoreMode::Max,
                positional,
                positional_map,
                score_from: None,
            },
            image_auroc: s[0],
            pixel_auroc: s[1],
            aupro: s[2],
            categories: [("a".to_string(), scores)].into(),
        }
    }

    #[test]
    fn decoupled_takes_the_image_score_of_one_and_the_map_of_another() {
        let memory = candidate(ScoringMethod::Memory, 1.0, (false, false), [0.9, 0.8, 0.5]);
        let fused = candidate(ScoringMethod::Fused, 0.5, (true, true), [0.7, 0.9, 0.7]);
        let pnpt = candidate(ScoringMethod::Pnpt, 0.0, (false, false), [0.6, 0.85, 0.6]);
        let d = decoupled(&[pnpt.clone(), memory, fused.clone()]).unwrap();
        assert_eq!((d.rule.method, d.rule.memory_weight, d.rule.positional_map), (ScoringMethod::Fused, 0.5, true));
        assert_eq!(d.rule.score_from, Some(ScoreSource { method: ScoringMethod::Memory, memory_weight: 1.0 }));
        // The memory's map has no PNPT part to standardise; the map's is.
        assert!(d.rule.positional);
        assert_eq!([d.image_auroc, d.pixel_auroc, d.aupro], [0.9, 0.9, 0.7]);
        assert_eq!(d.categories["a"].image_auroc, 0.9);
        assert_eq!(d.rule.to_string(), "fused w=0.50 positional; image score max of memory");
        // One candidate best at both: nothing new.
        assert!(decoupled(&[pnpt.clone(), fused.clone()]).is_none());
        // A score from PNPT's map per class with a per-position map: not one rule.
        let pnpt_best = candidate(ScoringMethod::Pnpt, 0.0, (false, false), [0.95, 0.5, 0.5]);
        assert!(decoupled(&[pnpt_best, fused.clone()]).is_none());
        // Same map, only the standardisation differs: the map's own rule, score per position.
        let fused_plain = candidate(ScoringMethod::Fused, 0.5, (false, false), [0.5, 0.95, 0.8]);
        let d = decoupled(&[fused_plain, fused]).unwrap();
        assert_eq!((d.rule.score_from, d.rule.positional, d.rule.positional_map), (None, true, false));
        assert_eq!(d.rule.to_string(), "fused w=0.50 max positional-score");
    }
}
