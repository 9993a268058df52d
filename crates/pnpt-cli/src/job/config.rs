//! [`ConfigChoice`]: the job's configuration from a preset or file plus command-line overrides,
//! and the defaults of a job on the synthetic set.

use std::path::{Path, PathBuf};

use pnpt::model::{PnptConfig, ScoringMethod};

use crate::Result;

/// Where the configuration comes from and what overrides it (the job's command-line options).
#[derive(Debug, Clone, Default)]
pub struct ConfigChoice {
    /// Preset name (`cpu`, `paper`); ignored when `file` is given. Empty = `cpu`.
    pub preset: String,
    /// A JSON configuration file (fields it leaves out take the `cpu` preset's values).
    pub file: Option<PathBuf>,
    /// Epochs.
    pub epochs: Option<usize>,
    /// Seed of initialisation, data order, hold-out split and pseudo-anomalies.
    pub seed: Option<u64>,
    /// Backbone checkpoint (ResNet backbones).
    pub backbone_weights: Option<PathBuf>,
    /// Fixed scoring method.
    pub method: Option<ScoringMethod>,
    /// Time budget of the whole run (`train.run_budget_seconds`); `None` keeps the preset's.
    pub run_budget: Option<super::args::TimeBudget>,
}

/// Input size of the job on the embedded synthetic set (its images are 128 px): 192 instead of
/// the `cpu` preset's 256 keeps the default job within 5 minutes on 2 cores (3.0 min measured;
/// 6.7 min at 256 with the machine shared). Validation on pseudo-anomalies preferred 256
/// slightly (fused image / pixel AUROC 0.998 / 0.988 vs 0.993 / 0.977).
pub const SYNTHETIC_INPUT_SIZE: u32 = 192;

impl ConfigChoice {
    /// [`build`](Self::build) for a job on `data`; without data (the synthetic set) and without
    /// a configuration file or another preset, the synthetic defaults apply
    /// ([`SYNTHETIC_INPUT_SIZE`]).
    pub fn build_for(&self, data: Option<&Path>) -> Result<PnptConfig> {
        let mut config = self.build()?;
        let cpu = self.preset.is_empty() || self.preset.eq_ignore_ascii_case("cpu");
        if data.is_none() && self.file.is_none() && cpu {
            config.preset = "cpu-synthetic".into();
            config.input_size = SYNTHETIC_INPUT_SIZE;
            config.validate()?;
        }
        Ok(config)
    }

    /// The configuration: the file or preset with the overrides applied, validated.
    pub fn build(&self) -> Result<PnptConfig> {
        let mut config = match &self.file {
            Some(path) => PnptConfig::load(path)?,
            None => PnptConfig::preset(if self.preset.is_empty() { "cpu" } else { &self.preset })?,
        };
        if let Some(e) = self.epochs {
            config.train.epochs = e;
        }
        if let Some(s) = self.seed {
            config.train.seed = s;
        }
        if self.backbone_weights.is_some() {
            config.backbone_weights = self.backbone_weights.clone();
        }
        if let Some(m) = self.method {
            config.scoring.method = m;
        }
        if let Some(budget) = self.run_budget {
            config.train.run_budget_seconds = budget.0;
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_overrides() {
        assert!(ConfigChoice { epochs: Some(0), ..Default::default() }.build().is_err(), "0 epochs");
        let synthetic = ConfigChoice::default().build_for(None).unwrap();
        assert_eq!(synthetic.input_size, SYNTHETIC_INPUT_SIZE);
        let real = ConfigChoice::default().build_for(Some(Path::new("data"))).unwrap();
        assert_eq!((real.input_size, real.train.epochs), (256, 1));
        assert_eq!(ConfigChoice { epochs: Some(4), ..Default::default() }.build_for(None).unwrap().train.epochs, 4);
        let c =
            ConfigChoice { epochs: Some(2), seed: Some(7), method: Some(ScoringMethod::Pnpt), ..Default::default() }
                .build()
                .unwrap();
        assert_eq!((c.train.epochs, c.train.seed, c.scoring.method), (2, 7, ScoringMethod::Pnpt));
    }
}
