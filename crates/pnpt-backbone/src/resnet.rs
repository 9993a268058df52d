//! Native torchvision-compatible ResNets (stem + `layer1`..`layer3`), frozen, BatchNorm folded.
//!
//! The architecture follows torchvision's `ResNet` (v1.5: the stride sits on the 3×3 convolution
//! of a Bottleneck). Every BatchNorm is folded into the preceding convolution at load time
//! (`w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`, computed in f64), which is exactly the
//! inference-mode BatchNorm, and saves one pass over every activation.
//!
//! Weights are plain tensors (not `Param`s), so they never require a gradient, whatever the
//! backend.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};

use crate::BackboneError;

/// BatchNorm epsilon of torchvision's ResNets.
const BN_EPS: f64 = 1e-5;
/// How many problem keys an error message lists before summarising the rest.
const MAX_LISTED: usize = 12;

/// Residual block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (resnet18/34), expansion 1.
    Basic,
    /// 1×1 → 3×3 → 1×1 (resnet50, wide_resnet50_2), expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block relative to its `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Shape of a ResNet truncated after `layer3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Block type of every stage.
    pub block: BlockKind,
    /// Blocks in `layer1`, `layer2`, `layer3` (torchvision's `layers[..3]`).
    pub layers: [usize; 3],
    /// torchvision's `width_per_group` (64 by default, 128 for `wide_resnet50_2`).
    pub width_per_group: usize,
}

impl ResNetConfig {
    /// A config with the default width (64).
    pub fn new(block: BlockKind, layers: [usize; 3]) -> Self {
        Self { block, layers, width_per_group: 64 }
    }

    /// Sets `width_per_group`.
    pub fn with_width_per_group(mut self, width_per_group: usize) -> Self {
        self.width_per_group = width_per_group;
        self
    }

    /// torchvision `resnet18`.
    pub fn resnet18() -> Self {
        Self::new(BlockKind::Basic, [2, 2, 2])
    }
    /// torchvision `resnet34`.
    pub fn resnet34() -> Self {
        Self::new(BlockKind::Basic, [3, 4, 6])
    }
    /// torchvision `resnet50`.
    pub fn resnet50() -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 6])
    }
    /// torchvision `wide_resnet50_2` (the PNPT paper's encoder).
    pub fn wide_resnet50_2() -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 6]).with_width_per_group(128)
    }

    /// Output channels of `layer1`..`layer3`: `[64, 128, 256] × expansion`.
    pub fn channels(&self) -> [usize; 3] {
        let e = self.block.expansion();
        [64 * e, 128 * e, 256 * e]
    }

    fn validate(&self) -> Result<(), String> {
        if self.layers.contains(&0) {
            return Err(format!("every stage needs at least one block, got {:?}", self.layers));
        }
        if self.width_per_group == 0 {
            return Err("width_per_group must be positive".into());
        }
        if self.block == BlockKind::Basic && self.width_per_group != 64 {
            // torchvision raises the same: BasicBlock only supports base_width=64.
            return Err("BasicBlock only supports width_per_group = 64".into());
        }
        Ok(())
    }

    /// Inner width of a Bottleneck of the given `planes` (torchvision: `planes * wpg / 64`).
    fn inner_width(&self, planes: usize) -> usize {
        match self.block {
            BlockKind::Basic => planes,
            BlockKind::Bottleneck => planes * self.width_per_group / 64,
        }
    }

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

impl fmt::Display for ResNetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let block = match self.block {
            BlockKind::Basic => "BasicBlock",
            BlockKind::Bottleneck => "Bottleneck",
        };
        write!(f, "{block} ×{:?}, width_per_group {}", self.layers, self.width_per_group)?;
        let known = [
            ("resnet18", Self::resnet18()),
            ("resnet34", Self::resnet34()),
            ("resnet50", Self::resnet50()),
            ("wide_resnet50_2", Self::wide_resnet50_2()),
        ];
        if let Some((name, _)) = known.iter().find(|(_, c)| c == self) {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

fn conv_bn_keys(out: &mut Vec<(String, Vec<usize>)>, conv: &str, bn: &str, shape: [usize; 4]) {
    out.push((format!("{conv}.weight"), shape.to_vec()));
    for stat in ["weight", "bias", "running_mean", "running_var"] {
        out.push((format!("{bn}.{stat}"), vec![shape[0]]));
    }
}

/// Convolution with its BatchNorm folded in (so it always has a bias).
#[derive(Module, Debug)]
struct ConvBn<B: Backend> {
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
    stride: usize,
    padding: usize,
}

impl<B: Backend> ConvBn<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let opts = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1);
        conv2d(x, self.weight.clone(), Some(self.bias.clone()), opts)
    }
}

#[derive(Module, Debug)]
struct Block<B: Backend> {
    /// Basic: conv1, conv2. Bottleneck: conv1, conv2, conv3.
    convs: Vec<ConvBn<B>>,
    downsample: Option<ConvBn<B>>,
}

impl<B: Backend> Block<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(ds) => ds.forward(x.clone()),
            None => x.clone(),
        };
        let last = self.convs.len() - 1;
        let mut h = x;
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv.forward(h);
            if i < last {
                h = relu(h);
            }
        }
        relu(h + identity)
    }
}

/// A torchvision ResNet truncated after `layer3`, in inference form.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    stem: ConvBn<B>,
    layers: Vec<Vec<Block<B>>>,
}

