//! The job's command line: [`TrainArgs`] and the parsers of its values.

use std::path::{Path, PathBuf};

use pnpt::backend::DeviceSpec;
use pnpt::model::ScoringMethod;
use pnpt::model::train::{FeatureStorage, NodeOptions, parse_size};

use super::{ConfigChoice, JobKind, JobOptions};
use crate::{CliError, Result};

/// `90s`, `15m`, `1.5h` or plain seconds, as `--time-budget` takes it.
pub fn parse_duration(text: &str) -> Result<f64> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3600.0),
        _ => (t, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v * unit),
        _ => Err(pnpt::model::Error::Config(format!(
            "time budget `{text}`: expected a positive duration such as 900s, 15m or 1h"
        ))
        .into()),
    }
}

/// A `--time-budget`: a duration in seconds, or no limit (`none`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeBudget(pub Option<f64>);

/// `none` (or `off`) for no limit, else a duration as [`parse_duration`] reads it.
pub fn parse_time_budget(text: &str) -> Result<TimeBudget> {
    match text.trim().to_ascii_lowercase().as_str() {
        "none" | "off" => Ok(TimeBudget(None)),
        _ => parse_duration(text).map(|s| TimeBudget(Some(s))),
    }
}

/// A whole number for the command-line option `flag`, at most `max`: too large is
/// [`CliError::OutOfRange`], anything else that is not a whole number [`CliError::NotANumber`].
pub fn parse_whole(flag: &str, text: &str, max: u64) -> Result<u64> {
    use std::num::IntErrorKind;
    let v = text.trim();
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(CliError::OutOfRange { flag: flag.into(), value: v.into(), max }),
        // Only digits but too many of them: out of range, not "not a number".
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => {
            Err(CliError::OutOfRange { flag: flag.into(), value: v.into(), max })
        }
        Err(_) => Err(CliError::NotANumber { flag: flag.into(), value: v.into() }),
    }
}

/// The comma-separated names of `--categories` (blanks trimmed, empty items dropped); no name
/// at all is [`CliError::EmptyList`].
pub fn parse_categories(text: &str) -> Result<Vec<String>> {
    let list: Vec<String> = text.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if list.is_empty() {
        return Err(CliError::EmptyList { flag: "--categories".into() });
    }
    Ok(list)
}

/// The comma-separated devices of `--devices` (at least one).
pub fn parse_devices(text: &str) -> Result<Vec<DeviceSpec>> {
    let list =
        text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect::<pnpt::Result<Vec<_>>>()?;
    if list.is_empty() {
        return Err(CliError::EmptyList { flag: "--devices".into() });
    }
    Ok(list)
}

/// The output folder and whether to resume, from `--resume DIR` and `--out`: a run resumes in
/// its own folder, so `--out` may be left out or must name the same folder as `DIR`
/// (compared after resolving `.`, `..` and links); another `--out` is
/// [`CliError::Resume`] (nothing is created or cleared). Without either the
/// folder is `pnpt-out`.
pub fn resume_folder(resume: Option<&Path>, out: Option<&Path>) -> Result<(PathBuf, bool)> {
    match (resume, out) {
        (Some(r), Some(o)) => {
            let same = match (r.canonicalize(), o.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => r == o,
            };
            if !same {
                return Err(CliError::Resume {
                    path: r.to_path_buf(),
                    reason: format!(
                        "a run resumes in its own folder, not in --out {} (leave --out out, or copy the folder first)",
                        o.display()
                    ),
                });
            }
            Ok((r.to_path_buf(), true))
        }
        (Some(r), None) => Ok((r.to_path_buf(), true)),
        (None, o) => Ok((o.map_or_else(|| PathBuf::from("pnpt-out"), Path::to_path_buf), false)),
    }
}

