//! The post-processor: everything after the raw maps — per-class and per-position
//! standardisation, fusion, the image score, thresholds, verdicts and masks. No weight depends
//! on it, so it is re-fitted (`rescore`) and re-calibrated without retraining.

use std::collections::BTreeMap;

use super::model::{Components, category_index, raise_limit};
use super::prediction::{BatchOutput, CategoryThresholds, PIXEL_QUANTILE, Prediction};
use super::thresholds::{Thresholds, quantile_of};
use crate::anomaly_map::host_image_score;
use crate::config::{ScoreMode, ScoreSource, ScoringConfig, ScoringRule};
use crate::fusion::{MapStats, Normalization, PositionalStats, combine_maps};
use crate::{Error, Result};

/// The scoring rule and what it was fitted and calibrated to: per-class map statistics
/// ([`Normalization`]), per-position statistics of PNPT's map ([`PositionalStats`]) and the
/// per-category thresholds.
///
/// A detector folder keeps it in `config.json` (the rule), `normalization.json`,
/// `positional.npy` and `thresholds.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct PostProcessor {
    rule: ScoringRule,
    threshold_quantile: f64,
    /// Category names in the pool's order (what `Components::categories` index).
    categories: Vec<String>,
    normalization: Normalization,
    positional: PositionalStats,
    thresholds: Thresholds,
}

impl PostProcessor {
    /// An unfitted post-processor for `categories` (pool order) with `scoring`'s rule: no
    /// statistics, no thresholds.
    pub fn new(categories: Vec<String>, scoring: &ScoringConfig) -> Self {
        Self {
            rule: scoring.rule(),
            threshold_quantile: scoring.threshold_quantile,
            categories,
            normalization: Normalization::default(),
            positional: PositionalStats::default(),
            thresholds: Thresholds::default(),
        }
    }

    /// Assembles a fitted post-processor (a saved detector's parts).
    pub(super) fn from_parts(
        categories: Vec<String>,
        scoring: &ScoringConfig,
        normalization: Normalization,
        positional: PositionalStats,
        thresholds: Thresholds,
    ) -> Self {
        Self { normalization, positional, thresholds, ..Self::new(categories, scoring) }
    }

    /// The scoring rule.
    pub fn rule(&self) -> ScoringRule {
        self.rule
    }
    /// The quantile of held-out normal scores that is a category's image threshold.
    pub fn threshold_quantile(&self) -> f64 {
        self.threshold_quantile
    }
    /// Category names (pool order).
    pub fn categories(&self) -> &[String] {
        &self.categories
    }
    /// The per-class map statistics.
    pub fn normalization(&self) -> &Normalization {
        &self.normalization
    }
    /// The per-position statistics of PNPT's map (empty when never fitted).
    pub fn positional(&self) -> &PositionalStats {
        &self.positional
    }
    /// The calibrated thresholds.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Switches every scoring choice at once. The thresholds belong to the previous rule:
    /// [`calibrate`](Self::calibrate) again before trusting decisions. Per-position
    /// standardisation needs the statistics [`fit_positional`](Self::fit_positional) computes.
    pub fn set_rule(&mut self, rule: ScoringRule) -> Result<()> {
        if rule.uses_positional() && self.positional.is_empty() {
            return Err(Error::Config("per-position standardisation needs the detector's positional statistics, and it has none (fit them on its training images first)".into()));
        }
        if rule.score == ScoreMode::TopKMean(0) {
            return Err(Error::Config("scoring.score top_k_mean needs k >= 1".into()));
        }
        for ScoreSource { memory_weight, .. } in [rule.score_source(), rule.map_source()] {
            if !(0.0..=1.0).contains(&memory_weight) {
                return Err(Error::Config(format!("scoring.memory_weight ({memory_weight}) must be in [0, 1]")));
            }
        }
        self.rule = ScoringRule { positional_map: rule.positional && rule.positional_map, ..rule };
        Ok(())
    }

