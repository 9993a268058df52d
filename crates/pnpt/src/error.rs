//! The facade's error type: device selection plus the errors of every member crate, so an
//! application can use one `?` across the whole pipeline. Only what library calls return:
//! command-line and output-folder errors belong to `pnpt-cli`'s `CliError`.

/// Everything that can go wrong in the `pnpt` facade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device string is not one we know.
    #[error("unknown device `{0}`: expected cpu, ndarray, flex, wgpu, wgpu:N, cuda or cuda:N")]
    UnknownDevice(String),
    /// The device is valid but its backend was not compiled into this binary.
    #[error("device `{device}` needs pnpt's `{feature}` cargo feature: rebuild with `--features {feature}`")]
    BackendNotCompiled {
        /// The device the user asked for.
        device: String,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// The backend is compiled in but the device cannot be used (no driver, no adapter, bad index).
    #[error(
        "device `{device}` is not usable ({reason}); the backend's own message is above: usually a missing driver (libcuda.so for CUDA, a Vulkan/Metal/DX12 adapter for wgpu) or a device index out of range"
    )]
    DeviceUnavailable {
        /// The device the user asked for.
        device: String,
        /// What the backend reported.
        reason: String,
    },
    /// Two backends disagree beyond the tolerance of an equivalence check.
    #[error("{0}")]
    Equivalence(String),
    /// The devices of one data-parallel run belong to two backends.
    #[error("devices of two backends in one run: {first} and {other} (a data-parallel run uses one backend)")]
    MixedBackends {
        /// The first device.
        first: String,
        /// The first device of another backend.
        other: String,
    },
    /// Saving or loading a module record failed.
    #[error("module record: {0}")]
    Record(String),
    /// Dataset or image input failed.
    #[error(transparent)]
    Data(#[from] pnpt_data::DataError),
    /// A file format or an output file failed (`.npy`, safetensors, atomic writes).
    #[error(transparent)]
    File(#[from] pnpt_io::Error),
    /// The backbone failed.
    #[error(transparent)]
    Backbone(#[from] pnpt_backbone::BackboneError),
    /// The prompt pool failed.
    #[error(transparent)]
    Prompt(#[from] pnpt_prompt::Error),
    /// The patch memory failed.
    #[error(transparent)]
    Memory(#[from] pnpt_memory::Error),
    /// The model, training or the detector failed.
    #[error(transparent)]
    Model(#[from] pnpt_model::Error),
    /// A metric could not be computed.
    #[error(transparent)]
    Metrics(#[from] pnpt_metrics::MetricsError),
    /// A category's metrics could not be computed.
    #[error("category `{category}`: {source}")]
    CategoryMetrics {
        /// The category.
        category: String,
        /// The metrics error.
        source: pnpt_metrics::MetricsError,
    },
    /// Encoding an image (heat map) failed.
    #[error("{path}: {reason}")]
    Image {
        /// The image being written.
        path: std::path::PathBuf,
        /// The encoder's message.
        reason: String,
    },
    /// The validation set cannot be built or scored.
    #[error("validation: {0}")]
    Validation(String),
    /// A report could not be written as JSON: never written as `null` or cut short instead.
    #[error("{path}: cannot write the report as JSON: {reason}")]
    Report {
        /// The report file.
        path: std::path::PathBuf,
        /// The serialiser's message.
        reason: String,
    },
    /// No category can be evaluated.
    #[error("no category of the dataset has both normal and anomalous test images")]
    NothingToEvaluate,
}

/// Result with the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
