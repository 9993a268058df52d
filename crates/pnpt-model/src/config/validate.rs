//! [`PnptConfig::validate`]: every value's range, the message naming the field.

use super::{MAX_INPUT_SIZE, PnptConfig, ScoreMode};
use crate::{Error, Result};

impl PnptConfig {
    /// Checks every value; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let m = &self.model;
        if m.hidden == 0 || m.heads == 0 || !m.hidden.is_multiple_of(m.heads) {
            return bad(format!(
                "model.hidden ({}) must be a positive multiple of model.heads ({})",
                m.hidden, m.heads
            ));
        }
        if m.layers == 0 {
            return bad("model.layers must be at least 1".into());
        }
        if m.ffn_ratio == 0 {
            return bad("model.ffn_ratio must be at least 1".into());
        }
        if m.variant.has_semantic_tokens() && m.semantic_tokens == 0 {
            return bad("model.semantic_tokens must be at least 1 (or set variant = \"no_semantic_tokens\")".into());
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return bad(format!("model.dropout ({}) must be in [0, 1)", m.dropout));
        }
        if !(m.layer_norm_eps.is_finite() && m.layer_norm_eps > 0.0) {
            return bad("model.layer_norm_eps must be positive".into());
        }
        if self.input_size < 16 || !self.input_size.is_multiple_of(16) {
            return bad(format!("input_size ({}) must be a positive multiple of 16", self.input_size));
        }
        let s = &self.scoring;
        if !(0.0..=1.0).contains(&s.fusion_weight) {
            return bad(format!("scoring.fusion_weight ({}) must be in [0, 1]", s.fusion_weight));
        }
        if !(s.sigma >= 0.0 && s.sigma <= 64.0) {
            return bad(format!("scoring.sigma ({}) must be in [0, 64]", s.sigma));
        }
        if s.score == ScoreMode::TopKMean(0) {
            return bad("scoring.score top_k_mean needs k >= 1".into());
        }
        if !(0.0..1.0).contains(&s.calibration_fraction) {
            return bad(format!("scoring.calibration_fraction ({}) must be in [0, 1)", s.calibration_fraction));
        }
        if !(0.0..=1.0).contains(&s.memory_weight) {
            return bad(format!("scoring.memory_weight ({}) must be in [0, 1]", s.memory_weight));
        }
        if let Some(from) = s.score_from.filter(|f| !(0.0..=1.0).contains(&f.memory_weight)) {
            return bad(format!("scoring.score_from.memory_weight ({}) must be in [0, 1]", from.memory_weight));
        }
        if s.rule().uses_memory() {
            self.memory.validate().map_err(|e| Error::Config(e.to_string()))?;
        }
        if !(s.threshold_quantile > 0.0 && s.threshold_quantile <= 1.0) {
            return bad(format!("scoring.threshold_quantile ({}) must be in (0, 1]", s.threshold_quantile));
        }
        let t = &self.train;
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad(format!("train.lr ({}) must be positive and finite", t.lr));
        }
        if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
            return bad(format!("train.weight_decay ({}) must be >= 0", t.weight_decay));
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) {
            return bad(format!("train.beta1/beta2 ({}, {}) must be in [0, 1)", t.beta1, t.beta2));
        }
        if !(t.eps.is_finite() && t.eps > 0.0) {
            return bad("train.eps must be positive".into());
        }
        if t.epochs == 0 {
            return bad("train.epochs must be at least 1 (0 would save an untrained detector)".into());
        }
        if t.batch_size == 0 || t.feature_batch == 0 {
            return bad("train.batch_size and train.feature_batch must be at least 1".into());
        }
        if !(t.jitter_scale.is_finite() && t.jitter_scale >= 0.0 && (0.0..=1.0).contains(&t.jitter_prob)) {
            return bad("train.jitter_scale must be >= 0 and train.jitter_prob in [0, 1]".into());
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return bad(format!("train.min_lr_ratio ({}) must be in [0, 1]", t.min_lr_ratio));
        }
        if t.grad_clip_norm.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
            return bad("train.grad_clip_norm must be positive and finite (or null)".into());
        }
        if t.time_budget_seconds.is_some_and(|b| !(b > 0.0 && b.is_finite())) {
            return bad("train.time_budget_seconds must be positive and finite (or null)".into());
        }
        if t.run_budget_seconds.is_some_and(|b| !(b > 0.0 && b.is_finite())) {
            return bad("train.run_budget_seconds must be positive and finite (or null)".into());
        }
        if self.input_size > MAX_INPUT_SIZE {
            return bad(format!(
                "input_size ({}) is above {MAX_INPUT_SIZE}: the backbone's maps and PNPT's attention grow with its square",
                self.input_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn typos_and_bad_values_are_errors() {
        assert!(serde_json::from_str::<PnptConfig>(r#"{"model": {"hiden": 3}}"#).is_err());
        let mut cfg = PnptConfig::cpu();
        cfg.model.heads = 7;
        assert!(cfg.validate().unwrap_err().to_string().contains("model.heads"));
        let mut cfg = PnptConfig::cpu();
        cfg.input_size = 100;
        assert!(cfg.validate().is_err());
        let mut cfg = PnptConfig::cpu();
        cfg.train.lr = f64::NAN;
        assert!(cfg.validate().is_err());
    }
}
