//! pnpt-backbone: the frozen multi-scale encoder φ_e of PNPT (the paper's pre-trained encoder).
//!
//! One API, [`Backbone`], over two families:
//! - **EfficientNet-Lite0** (ImageNet weights bundled in the binary), imported from ONNX with
//!   burn-onnx; the generated module and its burnpack weights live in `weights/efficientnet_lite0/`.
//! - **torchvision ResNets** (resnet18/34/50, wide_resnet50_2), native Burn, loading a
//!   torchvision state dict given at run time ([`resnet`]).
//!
//! Both return three NCHW feature maps at strides 4, 8 and 16 ([`MultiScale`]). The encoder is
//! frozen: its weights never require a gradient and its outputs are detached.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use pnpt_backbone::{Backbone, BackboneKind};
//!
//! let device = Default::default();
//! let backbone = Backbone::<Flex>::load(BackboneKind::EfficientNetLite0, None, &device)?;
//! let images = Tensor::zeros([2, 3, 256, 256], &device);
//! let ms = backbone.features(images)?;
//! assert_eq!(ms.maps[2].dims(), [2, 112, 16, 16]);
//! # Ok::<(), pnpt_backbone::BackboneError>(())
//! ```

#![warn(missing_docs)]
// The CPU kernels (raw pointers, AVX2) live in pnpt-kernels.
#![forbid(unsafe_code)]

pub mod efficientnet;
pub mod macs;
pub mod resnet;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::efficientnet::EfficientNetLite0;
pub use crate::efficientnet::Kernels;
use crate::resnet::{ResNet, ResNetConfig};

/// Side of the square input the backbones are used at (the PNPT setting).
pub const INPUT_SIZE: u32 = 256;
/// Inputs must have sides divisible by this (the coarsest stride), so every map is exactly
/// `H/s × W/s` and EfficientNet's fixed TensorFlow-"SAME" pads are the right ones.
pub const SIZE_MULTIPLE: usize = 16;

/// Multi-scale features of a batch: NCHW maps at strides 4, 8 and 16.
#[derive(Debug, Clone)]
pub struct MultiScale<B: Backend> {
    /// `[stride 4, stride 8, stride 16]`, each `[batch, channels, H/s, W/s]`.
    pub maps: [Tensor<B, 4>; 3],
}

/// Which encoder to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackboneKind {
    /// EfficientNet-Lite0 (taps after `_blocks.2/4/10`: 24, 40, 112 channels); weights bundled.
    #[serde(rename = "efficientnet-lite0")]
    EfficientNetLite0,
    /// torchvision `resnet18` (64, 128, 256 channels).
    #[serde(rename = "resnet18")]
    ResNet18,
    /// torchvision `resnet34` (64, 128, 256 channels).
    #[serde(rename = "resnet34")]
    ResNet34,
    /// torchvision `resnet50` (256, 512, 1024 channels).
    #[serde(rename = "resnet50")]
    ResNet50,
    /// torchvision `wide_resnet50_2` (256, 512, 1024 channels), the paper's encoder.
    #[serde(rename = "wide_resnet50_2")]
    WideResNet50_2,
}

impl BackboneKind {
    /// Every kind, in declaration order.
    pub const ALL: [BackboneKind; 5] = [
        BackboneKind::EfficientNetLite0,
        BackboneKind::ResNet18,
        BackboneKind::ResNet34,
        BackboneKind::ResNet50,
        BackboneKind::WideResNet50_2,
    ];

    /// The command-line / config name (`"efficientnet-lite0"`, `"wide_resnet50_2"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::EfficientNetLite0 => "efficientnet-lite0",
            BackboneKind::ResNet18 => "resnet18",
            BackboneKind::ResNet34 => "resnet34",
            BackboneKind::ResNet50 => "resnet50",
            BackboneKind::WideResNet50_2 => "wide_resnet50_2",
        }
    }

    /// The ResNet shape of this kind, `None` for EfficientNet.
    pub fn resnet_config(self) -> Option<ResNetConfig> {
        match self {
            BackboneKind::EfficientNetLite0 => None,
            BackboneKind::ResNet18 => Some(ResNetConfig::resnet18()),
            BackboneKind::ResNet34 => Some(ResNetConfig::resnet34()),
            BackboneKind::ResNet50 => Some(ResNetConfig::resnet50()),
            BackboneKind::WideResNet50_2 => Some(ResNetConfig::wide_resnet50_2()),
        }
    }

    /// Channels of the stride 4/8/16 maps.
    pub fn channels(self) -> [usize; 3] {
        match self.resnet_config() {
            None => efficientnet::CHANNELS,
            Some(c) => c.channels(),
        }
    }
}

impl fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackboneKind {
    type Err = BackboneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| BackboneError::UnknownKind { name: s.to_string() })
    }
}

/// Everything that can go wrong loading or running a backbone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackboneError {
    /// A weights file is unreadable or does not fit the requested architecture.
    #[error("weights file {path}: {reason}")]
    Checkpoint {
        /// The file given.
        path: PathBuf,
        /// What is wrong (names the offending keys).
        reason: String,
    },
    /// A ResNet was requested without a weights file.
    #[error("{kind} needs a weights file (a torchvision state dict, .pth or .safetensors)")]
    WeightsRequired {
        /// The requested kind.
        kind: BackboneKind,
    },
    /// The bundled EfficientNet weights failed to load (a build problem, not a user error).
    #[error("bundled efficientnet-lite0 weights: {reason}")]
    Bundled {
        /// What failed.
        reason: String,
    },
    /// An invalid architecture description.
    #[error("invalid backbone configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// An input batch of the wrong shape.
    #[error("invalid input for {kind}: {reason}")]
    Input {
        /// The backbone that rejected it.
        kind: BackboneKind,
        /// What is wrong with the shape.
        reason: String,
    },
    /// A name that is not a [`BackboneKind`].
    #[error(
        "unknown backbone '{name}' (expected one of: efficientnet-lite0, resnet18, resnet34, resnet50, wide_resnet50_2)"
    )]
    UnknownKind {
        /// The name given.
        name: String,
    },
}

