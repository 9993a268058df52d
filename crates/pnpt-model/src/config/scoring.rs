//! Anomaly maps and decisions: no weight depends on these.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::PnptConfig;
use crate::{Error, Result};

/// How an image score is derived from its anomaly map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreMode {
    /// Maximum of the (smoothed) map — the common practice the paper follows.
    #[default]
    Max,
    /// Mean of the `k` largest map values (more robust to single hot pixels).
    TopKMean(usize),
}

impl fmt::Display for ScoreMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScoreMode::Max => f.write_str("max"),
            ScoreMode::TopKMean(k) => write!(f, "top{k}"),
        }
    }
}

/// Anomaly map and decision settings (inference only; no weight depends on them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    /// Fusion weight `w` of Eq. 8: `F_fuse = w F*_prior + (1 - w) F*_self` (0.5, neutral).
    pub fusion_weight: f64,
    /// Gaussian smoothing sigma in pixels of the full-resolution map (`cpu` 1, `paper` 4; 0
    /// disables).
    pub sigma: f64,
    /// Image score from the map.
    pub score: ScoreMode,
    /// Fraction of each category's `train/good` images held out (never trained on) to
    /// calibrate the decision threshold (0.1).
    pub calibration_fraction: f64,
    /// Threshold = this quantile (linear interpolation) of the held-out normal scores of the
    /// category; 1.0 = their maximum (0.99).
    pub threshold_quantile: f64,
    /// Which map decides: PNPT's reconstruction map, the class-conditional patch memory's map,
    /// or both fused.
    pub method: ScoringMethod,
    /// Weight of the memory map in the fused map: `(1 - w) z_pnpt + w z_memory`, each map
    /// standardised by its retrieved class's held-out normal pixels (see `detector`).
    pub memory_weight: f64,
    /// Standardise PNPT's map position by position with its retrieved class's statistics over
    /// the normal training images (`fusion::PositionalStats`), so that regions that are always
    /// hard to reconstruct stop deciding the image score. Missing from a configuration file,
    /// it takes the preset's value like every field; detectors saved before it existed read
    /// `false` ([`PnptConfig::load_saved`]).
    pub positional: bool,
    /// With `positional`, standardise the anomaly *map* (the one shown) per position too, not
    /// only the map the image score is read from. Off, the map
    /// (heat maps, masks, pixel metrics) keeps the per-class standardisation: the per-position
    /// statistics come from training images the model has seen, whose deviations understate
    /// the held-out ones where the product varies from piece to piece, and there they rank
    /// whole regions of normal pixels above defects. Validation chooses per run; detectors saved
    /// before the field existed read the value of `positional` (their old behaviour).
    pub positional_map: bool,
    /// The map the image score is read from when it is not the anomaly map's own (`None`):
    /// what ranks whole images best and what outlines defects best need not be the same map
    /// (on real defects the memory's map often ranks images best while a fused map outlines
    /// them best), so validation chooses each on its own metrics. `positional` still decides
    /// whether PNPT's part of it is standardised per position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_from: Option<ScoreSource>,
}

/// The map an image score is read from ([`ScoringConfig::score_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreSource {
    /// Which map.
    pub method: ScoringMethod,
    /// Memory weight when `method` is `fused`.
    pub memory_weight: f64,
}

/// The scoring choices that validation picks among (`pnpt::validation`): no weight depends on
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoringRule {
    /// Which map decides.
    pub method: ScoringMethod,
    /// Memory weight of `fused`.
    pub memory_weight: f64,
    /// Image-score rule.
    pub score: ScoreMode,
    /// Per-position standardisation of PNPT's map for the image score.
    pub positional: bool,
    /// ... and for the map itself ([`ScoringConfig::positional_map`]).
    pub positional_map: bool,
    /// The image score's own map ([`ScoringConfig::score_from`]).
    pub score_from: Option<ScoreSource>,
}

impl ScoringRule {
    /// The method and memory weight of the map the image score is read from.
    pub fn score_source(&self) -> ScoreSource {
        self.score_from.unwrap_or(ScoreSource { method: self.method, memory_weight: self.memory_weight })
    }