/// The job's command line, shared by `pnpt train` and `examples/train_mvtec.rs` (each
/// flattens it into its parser with `#[command(flatten)]`); [`job_options`](Self::job_options)
/// turns it into [`JobOptions`].
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// MVTec-layout dataset (default: the synthetic dataset, generated once into the cache).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Only these categories (comma-separated).
    #[arg(long, value_parser = |s: &str| parse_categories(s).map_err(|e| e.to_string()))]
    pub categories: Option<::std::vec::Vec<String>>, // the full path: one value, parsed whole
    /// Device: cpu, wgpu, wgpu:N, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Configuration preset: cpu or paper.
    #[arg(long, default_value = "cpu")]
    pub preset: String,
    /// JSON configuration file (fields it leaves out take the cpu preset's values).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Epochs (on --resume: at least the epochs done; more extends the run).
    #[arg(long, value_parser = |s: &str| parse_whole("--epochs", s, usize::MAX as u64).map(|n| n as usize).map_err(|e| e.to_string()))]
    pub epochs: Option<usize>,
    /// Seed.
    #[arg(long, value_parser = |s: &str| parse_whole("--seed", s, u64::MAX).map_err(|e| e.to_string()))]
    pub seed: Option<u64>,
    /// Output folder (default pnpt-out, or the --resume folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run whose output folder is DIR from its last checkpoint (same data and
    /// configuration; --out, if given, must be DIR).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Backbone checkpoint (.pth or .safetensors; ResNet backbones).
    #[arg(long)]
    pub backbone_weights: Option<PathBuf>,
    /// Write no heat maps.
    #[arg(long)]
    pub no_heatmaps: bool,
    /// Replace an earlier run in --out (its report, detector/, checkpoint/) instead of
    /// refusing to; --resume continues one instead.
    #[arg(long)]
    pub overwrite: bool,
    /// Fix the scoring method instead of choosing it on validation (with --evaluate: switch the
    /// saved detector's method, thresholds recalibrated on the held-out split of --data).
    #[arg(long)]
    pub method: Option<ScoringMethod>,
    /// The whole training run (features, memory, transformer, statistics, validation) in this
    /// time: the transformer gets what the other steps leave, and stops mid-epoch if need be
    /// (900s, 15m, 1h; `none`: no limit) [default: the preset's, 15m for cpu].
    #[arg(long, value_parser = |s: &str| parse_time_budget(s).map_err(|e| e.to_string()))]
    pub time_budget: Option<TimeBudget>,
    /// Skip training: load this saved detector and evaluate it on --data (as `pnpt eval`).
    #[arg(long, value_name = "DETECTOR_DIR")]
    pub evaluate: Option<PathBuf>,
    /// With --evaluate: re-fit the detector's scoring on --data first (positional statistics,
    /// validation, thresholds; the weights stay) and save it to OUT/detector.
    #[arg(long)]
    pub rescore: bool,
    /// Data-parallel training on these devices of one backend, comma-separated (cuda:0,cuda:1;
    /// cpu,cpu runs two replicas on the CPU); replaces --device.
    #[arg(long, value_parser = |s: &str| parse_devices(s).map_err(|e| e.to_string()))]
    pub devices: Option<::std::vec::Vec<DeviceSpec>>, // the full path: one value, parsed whole
    /// Processes in a multi-node run (one device each); every one runs this command with the
    /// same data and options and its own --node-rank.
    #[arg(long, requires_all = ["node_rank", "orchestrator"])]
    pub nodes: Option<u32>,
    /// This process's rank in a multi-node run, 0..N (rank 0 listens at --orchestrator).
    #[arg(long, requires = "nodes")]
    pub node_rank: Option<u32>,
    /// Where node 0 listens and the others connect, the same for every node: HOST:PORT.
    #[arg(long, requires = "nodes")]
    pub orchestrator: Option<String>,
    /// Where the training features are kept: auto (in memory when they fit in --feature-memory,
    /// else on disk), memory, disk, disk-f16.
    #[arg(long, default_value = "auto")]
    pub feature_storage: FeatureStorage,
    /// The memory the training features may take (4GiB, 512MiB); default: what is available.
    #[arg(long, value_parser = |s: &str| parse_size(s).map_err(|e| e.to_string()))]
    pub feature_memory: Option<u64>,
}

