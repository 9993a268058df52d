//! Reading a torchvision state dict and checking it against the requested architecture.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use burn::tensor::backend::Backend;

use super::config::{BlockKind, ResNetConfig};
use super::fold::CheckedSource;
use super::model::ResNet;
use crate::BackboneError;

/// How many problem keys an error message lists before summarising the rest.
const MAX_LISTED: usize = 12;

impl ResNetConfig {
    /// Every tensor the stem and `layer1..3` hold, with its torchvision key and shape.
    fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        conv_bn_keys(&mut out, "conv1", "bn1", [64, 3, 7, 7]);
        let mut in_ch = 64;
        for (stage, &blocks) in self.layers.iter().enumerate() {
            let planes = 64 << stage;
            let out_ch = planes * self.block.expansion();
            let width = self.inner_width(planes);
            for b in 0..blocks {
                let p = format!("layer{}.{b}", stage + 1);
                let stride = if b == 0 && stage > 0 { 2 } else { 1 };
                match self.block {
                    BlockKind::Basic => {
                        conv_bn_keys(&mut out, &format!("{p}.conv1"), &format!("{p}.bn1"), [width, in_ch, 3, 3]);
                        conv_bn_keys(&mut out, &format!("{p}.conv2"), &format!("{p}.bn2"), [out_ch, width, 3, 3]);
                    }
                    BlockKind::Bottleneck => {
                        conv_bn_keys(&mut out, &format!("{p}.conv1"), &format!("{p}.bn1"), [width, in_ch, 1, 1]);
                        conv_bn_keys(&mut out, &format!("{p}.conv2"), &format!("{p}.bn2"), [width, width, 3, 3]);
                        conv_bn_keys(&mut out, &format!("{p}.conv3"), &format!("{p}.bn3"), [out_ch, width, 1, 1]);
                    }
                }
                if b == 0 && (stride != 1 || in_ch != out_ch) {
                    conv_bn_keys(
                        &mut out,
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        [out_ch, in_ch, 1, 1],
                    );
                }
                in_ch = out_ch;
            }
        }
        out
    }

    /// Infers the config a torchvision state dict was saved from (stem and layer1..3 only).
    fn detect(shapes: &BTreeMap<String, Vec<usize>>) -> Option<Self> {
        shapes.get("conv1.weight")?;
        let block = if shapes.contains_key("layer1.0.conv3.weight") {
            BlockKind::Bottleneck
        } else if shapes.contains_key("layer1.0.conv2.weight") {
            BlockKind::Basic
        } else {
            return None;
        };
        let mut layers = [0usize; 3];
        for (stage, n) in layers.iter_mut().enumerate() {
            while shapes.contains_key(&format!("layer{}.{}.conv1.weight", stage + 1, *n)) {
                *n += 1;
            }
        }
        let width_per_group = match block {
            BlockKind::Basic => 64,
            // layer1's inner width is width_per_group itself (planes = 64).
            BlockKind::Bottleneck => *shapes.get("layer1.0.conv1.weight")?.first()?,
        };
        Some(Self { block, layers, width_per_group })
    }
}

fn conv_bn_keys(out: &mut Vec<(String, Vec<usize>)>, conv: &str, bn: &str, shape: [usize; 4]) {
    out.push((format!("{conv}.weight"), shape.to_vec()));
    for stat in ["weight", "bias", "running_mean", "running_var"] {
        out.push((format!("{bn}.{stat}"), vec![shape[0]]));
    }
}