    /// Fits the per-position statistics of PNPT's map from the maps of normal training images
    /// (`parts.pnpt`), each grouped by the class its map was computed with.
    pub fn fit_positional(&mut self, parts: &Components) -> Result<()> {
        let maps =
            parts.pnpt.as_deref().ok_or_else(|| Error::Invalid("positional statistics need PNPT maps".into()))?;
        let names: Vec<String> = self.names_of(&parts.categories)?.into_iter().map(str::to_string).collect();
        self.positional = PositionalStats::fit(&names, maps, parts.size * parts.size);
        Ok(())
    }

    /// Raises the retrieval-distance limits to at least `limits` (e.g. the training images').
    pub fn raise_retrieval_limits(&mut self, limits: &BTreeMap<String, f32>) {
        for (class, &limit) in limits {
            let e = self.thresholds.retrieval.entry(class.clone()).or_insert(limit);
            *e = e.max(limit);
        }
    }

    /// Calibrates on the raw maps of normal images (`truth`: the true category of each): the
    /// per-class statistics of every map present, then the image and pixel thresholds of the
    /// rule; the retrieval limits only grow (they also hold the training images').
    pub fn calibrate(&mut self, parts: &Components, truth: &[String]) -> Result<()> {
        let px = parts.size * parts.size;
        self.normalization = Normalization::fit(truth, parts.pnpt.as_deref(), parts.memory.as_deref(), px);
        let out = if truth.is_empty() {
            BatchOutput { maps: vec![], scores: vec![], categories: vec![], distances: vec![], size: parts.size }
        } else {
            self.combine(parts)?
        };
        let mut retrieval = std::mem::take(&mut self.thresholds.retrieval);
        for (name, &d) in self.names_of(&parts.categories)?.into_iter().zip(&parts.distances) {
            raise_limit(&mut retrieval, name, d);
        }
        let (pixel, pixel_median) = pixel_statistics(&out.maps, truth, px);
        let pairs: Vec<(String, f32)> = truth.iter().cloned().zip(out.scores).collect();
        self.thresholds =
            Thresholds { pixel, pixel_median, retrieval, ..Thresholds::calibrate(self.threshold_quantile, &pairs) };
        Ok(())
    }

    /// Combines raw maps into the final maps and image scores of the rule.
    pub fn combine(&self, parts: &Components) -> Result<BatchOutput> {
        self.combine_with(parts, &self.rule)
    }