    /// The method and memory weight of the anomaly map (the one shown).
    pub fn map_source(&self) -> ScoreSource {
        ScoreSource { method: self.method, memory_weight: self.memory_weight }
    }

    /// Whether PNPT's map is needed (for the anomaly map or the image score).
    pub fn uses_pnpt(&self) -> bool {
        self.method.uses_pnpt() || self.score_source().method.uses_pnpt()
    }

    /// Whether the patch memory's map is needed.
    pub fn uses_memory(&self) -> bool {
        self.method.uses_memory() || self.score_source().method.uses_memory()
    }

    /// Whether per-position statistics are read: by the map or by the image score.
    pub fn uses_positional(&self) -> bool {
        self.positional && self.uses_pnpt()
    }
}

fn write_method(f: &mut fmt::Formatter<'_>, method: ScoringMethod, memory_weight: f64) -> fmt::Result {
    write!(f, "{method}")?;
    if method == ScoringMethod::Fused {
        write!(f, " w={memory_weight:.2}")?;
    }
    Ok(())
}

impl fmt::Display for ScoringRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_method(f, self.method, self.memory_weight)?;
        match self.score_from {
            None => {
                write!(f, " {}", self.score)?;
                if self.positional && self.method.uses_pnpt() {
                    f.write_str(if self.positional_map { " positional" } else { " positional-score" })?;
                }
            }
            Some(source) => {
                if self.positional && self.positional_map && self.method.uses_pnpt() {
                    f.write_str(" positional")?;
                }
                write!(f, "; image score {} of ", self.score)?;
                write_method(f, source.method, source.memory_weight)?;
                if self.positional && source.method.uses_pnpt() {
                    f.write_str(" positional")?;
                }
            }
        }
        Ok(())
    }
}

impl ScoringConfig {
    /// The configured rule.
    pub fn rule(&self) -> ScoringRule {
        ScoringRule {
            method: self.method,
            memory_weight: self.memory_weight,
            score: self.score,
            positional: self.positional,
            positional_map: self.positional_map,
            score_from: self.score_from,
        }
    }

    /// Takes every field of `rule`.
    pub fn set_rule(&mut self, rule: ScoringRule) {
        let ScoringRule { method, memory_weight, score, positional, positional_map, score_from } = rule;
        (self.method, self.memory_weight, self.score) = (method, memory_weight, score);
        (self.positional, self.positional_map, self.score_from) = (positional, positional_map, score_from);
    }
}

/// Which anomaly map a detector scores with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoringMethod {
    /// PNPT's reconstruction map (Eq. 8).
    Pnpt,
    /// Nearest-neighbour distance to the retrieved class's memory bank (PatchCore), no PNPT.
    Memory,
    /// Both maps, standardised per class and summed with `memory_weight`.
    #[default]
    Fused,
}

impl ScoringMethod {
    /// All three, in report order.
    pub const ALL: [ScoringMethod; 3] = [ScoringMethod::Pnpt, ScoringMethod::Memory, ScoringMethod::Fused];

    /// Whether the PNPT transformer's map is needed.
    pub fn uses_pnpt(self) -> bool {
        self != ScoringMethod::Memory
    }
    /// Whether the patch memory's map is needed.
    pub fn uses_memory(self) -> bool {
        self != ScoringMethod::Pnpt
    }
}

impl fmt::Display for ScoringMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScoringMethod::Pnpt => "pnpt",
            ScoringMethod::Memory => "memory",
            ScoringMethod::Fused => "fused",
        })
    }
}

impl FromStr for ScoringMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pnpt" => Ok(Self::Pnpt),
            "memory" => Ok(Self::Memory),
            "fused" => Ok(Self::Fused),
            other => Err(Error::Config(format!("unknown scoring method `{other}`: expected pnpt, memory or fused"))),
        }
    }
}

impl Default for ScoringConfig {
    fn default() -> Self {
        PnptConfig::cpu().scoring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_mode_json_forms() {
        assert_eq!(serde_json::to_string(&ScoreMode::Max).unwrap(), r#""max""#);
        assert_eq!(serde_json::to_string(&ScoreMode::TopKMean(10)).unwrap(), r#"{"top_k_mean":10}"#);
    }
}
