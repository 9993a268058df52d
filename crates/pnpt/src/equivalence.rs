//! Backend-equivalence harness: run the same module, with the same weights, on two backends and
//! compare the outputs.
//!
//! A case builds its module from serialised weights ([`module_to_bytes`] /
//! [`module_from_bytes`]), so both backends see bit-identical parameters whatever their random
//! number generators do. [`check`] runs the case on each device and compares every output with
//! [`compare`].
//!
//! ```
//! use burn::{nn::{Linear, LinearConfig}, tensor::{backend::Backend, Tensor, TensorData}};
//! use pnpt::equivalence::{check, module_from_bytes, module_to_bytes, EquivalenceCase, Tolerance};
//! use pnpt::backend::Cpu;
//!
//! struct LinearCase { weights: Vec<u8> }
//! impl EquivalenceCase for LinearCase {
//!     fn name(&self) -> String { "linear 4->3".into() }
//!     fn run<B: Backend>(&self, device: &B::Device) -> pnpt::Result<Vec<TensorData>> {
//!         let layer: Linear<B> = module_from_bytes(LinearConfig::new(4, 3).init(device), &self.weights, device)?;
//!         let x = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, -2.0, 0.5, 3.0], [1, 4]), device);
//!         Ok(vec![layer.forward(x).into_data()])
//!     }
//! }
//! let device = Default::default();
//! let weights = module_to_bytes::<Cpu, _>(LinearConfig::new(4, 3).init(&device))?;
//! let report = check::<Cpu, Cpu, _>(&LinearCase { weights }, &device, &device, Tolerance::default())?;
//! assert_eq!(report.max_abs_error, 0.0);
//! # Ok::<(), pnpt::Error>(())
//! ```

use burn::{
    module::Module,
    record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder},
    tensor::{TensorData, backend::Backend},
};

use crate::{Error, Result};

/// A forward pass that can be instantiated on any backend.
pub trait EquivalenceCase {
    /// Shown in reports and errors.
    fn name(&self) -> String;
    /// Builds the module on `device` (from fixed weights) and returns the outputs to compare.
    fn run<B: Backend>(&self, device: &B::Device) -> Result<Vec<TensorData>>;
}

/// How close two outputs must be: `|a - b| <= abs + rel * max|a|`, per output tensor.
///
/// The relative part is scaled by the largest magnitude of the reference output (not per
/// element) because GPU reductions reorder sums: an element near zero can carry an error
/// proportional to the map's scale, which a per-element relative test would reject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute slack.
    pub abs: f32,
    /// Slack relative to the reference output's largest magnitude.
    pub rel: f32,
}

impl Default for Tolerance {
    /// 1e-4 relative to the output scale plus 1e-5 absolute: what f32 kernels with different
    /// summation orders reach on the transformer and CNN layers used here.
    fn default() -> Self {
        Tolerance { abs: 1e-5, rel: 1e-4 }
    }
}

/// The worst disagreement found between two sets of outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct EquivalenceReport {
    /// Name of the case.
    pub case: String,
    /// Largest absolute difference over all outputs.
    pub max_abs_error: f32,
    /// Largest `max|a - b| / max|a|` over all outputs (0 when an output is all zeros).
    pub max_rel_error: f32,
    /// Number of output tensors compared.
    pub outputs: usize,
}

/// Serialises a module's parameters (named MessagePack, full precision).
pub fn module_to_bytes<B: Backend, M: Module<B>>(module: M) -> Result<Vec<u8>> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(module.into_record(), ())
        .map_err(|e| Error::Record(e.to_string()))
}

/// Loads parameters produced by [`module_to_bytes`] (on any backend) into `module`.
pub fn module_from_bytes<B: Backend, M: Module<B>>(module: M, bytes: &[u8], device: &B::Device) -> Result<M> {
    let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .load(bytes.to_vec(), device)
        .map_err(|e| Error::Record(e.to_string()))?;
    Ok(module.load_record(record))
}