    /// Combines raw maps by any scoring rule (what validation compares). With `positional`, the
    /// map the image score is read from uses PNPT's map standardised position by position
    /// (floored by the class's held-out deviation) instead of by the class's one mean and
    /// deviation, where the class has positional statistics; with `positional_map` too, so does
    /// the returned anomaly map. The image score reads the anomaly map's own combination unless
    /// `score_from` names another.
    pub fn combine_with(&self, parts: &Components, rule: &ScoringRule) -> Result<BatchOutput> {
        let px = parts.size * parts.size;
        let n = parts.categories.len();
        fn pick<'a>(
            v: &'a Option<Vec<f32>>,
            wanted: bool,
            len: usize,
            what: &str,
            rule: &ScoringRule,
        ) -> Result<Option<&'a [f32]>> {
            match (v, wanted) {
                (_, false) => Ok(None),
                (Some(v), true) if v.len() == len => Ok(Some(v.as_slice())),
                _ => Err(Error::Invalid(format!("scoring rule `{rule}` needs the {what} maps of every image"))),
            }
        }
        // Checked before the first map is read, so a short `parts` is an error, not a panic.
        let pnpt = pick(&parts.pnpt, rule.uses_pnpt(), n * px, "PNPT", rule)?;
        let memory = pick(&parts.memory, rule.uses_memory(), n * px, "patch memory", rule)?;
        let names = self.names_of(&parts.categories)?;
        let source = rule.score_source();
        let map_positional = rule.positional && rule.positional_map;
        // The image score reads the anomaly map itself when both are the same map.
        let own_map = source == rule.map_source() && (rule.positional == map_positional || !rule.method.uses_pnpt());
        let mut maps = Vec::with_capacity(n * px);
        let mut scores = Vec::with_capacity(n);
        for (i, &name) in names.iter().enumerate() {
            let (sp, sm) = self.normalization.for_category(name);
            let own = pnpt.map(|m| &m[i * px..(i + 1) * px]);
            let mem = memory.map(|m| &m[i * px..(i + 1) * px]);
            let z = own.filter(|_| rule.uses_positional()).and_then(|p| self.positional.standardise(name, p, sp.std));
            let map_of = |ScoreSource { method, memory_weight }: ScoreSource, positional: bool| {
                let mem = mem.filter(|_| method.uses_memory());
                match (&z, method.uses_pnpt()) {
                    (Some(z), true) if positional => {
                        combine_maps(Some(z), mem, (MapStats::IDENTITY, sm), memory_weight)
                    }
                    (_, uses) => combine_maps(own.filter(|_| uses), mem, (sp, sm), memory_weight),
                }
            };
            let map = map_of(rule.map_source(), map_positional);
            let score = if own_map {
                host_image_score(&map, rule.score)
            } else {
                host_image_score(&map_of(source, rule.positional), rule.score)
            };
            scores.push(score);
            maps.extend(map);
        }
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(Error::Invalid("non-finite anomaly score (NaN features?)".into()));
        }
        // Outputs built by hand (tests) may carry no distances: read as 0, never unknown.
        let mut distances = parts.distances.clone();
        distances.resize(n, 0.0);
        Ok(BatchOutput { maps, scores, categories: parts.categories.clone(), distances, size: parts.size })
    }

    /// Splits a batch result into per-image predictions with verdicts.
    pub fn predictions(&self, out: BatchOutput) -> Result<Vec<Prediction>> {
        let px = out.size * out.size;
        let names = self.names_of(&out.categories)?;
        Ok(names
            .into_iter()
            .enumerate()
            .map(|(i, category)| {
                let threshold = self.thresholds.for_category(category);
                let distance = out.distances.get(i).copied().unwrap_or(0.0);
                Prediction {
                    score: out.scores[i],
                    anomaly_map: out.maps[i * px..(i + 1) * px].to_vec(),
                    height: out.size,
                    width: out.size,
                    is_anomalous: threshold.is_some_and(|t| out.scores[i] > t),
                    threshold,
                    normalized_score: threshold.filter(|t| *t > 0.0).map(|t| out.scores[i] / t),
                    pixel_threshold: self.thresholds.pixel.get(category).copied(),
                    retrieval_distance: distance,
                    unknown_category: self.thresholds.retrieval.get(category).is_some_and(|&l| distance > l),
                    category: category.to_string(),
                }
            })
            .collect())
    }

    /// The thresholds `category` is judged by.
    pub fn category_thresholds(&self, category: &str) -> Result<CategoryThresholds> {
        category_index(&self.categories, category)?;
        let t = &self.thresholds;
        Ok(CategoryThresholds {
            image: t.for_category(category),
            pixel: t.pixel.get(category).copied(),
            retrieval: t.retrieval.get(category).copied(),
        })
    }

    /// Replaces the thresholds of `category` (`None` removes one). A later
    /// [`calibrate`](Self::calibrate) overwrites the image and pixel thresholds.
    pub fn set_category_thresholds(&mut self, category: &str, new: CategoryThresholds) -> Result<()> {
        category_index(&self.categories, category)?;
        for (what, v) in [("image", new.image), ("pixel", new.pixel), ("retrieval", new.retrieval)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(Error::Invalid(format!(
                    "category `{category}`: the {what} threshold must be finite, got {v:?}"
                )));
            }
        }
        let t = &mut self.thresholds;
        let set = |map: &mut BTreeMap<String, f32>, v: Option<f32>| match v {
            Some(v) => map.insert(category.to_string(), v),
            None => map.remove(category),
        };
        set(&mut t.per_category, new.image);
        set(&mut t.pixel, new.pixel);
        set(&mut t.retrieval, new.retrieval);
        Ok(())
    }

    /// The names of pool indices, borrowed (scoring runs this per batch).
    fn names_of(&self, indices: &[usize]) -> Result<Vec<&str>> {
        indices
            .iter()
            .map(|&c| {
                self.categories.get(c).map(String::as_str).ok_or_else(|| {
                    Error::Invalid(format!("class index {c} out of range for {} categories", self.categories.len()))
                })
            })
            .collect()
    }
}