impl TrainArgs {
    /// The job these options ask for: the configuration from [`ConfigChoice::build_for`], the
    /// output folder and resumption from [`resume_folder`]. `--rescore` without `--evaluate` is
    /// [`CliError::Arguments`].
    pub fn job_options(self) -> Result<JobOptions> {
        if self.rescore && self.evaluate.is_none() {
            return Err(CliError::Arguments(
                "--rescore re-fits a saved detector: it needs --evaluate DETECTOR_DIR".into(),
            ));
        }
        let config = ConfigChoice {
            preset: self.preset,
            file: self.config,
            epochs: self.epochs,
            seed: self.seed,
            backbone_weights: self.backbone_weights,
            method: self.method,
            run_budget: self.time_budget,
        }
        .build_for(self.data.as_deref())?;
        let (out, resume) = resume_folder(self.resume.as_deref(), self.out.as_deref())?;
        let nodes = match (self.nodes, self.node_rank, self.orchestrator) {
            (Some(nodes), Some(rank), Some(orchestrator)) => Some(NodeOptions { nodes, rank, orchestrator }),
            _ => None,
        };
        // With --evaluate there is nothing to train, so --resume only names the folder.
        let evaluate = self.evaluate.is_some();
        let kind = match self.evaluate {
            Some(detector) => JobKind::Evaluate { detector, rescore: self.rescore },
            None => JobKind::Train { resume },
        };
        Ok(JobOptions::new(config)
            .with_devices(self.devices.unwrap_or_default())
            .with_nodes(nodes)
            .with_feature_storage(self.feature_storage)
            .with_feature_memory(self.feature_memory)
            .with_data(self.data)
            .with_categories(self.categories)
            .with_device(self.device)
            .with_out(out)
            .with_kind(kind)
            .with_heatmaps(!self.no_heatmaps)
            .with_method(self.method)
            // With --evaluate, --resume only names the run's folder, which is written to on
            // purpose (a resumed training run continues its own folder in any case).
            .with_overwrite(self.overwrite || (resume && evaluate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::SYNTHETIC_INPUT_SIZE;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap(), 900.0);
        assert_eq!(parse_duration("1.5h").unwrap(), 5400.0);
        assert_eq!(parse_duration(" 90 ").unwrap(), 90.0);
        for bad in ["", "m", "-1s", "0", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_time_budget("None").unwrap(), TimeBudget(None));
        assert_eq!(parse_time_budget(" off ").unwrap(), TimeBudget(None));
        assert_eq!(parse_time_budget("10m").unwrap(), TimeBudget(Some(600.0)));
        assert!(parse_time_budget("never").is_err());
    }

    /// Every flag of `pnpt train` and `examples/train_mvtec.rs`, and the checks clap leaves to
    /// [`TrainArgs::job_options`].
    #[test]
    fn train_args_take_every_flag() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            train: TrainArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("train_mvtec").chain(args.iter().copied()));
        let dir = std::env::temp_dir().join(format!("pnpt-train-args-{}", std::process::id()));
        let dir = dir.to_str().unwrap();
        let line = format!(
            "--data data --categories a,b --device cpu --preset paper --epochs 4 --seed 7 --out {dir} --resume {dir} \
             --backbone-weights w.pth --no-heatmaps --overwrite --method memory --time-budget 15m --evaluate det --rescore \
             --devices cpu,flex --nodes 2 --node-rank 1 --orchestrator h:3000 \
             --feature-storage disk-f16 --feature-memory 1.5GiB"
        );
        let a = parse(&line.split_whitespace().collect::<Vec<_>>()).unwrap().train;
        assert_eq!(a.categories.as_deref(), Some(&["a".to_string(), "b".to_string()][..]));
        assert_eq!((a.epochs, a.seed, a.time_budget), (Some(4), Some(7), Some(TimeBudget(Some(900.0)))));
        assert_eq!(a.method, Some(ScoringMethod::Memory));
        let o = a.job_options().unwrap();
        assert_eq!((o.config.preset.as_str(), o.config.train.epochs, o.config.train.seed), ("paper", 4, 7));
        assert_eq!(o.config.backbone_weights.as_deref(), Some(Path::new("w.pth")));
        assert_eq!(o.config.train.run_budget_seconds, Some(900.0));
        assert!(!o.heatmaps && o.verbose && o.overwrite);
        assert_eq!(o.kind, JobKind::Evaluate { detector: "det".into(), rescore: true });
        assert_eq!(o.out.to_str(), Some(dir));
        assert_eq!(o.devices, vec![DeviceSpec::Cpu, DeviceSpec::Flex]);
        assert_eq!(o.nodes, Some(NodeOptions { nodes: 2, rank: 1, orchestrator: "h:3000".into() }));
        assert_eq!((o.feature_storage, o.feature_memory), (FeatureStorage::DiskF16, Some(3 << 29)));
        // A multi-node run needs all of its flags; devices need at least one name.
        assert!(parse(&["--nodes", "2", "--node-rank", "0"]).is_err());
        assert!(parse(&["--node-rank", "0"]).is_err());
        assert!(parse(&["--devices", ","]).is_err());
        assert!(parse(&["--feature-memory", "lots"]).is_err());
        // Defaults: the synthetic job in pnpt-out.
        let o = parse(&[]).unwrap().train.job_options().unwrap();
        assert_eq!(o.kind, JobKind::Train { resume: false });
        assert_eq!((o.out.to_str(), o.heatmaps, o.data.is_none()), (Some("pnpt-out"), true, true));
        assert!(!o.overwrite, "an earlier run is kept unless asked");
        assert_eq!(
            (o.config.input_size, o.config.train.epochs),
            (SYNTHETIC_INPUT_SIZE, pnpt::model::PnptConfig::cpu().train.epochs)
        );
        let err = parse(&["--rescore"]).unwrap().train.job_options().unwrap_err();
        assert!(err.to_string().contains("it needs --evaluate DETECTOR_DIR"), "{err}");
        for bad in [&["--epochs", "three"][..], &["--categories", " , "], &["--device", "tpu"], &["--bogus"]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&["--help"]).err().map(|e| e.kind()), Some(clap::error::ErrorKind::DisplayHelp));
    }
}
