//! The shape of a truncated ResNet: block type, blocks per stage, width.

use std::fmt;

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

    pub(super) fn validate(&self) -> Result<(), String> {
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
    pub(super) fn inner_width(&self, planes: usize) -> usize {
        match self.block {
            BlockKind::Basic => planes,
            BlockKind::Bottleneck => planes * self.width_per_group / 64,
        }
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