/// Per category ([`PIXEL_QUANTILE`] quantile, median) of the pixels of `maps` (`px` per image,
/// grouped by `truth`).
fn pixel_statistics(maps: &[f32], truth: &[String], px: usize) -> (BTreeMap<String, f32>, BTreeMap<String, f32>) {
    let mut by_cat: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    for (i, c) in truth.iter().enumerate() {
        if let Some(m) = maps.get(i * px..(i + 1) * px) {
            by_cat.entry(c).or_default().extend_from_slice(m);
        }
    }
    let (mut high, mut median) = (BTreeMap::new(), BTreeMap::new());
    for (c, v) in by_cat {
        if let (Some(h), Some(m)) = (quantile_of(v.clone(), PIXEL_QUANTILE), quantile_of(v, 0.5)) {
            high.insert(c.to_string(), h);
            median.insert(c.to_string(), m);
        }
    }
    (high, median)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::RETRIEVAL_MARGIN;

    #[test]
    fn pixel_statistics_per_category() {
        // Two images of `a` (values 0..99 and 100..199), one of `b` (all 5).
        let mut maps: Vec<f32> = (0..200).map(|v| v as f32).collect();
        maps.extend([5.0; 100]);
        let truth = ["a", "a", "b"].map(String::from);
        let (high, median) = pixel_statistics(&maps, &truth, 100);
        assert!((high["a"] - 197.01).abs() < 1e-3, "{}", high["a"]);
        assert_eq!(median["a"], 99.5);
        assert_eq!((high["b"], median["b"]), (5.0, 5.0));
        // A short map list never panics: the missing image is skipped.
        assert_eq!(pixel_statistics(&maps[..150], &truth, 100).0.len(), 1);
    }

    #[test]
    fn limits_take_the_margin_and_the_maximum() {
        let scoring = ScoringConfig::default();
        let mut post = PostProcessor::new(["a", "b"].map(String::from).to_vec(), &scoring);
        let parts = Components {
            categories: vec![0, 0, 1],
            distances: vec![1.0, 2.0, f32::NAN],
            size: 1,
            ..Default::default()
        };
        post.calibrate(&Components { pnpt: None, memory: None, ..parts }, &[]).unwrap();
        assert_eq!(post.thresholds().retrieval.get("a"), Some(&(2.0 * RETRIEVAL_MARGIN)));
        assert_eq!(post.thresholds().retrieval.get("b"), None, "a NaN distance sets no limit");
        // Raising by a smaller limit keeps the larger one.
        post.raise_retrieval_limits(&BTreeMap::from([("a".to_string(), 1.0), ("b".to_string(), 4.0)]));
        assert_eq!(post.thresholds().retrieval.get("a"), Some(&(2.0 * RETRIEVAL_MARGIN)));
        assert_eq!(post.thresholds().retrieval.get("b"), Some(&4.0));
    }

    #[test]
    fn a_class_index_outside_the_categories_is_an_error() {
        let post = PostProcessor::new(vec!["a".into()], &ScoringConfig::default());
        let rule = ScoringRule { method: crate::ScoringMethod::Memory, ..post.rule() };
        let parts = Components { memory: Some(vec![0.0; 2]), categories: vec![0, 1], size: 1, ..Default::default() };
        assert!(post.combine_with(&parts, &rule).unwrap_err().to_string().contains("out of range"));
    }
}
