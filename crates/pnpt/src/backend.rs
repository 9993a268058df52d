//! Run-time backend selection.
//!
//! The model code is written once, generic over `B: Backend`; this module maps a device string
//! given by the user (`--device cpu|wgpu|cuda:1`) to the concrete backend compiled into the
//! binary, and reports a clear error naming the cargo feature when that backend was left out.
//!
//! ```
//! use burn::tensor::{backend::AutodiffBackend, Tensor};
//! use pnpt::backend::{run_on, BackendTask, DeviceSpec};
//!
//! struct SumOnes;
//! impl BackendTask for SumOnes {
//!     type Output = f32;
//!     fn run<B: AutodiffBackend>(self, device: B::Device) -> f32 {
//!         Tensor::<B, 1>::ones([4], &device).sum().into_scalar().elem()
//!     }
//! }
//! # use burn::tensor::ElementConversion;
//! let spec: DeviceSpec = "cpu".parse()?;
//! assert_eq!(run_on(&spec, SumOnes)?, 4.0);
//! # Ok::<(), pnpt::Error>(())
//! ```

use std::{fmt, str::FromStr};

use burn::tensor::backend::{AutodiffBackend, Device, DeviceId};

use crate::{Error, Result};

/// The default CPU backend: Flex, measured faster than NdArray on PNPT's workload (docs/performance.md).
#[cfg(feature = "flex")]
pub type Cpu = burn::backend::Flex<f32>;
/// The default CPU backend (NdArray, since the `flex` feature is off in this build).
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type Cpu = burn::backend::NdArray<f32>;
/// The wgpu backend (Vulkan, Metal, DX12 or a software Vulkan such as lavapipe).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;
/// The CUDA backend (loads the driver dynamically; no toolkit needed to build).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;

/// A device the user asked for, parsed from `cpu`, `ndarray`, `flex`, `wgpu[:N]` or `cuda[:N]`
/// (and written as that text in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DeviceSpec {
    /// The default CPU backend of this build (Flex when compiled, else NdArray).
    Cpu,
    /// The NdArray CPU backend explicitly.
    NdArray,
    /// The Flex CPU backend explicitly.
    Flex,
    /// wgpu: `None` lets wgpu choose the best adapter, `Some(n)` is the n-th discrete GPU.
    Wgpu(Option<usize>),
    /// CUDA device with the given index.
    Cuda(usize),
}

impl DeviceSpec {
    /// The cargo feature of `pnpt` that this device needs.
    pub fn feature(&self) -> &'static str {
        match self {
            DeviceSpec::Cpu | DeviceSpec::Flex => "flex",
            DeviceSpec::NdArray => "ndarray",
            DeviceSpec::Wgpu(_) => "wgpu",
            DeviceSpec::Cuda(_) => "cuda",
        }
    }

    /// Every device kind compiled into this binary, for help texts and benches.
    pub fn compiled() -> Vec<DeviceSpec> {
        let mut all = Vec::new();
        if cfg!(any(feature = "ndarray", feature = "flex")) {
            all.push(DeviceSpec::Cpu);
        }
        if cfg!(all(feature = "ndarray", feature = "flex")) {
            all.push(DeviceSpec::NdArray);
        }
        if cfg!(feature = "wgpu") {
            all.push(DeviceSpec::Wgpu(None));
        }
        if cfg!(feature = "cuda") {
            all.push(DeviceSpec::Cuda(0));
        }
        all
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::NdArray => write!(f, "ndarray"),
            DeviceSpec::Flex => write!(f, "flex"),
            DeviceSpec::Wgpu(None) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (name, index) = match lower.split_once(':') {
            Some((name, idx)) => {
                let idx = idx.parse::<usize>().map_err(|_| Error::UnknownDevice(s.to_string()))?;
                (name, Some(idx))
            }
            None => (lower.as_str(), None),
        };
        match (name, index) {
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("ndarray", None) => Ok(DeviceSpec::NdArray),
            ("flex", None) => Ok(DeviceSpec::Flex),
            ("wgpu", idx) => Ok(DeviceSpec::Wgpu(idx)),
            ("cuda", idx) => Ok(DeviceSpec::Cuda(idx.unwrap_or(0))),
            _ => Err(Error::UnknownDevice(s.to_string())),
        }
    }
}