/// Compares two lists of outputs element by element.
pub fn compare(
    case: &str,
    reference: &[TensorData],
    other: &[TensorData],
    tol: Tolerance,
) -> Result<EquivalenceReport> {
    if reference.len() != other.len() {
        return Err(Error::Equivalence(format!(
            "{case}: {} outputs on the reference backend, {} on the other",
            reference.len(),
            other.len()
        )));
    }
    let mut report = EquivalenceReport { case: case.to_string(), max_abs_error: 0.0, max_rel_error: 0.0, outputs: 0 };
    for (i, (a, b)) in reference.iter().zip(other).enumerate() {
        if a.shape != b.shape {
            return Err(Error::Equivalence(format!("{case}: output {i} has shape {:?} vs {:?}", a.shape, b.shape)));
        }
        let a = to_f32(case, i, a)?;
        let b = to_f32(case, i, b)?;
        let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let mut max_abs = 0.0f32;
        for (j, (x, y)) in a.iter().zip(&b).enumerate() {
            if x.is_nan() != y.is_nan() || !x.is_nan() && !(x - y).abs().is_finite() && x != y {
                return Err(Error::Equivalence(format!("{case}: output {i}[{j}] is {x} vs {y}")));
            }
            if !x.is_nan() {
                max_abs = max_abs.max((x - y).abs());
            }
        }
        let allowed = tol.abs + tol.rel * scale;
        if max_abs > allowed {
            return Err(Error::Equivalence(format!(
                "{case}: output {i} differs by {max_abs:e} (allowed {allowed:e} = {:e} + {:e} * max|ref| {scale:e})",
                tol.abs, tol.rel
            )));
        }
        report.max_abs_error = report.max_abs_error.max(max_abs);
        if scale > 0.0 {
            report.max_rel_error = report.max_rel_error.max(max_abs / scale);
        }
        report.outputs += 1;
    }
    Ok(report)
}

fn to_f32(case: &str, index: usize, data: &TensorData) -> Result<Vec<f32>> {
    data.clone()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::Equivalence(format!("{case}: output {index} is not numeric: {e:?}")))
}

/// Runs `case` on backend `A` (the reference) and backend `C` and compares the outputs.
pub fn check<A: Backend, C: Backend, T: EquivalenceCase>(
    case: &T,
    reference: &A::Device,
    other: &C::Device,
    tol: Tolerance,
) -> Result<EquivalenceReport> {
    let a = case.run::<A>(reference)?;
    let b = case.run::<C>(other)?;
    compare(&case.name(), &a, &b, tol)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(values: Vec<f32>) -> TensorData {
        let n = values.len();
        TensorData::new(values, [n])
    }

    #[test]
    fn identical_outputs_report_zero() {
        let a = vec![data(vec![1.0, -2.0, 3.0])];
        let r = compare("same", &a, &a.clone(), Tolerance::default()).unwrap();
        assert_eq!((r.max_abs_error, r.max_rel_error, r.outputs), (0.0, 0.0, 1));
    }

    #[test]
    fn error_is_measured_against_the_output_scale() {
        // max|ref| = 4, diff 2e-4 -> relative 5e-5: inside 1e-4 * 4 + 1e-5.
        let a = vec![data(vec![4.0, 0.0])];
        let b = vec![data(vec![4.0, 2e-4])];
        let r = compare("scaled", &a, &b, Tolerance::default()).unwrap();
        assert!((r.max_abs_error - 2e-4).abs() < 1e-9);
        assert!((r.max_rel_error - 5e-5).abs() < 1e-9);
        // diff 1e-3 > 4.1e-4: rejected, and the message says by how much.
        let c = vec![data(vec![4.0, 1e-3])];
        let err = compare("scaled", &a, &c, Tolerance::default()).unwrap_err().to_string();
        assert!(err.contains("differs by 1e-3"), "{err}");
    }

    #[test]
    fn nan_shape_and_count_mismatches_are_errors() {
        let a = vec![data(vec![1.0, 2.0])];
        assert!(compare("nan", &a, &[data(vec![1.0, f32::NAN])], Tolerance::default()).is_err());
        assert!(compare("shape", &a, &[data(vec![1.0, 2.0, 3.0])], Tolerance::default()).is_err());
        assert!(compare("count", &a, &[], Tolerance::default()).is_err());
    }
}