/// Source of the tensors a [`ResNet`] is built from.
trait TensorSource<B: Backend> {
    /// The folded (weight, bias) of a conv + BN pair of the given weight shape.
    fn conv_bn(&mut self, conv: &str, bn: &str, shape: [usize; 4], device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1>);
}

/// Random weights, He-normal, zero bias: for benchmarks and shape tests.
struct RandomSource;

impl<B: Backend> TensorSource<B> for RandomSource {
    fn conv_bn(&mut self, _: &str, _: &str, shape: [usize; 4], device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
        let w = Tensor::random(shape, Distribution::Normal(0.0, (2.0 / fan_in).sqrt()), device);
        (w, Tensor::zeros([shape[0]], device))
    }
}

/// Tensors already checked against [`ResNetConfig::expected_tensors`], as f32 host vectors.
struct CheckedSource(HashMap<String, Vec<f32>>);

impl<B: Backend> TensorSource<B> for CheckedSource {
    fn conv_bn(&mut self, conv: &str, bn: &str, shape: [usize; 4], device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1>) {
        // Keys and shapes were validated up front, so a miss here is a bug in this file.
        let mut take = |k: String| self.0.remove(&k).unwrap_or_else(|| panic!("validated key {k} vanished"));
        let mut w = take(format!("{conv}.weight"));
        let gamma = take(format!("{bn}.weight"));
        let beta = take(format!("{bn}.bias"));
        let mean = take(format!("{bn}.running_mean"));
        let var = take(format!("{bn}.running_var"));
        let per_out = shape[1] * shape[2] * shape[3];
        let mut bias = vec![0f32; shape[0]];
        for o in 0..shape[0] {
            let scale = gamma[o] as f64 / (var[o] as f64 + BN_EPS).sqrt();
            bias[o] = (beta[o] as f64 - mean[o] as f64 * scale) as f32;
            for v in &mut w[o * per_out..(o + 1) * per_out] {
                *v = (*v as f64 * scale) as f32;
            }
        }
        (
            Tensor::from_data(TensorData::new(w, shape), device),
            Tensor::from_data(TensorData::new(bias, [shape[0]]), device),
        )
    }
}

impl<B: Backend> ResNet<B> {
    /// A randomly initialised network (He-normal convolutions, identity BatchNorm).
    pub fn random(config: &ResNetConfig, device: &B::Device) -> Result<Self, BackboneError> {
        config.validate().map_err(|reason| BackboneError::Config { reason })?;
        Ok(Self::build(config, &mut RandomSource, device))
    }

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

    fn build(config: &ResNetConfig, src: &mut impl TensorSource<B>, device: &B::Device) -> Self {
        let mut conv_bn = |conv: &str, bn: &str, shape: [usize; 4], stride: usize| {
            let (weight, bias) = src.conv_bn(conv, bn, shape, device);
            ConvBn { weight, bias, stride, padding: shape[2] / 2 }
        };
        let stem = conv_bn("conv1", "bn1", [64, 3, 7, 7], 2);
        let mut layers = Vec::new();
        let mut in_ch = 64;
        for (stage, &blocks) in config.layers.iter().enumerate() {
            let planes = 64 << stage;
            let out_ch = planes * config.block.expansion();
            let width = config.inner_width(planes);
            let mut stage_blocks = Vec::new();
            for b in 0..blocks {
                let p = format!("layer{}.{b}", stage + 1);
                let stride = if b == 0 && stage > 0 { 2 } else { 1 };
                let c = |i: usize| (format!("{p}.conv{i}"), format!("{p}.bn{i}"));
                let convs = match config.block {
                    BlockKind::Basic => {
                        let ((c1, b1), (c2, b2)) = (c(1), c(2));
                        vec![
                            conv_bn(&c1, &b1, [width, in_ch, 3, 3], stride),
                            conv_bn(&c2, &b2, [out_ch, width, 3, 3], 1),
                        ]
                    }
                    BlockKind::Bottleneck => {
                        let ((c1, b1), (c2, b2), (c3, b3)) = (c(1), c(2), c(3));
                        vec![
                            conv_bn(&c1, &b1, [width, in_ch, 1, 1], 1),
                            conv_bn(&c2, &b2, [width, width, 3, 3], stride),
                            conv_bn(&c3, &b3, [out_ch, width, 1, 1], 1),
                        ]
                    }
                };
                let downsample = (b == 0 && (stride != 1 || in_ch != out_ch)).then(|| {
                    conv_bn(&format!("{p}.downsample.0"), &format!("{p}.downsample.1"), [out_ch, in_ch, 1, 1], stride)
                });
                stage_blocks.push(Block { convs, downsample });
                in_ch = out_ch;
            }
            layers.push(stage_blocks);
        }
        Self { stem, layers }
    }

    /// Outputs of `layer1`, `layer2`, `layer3` (strides 4, 8, 16) for an NCHW batch.
    pub fn forward(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        let x = relu(self.stem.forward(x));
        let mut x = max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], false);
        let mut outs = Vec::with_capacity(3);
        for stage in &self.layers {
            for block in stage {
                x = block.forward(x);
            }
            outs.push(x.clone());
        }
        let [a, b, c]: [Tensor<B, 4>; 3] = outs.try_into().expect("three stages");
        [a, b, c]
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