impl<B: Backend> ResNet<B> {
    /// Loads a torchvision state dict (`.pth` zip or legacy pickle, or `.safetensors`).
    ///
    /// Keys of `layer4` and `fc` (and anything else outside the stem and `layer1..3`) are
    /// ignored; missing, mis-shaped or unexpected keys within them are an error that names
    /// them, and a checkpoint of a different ResNet is reported as such.
    pub fn load(config: &ResNetConfig, path: &Path, device: &B::Device) -> Result<Self, BackboneError> {
        config.validate().map_err(|reason| BackboneError::Config { reason })?;
        let tensors = read_state_dict(path)?;
        let shapes: BTreeMap<String, Vec<usize>> =
            tensors.iter().map(|(k, snap)| (k.clone(), snap.shape.to_vec())).collect();

        let mismatch = |reason: String| BackboneError::Checkpoint { path: path.to_path_buf(), reason };
        match ResNetConfig::detect(&shapes) {
            None => {
                let sample: Vec<&String> = shapes.keys().take(5).collect();
                return Err(mismatch(format!(
                    "not a torchvision ResNet state dict (no conv1.weight / layer1.0.conv* keys; \
                     it has {} tensors, e.g. {sample:?})",
                    shapes.len()
                )));
            }
            Some(found) if found != *config => {
                return Err(mismatch(format!("checkpoint holds a ResNet with {found}, expected {config}")));
            }
            Some(_) => {}
        }

        let expected = config.expected_tensors();
        let expected_keys: BTreeSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
        let mut problems = Vec::new();
        for (key, shape) in &expected {
            match shapes.get(key) {
                None => problems.push(format!("missing {key}")),
                Some(s) if s != shape => problems.push(format!("{key}: shape {s:?}, expected {shape:?}")),
                Some(_) => {}
            }
        }
        for key in shapes.keys() {
            let in_scope = ["conv1.", "bn1.", "layer1.", "layer2.", "layer3."].iter().any(|p| key.starts_with(p));
            // BatchNorm's step counter is bookkeeping, not a weight.
            if in_scope && !expected_keys.contains(key.as_str()) && !key.ends_with(".num_batches_tracked") {
                problems.push(format!("unexpected {key}"));
            }
        }
        if !problems.is_empty() {
            let n = problems.len();
            let mut reason = format!("{n} problem(s) for {config}: ");
            reason.push_str(&problems.iter().take(MAX_LISTED).cloned().collect::<Vec<_>>().join("; "));
            if n > MAX_LISTED {
                reason.push_str(&format!("; and {} more", n - MAX_LISTED));
            }
            return Err(mismatch(reason));
        }

        let mut values = HashMap::new();
        for (key, _) in expected {
            // Only the tensors in use are read (a full checkpoint's layer4 and fc are skipped).
            let data = tensors[&key].to_data().map_err(|e| mismatch(format!("cannot read tensor {key}: {e:?}")))?;
            let v: Vec<f32> = data.iter::<f32>().collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(mismatch(format!("{key} holds NaN or infinite values")));
            }
            values.insert(key, v);
        }
        Ok(Self::build(config, &mut CheckedSource(values), device))
    }
}

/// Reads the tensor snapshots of a state dict (data is loaded lazily), by file extension.
fn read_state_dict(path: &Path) -> Result<BTreeMap<String, burn_store::TensorSnapshot>, BackboneError> {
    let err = |reason: String| BackboneError::Checkpoint { path: path.to_path_buf(), reason };
    if !path.is_file() {
        return Err(err("no such file".into()));
    }
    let is_safetensors = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let snapshots: Vec<(String, burn_store::TensorSnapshot)> = if is_safetensors {
        use burn_store::ModuleStore;
        let mut store = burn_store::SafetensorsStore::from_file(path);
        let all = store.get_all_snapshots().map_err(|e| err(format!("cannot read safetensors: {e}")))?;
        all.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    } else {
        let reader = burn_store::pytorch::PytorchReader::new(path)
            .map_err(|e| err(format!("cannot read PyTorch checkpoint: {e}")))?;
        reader.into_tensors().into_iter().collect()
    };
    Ok(snapshots
        .into_iter()
        .map(|(key, snap)| {
            // Checkpoints saved from DataParallel, or inside a training dict, prefix the keys.
            let mut k = key.as_str();
            for prefix in ["state_dict.", "model.", "module."] {
                k = k.strip_prefix(prefix).unwrap_or(k);
            }
            (k.to_string(), snap)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `detect` reads back the config `expected_tensors` lays out, so a checkpoint of the requested
    /// shape is never reported as a different ResNet.
    #[test]
    fn detect_inverts_expected_tensors() {
        for config in [
            ResNetConfig::resnet18(),
            ResNetConfig::resnet34(),
            ResNetConfig::resnet50(),
            ResNetConfig::wide_resnet50_2(),
            ResNetConfig::new(BlockKind::Bottleneck, [1, 2, 1]).with_width_per_group(32),
        ] {
            let expected = config.expected_tensors();
            let shapes: BTreeMap<String, Vec<usize>> = expected.iter().cloned().collect();
            assert_eq!(shapes.len(), expected.len(), "{config}: duplicate keys");
            assert_eq!(ResNetConfig::detect(&shapes), Some(config));
        }
    }
}