/// Work to run on whichever backend the user picked; `run` is instantiated once per compiled
/// backend, which is how one generic code path serves CPU, wgpu and CUDA.
pub trait BackendTask {
    /// What the task returns.
    type Output;
    /// Runs the task on backend `B` (an autodiff backend, so training works; inference code can
    /// use `B::InnerBackend`).
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `task` on the backend named by `spec`, or explains which cargo feature is missing.
pub fn run_on<T: BackendTask>(spec: &DeviceSpec, task: T) -> Result<T::Output> {
    let not_compiled = || Error::BackendNotCompiled { device: spec.to_string(), feature: spec.feature() };
    // `task` is moved into exactly one arm; the allow covers builds where some arms are cfg'd out.
    #[allow(unreachable_code, unused_variables)]
    match *spec {
        DeviceSpec::Cpu => {
            #[cfg(any(feature = "ndarray", feature = "flex"))]
            return Ok(task.run::<burn::backend::Autodiff<Cpu>>(Default::default()));
            Err(not_compiled())
        }
        DeviceSpec::NdArray => {
            #[cfg(feature = "ndarray")]
            return Ok(task.run::<burn::backend::Autodiff<burn::backend::NdArray<f32>>>(Default::default()));
            Err(not_compiled())
        }
        DeviceSpec::Flex => {
            #[cfg(feature = "flex")]
            return Ok(task.run::<burn::backend::Autodiff<burn::backend::Flex<f32>>>(Default::default()));
            Err(not_compiled())
        }
        DeviceSpec::Wgpu(index) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::WgpuDevice;
                let device = index.map_or(WgpuDevice::DefaultDevice, WgpuDevice::DiscreteGpu);
                probe::<Wgpu>(spec, &device)?;
                return Ok(task.run::<burn::backend::Autodiff<Wgpu>>(device));
            }
            Err(not_compiled())
        }
        DeviceSpec::Cuda(index) => {
            #[cfg(feature = "cuda")]
            {
                let device = burn::backend::cuda::CudaDevice::new(index);
                probe::<Cuda>(spec, &device)?;
                return Ok(task.run::<burn::backend::Autodiff<Cuda>>(device));
            }
            Err(not_compiled())
        }
    }
}

/// Burn's ids of the devices `specs`, which must all belong to one backend: the devices of a
/// data-parallel run (`--devices cuda:0,cuda:1`; `cpu,cpu` is two replicas on the CPU).
pub fn device_ids(specs: &[DeviceSpec]) -> Result<Vec<DeviceId>> {
    struct IdOf;
    impl BackendTask for IdOf {
        type Output = DeviceId;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> DeviceId {
            device.to_id()
        }
    }
    if let Some(other) = specs.iter().find(|s| s.feature() != specs[0].feature()) {
        return Err(Error::MixedBackends { first: specs[0].to_string(), other: other.to_string() });
    }
    specs.iter().map(|s| run_on(s, IdOf)).collect()
}

/// Runs one tiny operation on a GPU device, so that a missing driver, adapter or device index
/// is an [`Error::DeviceUnavailable`] here instead of a panic inside the task (the GPU runtimes
/// panic when they cannot open a device). The runtime's own panic message still reaches stderr.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn probe<B: burn::tensor::backend::Backend>(spec: &DeviceSpec, device: &B::Device) -> Result<()> {
    let device = device.clone();
    let touched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _ = burn::tensor::Tensor::<B, 1>::ones([1], &device).into_data();
    }));
    touched.map_err(|payload| {
        let reason = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the backend panicked while opening it".into());
        Error::DeviceUnavailable { device: spec.to_string(), reason }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that does nothing, to exercise device selection alone.
    struct Nothing;
    impl BackendTask for Nothing {
        type Output = ();
        fn run<B: AutodiffBackend>(self, _device: B::Device) {}
    }

    #[test]
    fn parses_every_device_form() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("wgpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Wgpu(None));
        assert_eq!("wgpu:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Wgpu(Some(1)));
        assert_eq!("flex".parse::<DeviceSpec>().unwrap(), DeviceSpec::Flex);
        for bad in ["gpu", "cuda:x", "cpu:1", "", "wgpu:-1"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(matches!(err, Error::UnknownDevice(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for spec in [DeviceSpec::Cpu, DeviceSpec::Flex, DeviceSpec::Wgpu(Some(2)), DeviceSpec::Cuda(1)] {
            assert_eq!(spec.to_string().parse::<DeviceSpec>().unwrap(), spec);
        }
    }

    /// In JSON (saved options) a device is the text a user types.
    #[test]
    fn json_is_the_device_text() {
        assert_eq!(serde_json::to_string(&DeviceSpec::Wgpu(Some(2))).unwrap(), r#""wgpu:2""#);
        assert_eq!(serde_json::from_str::<DeviceSpec>(r#""CUDA:1""#).unwrap(), DeviceSpec::Cuda(1));
        let err = serde_json::from_str::<DeviceSpec>(r#""tpu""#).unwrap_err().to_string();
        assert!(err.contains("tpu"), "{err}");
    }

    /// A GPU that cannot be opened is an error, not a panic: on a machine without an NVIDIA
    /// driver `cuda:0` must fail cleanly, and an out-of-range index fails everywhere.
    #[cfg(feature = "cuda")]
    #[test]
    fn unusable_cuda_device_is_an_error() {
        let err = run_on(&DeviceSpec::Cuda(4096), Nothing).unwrap_err();
        assert!(matches!(err, Error::DeviceUnavailable { .. }), "{err}");
        assert!(err.to_string().contains("cuda:4096"), "{err}");
    }

    #[test]
    fn missing_backend_names_its_feature() {
        for spec in [DeviceSpec::Wgpu(None), DeviceSpec::Cuda(0), DeviceSpec::NdArray] {
            let compiled = cfg!(feature = "wgpu") && spec.feature() == "wgpu"
                || cfg!(feature = "cuda") && spec.feature() == "cuda"
                || cfg!(feature = "ndarray") && spec.feature() == "ndarray";
            if compiled {
                continue;
            }
            let message = run_on(&spec, Nothing).unwrap_err().to_string();
            assert!(message.contains(&format!("--features {}", spec.feature())), "{message}");
        }
    }
}
