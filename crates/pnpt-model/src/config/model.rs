//! The transformer's architecture: everything that changes the weights.

use serde::{Deserialize, Serialize};

use super::PnptConfig;

/// How HPE joins the three scales into one token sequence (the paper leaves it open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcatMode {
    /// Concatenate the per-scale embeddings along channels, then `Linear(3C -> C)`:
    /// `L = grid` tokens (the reference run's choice).
    #[default]
    Channels,
    /// Concatenate along the token axis: `L = 3 * grid` tokens, about 3× the attention cost.
    Tokens,
}

/// The model variants of the paper's ablation (its Table 6): the full model, and the model
/// with one component removed. One enum rather than three switches, so that a combination the
/// paper never defines (CSCD without semantic tokens to decode against) cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// HPE, the CS-NPP prior stream, SACE with semantic tokens, and CSCD.
    #[default]
    Full,
    /// No CS-NPP prior: the self stream only (no SACE (b) fusion, nothing to fuse in Eq. 8).
    SingleStream,
    /// No semantic tokens: no `E_S`, so no SACE (b) and no CSCD; SACE (a) sees patches only.
    NoSemanticTokens,
    /// No CSCD: the patch tokens leave each layer as SACE (a) returns them.
    NoCscd,
}

impl Variant {
    /// Whether the model has the prior stream (CS-NPP).
    pub fn has_prior(self) -> bool {
        self != Variant::SingleStream
    }

    /// Whether the model has learned semantic tokens `E_S(0)`.
    pub fn has_semantic_tokens(self) -> bool {
        self != Variant::NoSemanticTokens
    }

    /// Whether each layer ends with CSCD (which needs semantic tokens).
    pub fn has_cscd(self) -> bool {
        matches!(self, Variant::Full | Variant::SingleStream)
    }

    /// Whether SACE (b) fuses the two streams' semantics (needs both).
    pub fn has_fusion(self) -> bool {
        self.has_prior() && self.has_semantic_tokens()
    }
}

/// The transformer's architecture: everything that changes the weights.
// `remote = "Self"`: the derived code becomes inherent functions, wrapped by the impls below
// so that files written before `variant` existed still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Hidden size `C` of every token (paper 760, reference run 256).
    pub hidden: usize,
    /// Number `N` of learned semantic tokens `E_S(0)` (paper 40, reference run 16).
    pub semantic_tokens: usize,
    /// Attention heads (8); must divide `hidden`.
    pub heads: usize,
    /// Number `M` of SACE+CSCD layer pairs (paper 4, reference run 2).
    pub layers: usize,
    /// FFN expansion: `Linear(C -> ratio*C) - ReLU - Linear(ratio*C -> C)` (4, as the reference run).
    pub ffn_ratio: usize,
    /// Dropout after attention and inside/after the FFN, as in PyTorch's transformer layers.
    /// 0 by default: the reference run does not use it and training stays bit-reproducible without it.
    pub dropout: f64,
    /// LayerNorm epsilon (PyTorch's 1e-5).
    pub layer_norm_eps: f64,
    /// How HPE concatenates the scales.
    pub concat: ConcatMode,
    /// Whether the prior and self streams share SACE/CSCD weights (the natural reading of the paper's SACE; the reference run shares them).
    pub shared_streams: bool,
    /// The full model or one of the paper's ablations.
    pub variant: Variant,
}

impl Serialize for ModelConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        ModelConfig::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(deserializer)?;
        upgrade_ablation_switches(&mut value).map_err(serde::de::Error::custom)?;
        ModelConfig::deserialize(value).map_err(serde::de::Error::custom)
    }
}

/// Replaces the three ablation booleans of earlier versions (`use_prior`, `use_semantic_tokens`,
/// `use_cscd`) by the [`Variant`] they describe; refuses combinations no variant matches.
fn upgrade_ablation_switches(value: &mut serde_json::Value) -> std::result::Result<(), String> {
    let Some(map) = value.as_object_mut() else { return Ok(()) };
    const OLD: [&str; 3] = ["use_prior", "use_semantic_tokens", "use_cscd"];
    if map.contains_key("variant") && OLD.iter().any(|k| map.contains_key(*k)) {
        return Err("both `variant` and the older use_* switches are set".into());
    }
    let mut switch = |key: &str| match map.remove(key) {
        None => Ok(true),
        Some(serde_json::Value::Bool(b)) => Ok(b),
        Some(other) => Err(format!("{key} must be a boolean, got {other}")),
    };
    let (prior, semantic, cscd) = (switch("use_prior")?, switch("use_semantic_tokens")?, switch("use_cscd")?);
    let variant = match (prior, semantic, cscd) {
        (true, true, true) => return Ok(()),
        (false, true, true) => Variant::SingleStream,
        // Without semantic tokens CSCD was skipped whatever `use_cscd` said.
        (true, false, _) => Variant::NoSemanticTokens,
        (true, true, false) => Variant::NoCscd,
        _ => {
            return Err(format!(
                "use_prior = {prior}, use_semantic_tokens = {semantic}, use_cscd = {cscd} is not one of the paper's variants"
            ));
        }
    };
    map.insert("variant".into(), serde_json::to_value(variant).map_err(|e| e.to_string())?);
    Ok(())
}

impl Default for ModelConfig {
    fn default() -> Self {
        PnptConfig::cpu().model
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn the_older_ablation_switches_read_as_variants() {
        let read = |model: &str| serde_json::from_str::<PnptConfig>(&format!(r#"{{"model": {model}}}"#));
        let variant = |model: &str| read(model).unwrap().model.variant;
        assert_eq!(variant(r#"{"use_prior": true, "use_semantic_tokens": true, "use_cscd": true}"#), Variant::Full);
        assert_eq!(variant(r#"{"use_prior": false}"#), Variant::SingleStream);
        assert_eq!(variant(r#"{"use_semantic_tokens": false, "use_cscd": true}"#), Variant::NoSemanticTokens);
        assert_eq!(variant(r#"{"use_cscd": false, "layers": 3}"#), Variant::NoCscd);
        assert_eq!(read(r#"{"use_cscd": false, "layers": 3}"#).unwrap().model.layers, 3);
        assert_eq!(variant(r#"{"variant": "no_cscd"}"#), Variant::NoCscd);
        // Two components removed at once is no variant of the paper's; so is a mix of old and new.
        let two = read(r#"{"use_prior": false, "use_cscd": false}"#).unwrap_err().to_string();
        assert!(two.contains("not one of the paper's variants"), "{two}");
        assert!(read(r#"{"use_prior": false, "variant": "full"}"#).is_err());
        assert!(read(r#"{"use_prior": true, "variant": "no_cscd"}"#).is_err());
        assert!(read(r#"{"use_prior": 0}"#).is_err());
        // What is written is the new form.
        let json = serde_json::to_value(PnptConfig::cpu()).unwrap();
        assert_eq!(json["model"]["variant"], "full");
        assert!(json["model"].get("use_prior").is_none());
    }
}