#[derive(Debug, Clone)]
enum Net<B: Backend> {
    // Boxed: the generated module holds 33 conv layers inline (~11 KB).
    EfficientNet(Box<EfficientNetLite0<B>>),
    ResNet(ResNet<B>),
}

/// A frozen, batched multi-scale encoder (cheap to clone: tensors are reference-counted).
#[derive(Debug, Clone)]
pub struct Backbone<B: Backend> {
    kind: BackboneKind,
    net: Net<B>,
}

impl<B: Backend> Backbone<B> {
    /// Loads a backbone.
    ///
    /// `weights`: EfficientNet-Lite0 uses its bundled ImageNet weights when `None` (a `.bpk`
    /// burnpack of the same graph may be given instead); the ResNets need a torchvision
    /// state dict (`.pth` or `.safetensors`; `layer4`/`fc` keys are ignored).
    pub fn load(kind: BackboneKind, weights: Option<&Path>, device: &B::Device) -> Result<Self, BackboneError> {
        let net = match (kind.resnet_config(), weights) {
            (None, None) => Net::EfficientNet(Box::new(EfficientNetLite0::bundled(device)?)),
            (None, Some(path)) => Net::EfficientNet(Box::new(EfficientNetLite0::from_file(path, device)?)),
            (Some(_), None) => return Err(BackboneError::WeightsRequired { kind }),
            (Some(config), Some(path)) => Net::ResNet(ResNet::load(&config, path, device)?),
        };
        Ok(Self { kind, net })
    }

    /// A randomly initialised backbone of the given kind (benchmarks, shape tests).
    pub fn random(kind: BackboneKind, device: &B::Device) -> Self {
        let net = match kind.resnet_config() {
            None => Net::EfficientNet(Box::new(EfficientNetLite0::random(device))),
            // The predefined configs are valid by construction.
            Some(config) => Net::ResNet(ResNet::random(&config, device).expect("valid predefined config")),
        };
        Self { kind, net }
    }

    /// The same backbone running EfficientNet-Lite0 on the given [`Kernels`] (the default,
    /// [`Kernels::Auto`], picks the fused CPU kernels on CPU backends). ResNets ignore it.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        if let Net::EfficientNet(net) = self.net {
            self.net = Net::EfficientNet(Box::new(net.with_kernels(kernels)));
        }
        self
    }

    /// Multi-scale features of an NCHW batch of preprocessed images (see [`Self::preprocess`]).
    ///
    /// Errors unless the batch is `[N ≥ 1, 3, H, W]` with `H`, `W` positive multiples of
    /// [`SIZE_MULTIPLE`]. The maps are detached (no gradient flows into the encoder).
    pub fn features(&self, images: Tensor<B, 4>) -> Result<MultiScale<B>, BackboneError> {
        let [n, c, h, w] = images.dims();
        let bad = |reason: String| Err(BackboneError::Input { kind: self.kind, reason });
        if n == 0 {
            return bad("empty batch".into());
        }
        if c != 3 {
            return bad(format!("expected 3 (RGB) channels in an NCHW batch, got shape [{n}, {c}, {h}, {w}]"));
        }
        if h == 0 || w == 0 || h % SIZE_MULTIPLE != 0 || w % SIZE_MULTIPLE != 0 {
            return bad(format!(
                "height and width must be positive multiples of {SIZE_MULTIPLE}, got {h}×{w} (resize to {INPUT_SIZE}×{INPUT_SIZE})"
            ));
        }
        let maps = match &self.net {
            Net::EfficientNet(net) => net.forward(images)?,
            Net::ResNet(net) => net.forward(images),
        };
        Ok(MultiScale { maps: maps.map(|m| m.detach()) })
    }

    /// [`Self::features`] for a tensor of any rank: errors unless it is rank 4.
    ///
    /// Useful where the rank is only known at run time (e.g. data read from a file).
    pub fn features_dyn<const D: usize>(&self, images: Tensor<B, D>) -> Result<MultiScale<B>, BackboneError> {
        if D != 4 {
            return Err(BackboneError::Input {
                kind: self.kind,
                reason: format!("expected a rank-4 NCHW batch, got rank {D} with shape {:?}", images.dims()),
            });
        }
        let dims = images_dims4(&images);
        self.features(images.reshape(dims))
    }

    /// The backbone kind.
    pub fn kind(&self) -> BackboneKind {
        self.kind
    }

    /// Channels of the stride 4/8/16 maps.
    pub fn channels(&self) -> [usize; 3] {
        self.kind.channels()
    }

    /// Strides of the three maps relative to the input.
    pub fn strides(&self) -> [usize; 3] {
        [4, 8, 16]
    }

    /// The input preprocessing the weights expect: 256×256, ImageNet mean/std.
    pub fn preprocess(&self) -> pnpt_data::Preprocess {
        pnpt_data::Preprocess::imagenet(INPUT_SIZE)
    }
}

fn images_dims4<B: Backend, const D: usize>(t: &Tensor<B, D>) -> [usize; 4] {
    let d = t.dims();
    [d[0], d[1], d[2], d[3]]
}
