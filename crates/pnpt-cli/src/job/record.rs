//! What the job adds to `report.json` beside the evaluation ([`pnpt::evaluate::Report::extra`]),
//! as serde types: training history, validation, patch-memory sizes, stage times, categories
//! the detector was not trained on.

use std::collections::BTreeMap;

use pnpt::model::train::EpochStats;
use pnpt::validation::Validation;
use serde::Serialize;
use serde_json::{Map, Value};

/// The job's top-level `report.json` entries; those left `None` are not written.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct RunRecord {
    /// `history`: loss and speed per epoch (the curve of `report.html`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) history: Option<Vec<EpochStats>>,
    /// `validation`: every scoring candidate on pseudo-anomalies and the chosen one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) validation: Option<Validation>,
    /// `memory`: the patch memory's feature size and banks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) memory: Option<MemoryRecord>,
    /// `seconds`: time per training stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) seconds: Option<StageSeconds>,
    /// `budget`: how the run's time budget was shared out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) budget: Option<pnpt::train::BudgetPlan>,
    /// `unseen_categories`: test categories a saved detector was not trained on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) unseen_categories: Option<Vec<String>>,
}

/// `memory`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct MemoryRecord {
    /// Feature size of a patch.
    pub(super) dim: usize,
    /// Seconds building the banks.
    pub(super) seconds: f64,
    /// Per class: its bank.
    pub(super) classes: BTreeMap<String, BankRecord>,
}

/// `memory.classes.<class>`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct BankRecord {
    /// Patches kept (the coreset).
    pub(super) bank: usize,
    /// Patches the coreset was chosen from.
    pub(super) patches: usize,
}

/// `seconds`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct StageSeconds {
    /// Backbone features and the prompt pool.
    pub(super) features: f64,
    /// Patch memory.
    pub(super) memory: f64,
    /// The training loop.
    pub(super) training: f64,
    /// Positional statistics.
    pub(super) positional: f64,
    /// Validation on pseudo-anomalies.
    pub(super) validation: f64,
    /// The whole run: the sum of the above.
    pub(super) total: f64,
}

impl RunRecord {
    /// The entries for [`pnpt::evaluate::EvaluateOptions::extra`].
    pub(super) fn into_extra(self) -> Map<String, Value> {
        // Always an object: a struct of named fields whose maps have string keys.
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}
