//! Writes the stride 4/8/16 feature maps of one image as `s4.npy`, `s8.npy`, `s16.npy`
//! (float32, NCHW, batch 1), using the backbone's own preprocessing (256×256, ImageNet mean/std).
//!
//! ```text
//! cargo run --release --example extract_features -- --backbone efficientnet-lite0 --image IMG --out DIR
//! cargo run --release --example extract_features -- --backbone wide_resnet50_2 --weights W.pth --image IMG --out DIR
//! ```
use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::{Tensor, TensorData};
use clap::Parser;
use pnpt::backbone::{Backbone, BackboneKind};
use pnpt::{data, io};

/// The crate's default CPU backend (Flex, or NdArray with `--no-default-features --features ndarray`).
type B = pnpt::backend::Cpu;

/// Writes the stride 4/8/16 feature maps of one image as s4.npy, s8.npy, s16.npy.
#[derive(Debug, Parser)]
#[command(name = "extract_features")]
struct Args {
    /// efficientnet-lite0 (bundled weights), resnet18, resnet34, resnet50, wide_resnet50_2
    /// (the ResNets need --weights: a torchvision state dict, .pth or .safetensors).
    #[arg(long, value_name = "NAME")]
    backbone: BackboneKind,
    /// The image.
    #[arg(long, value_name = "PATH")]
    image: PathBuf,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Backbone weights.
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = Default::default();
    let start = std::time::Instant::now();
    let backbone = Backbone::<B>::load(args.backbone, args.weights.as_deref(), &device)?;
    eprintln!("loaded {} in {:.2} s", backbone.kind(), start.elapsed().as_secs_f64());
    let pre = backbone.preprocess();
    let chw = data::load_image(&args.image, &pre)?;
    let side = pre.size as usize;
    let images = Tensor::<B, 4>::from_data(TensorData::new(chw, [1, 3, side, side]), &device);
    let start = std::time::Instant::now();
    let features = backbone.features(images)?;
    let features = features.maps.map(|m| m.into_data());
    eprintln!("forward in {:.2} s", start.elapsed().as_secs_f64());

    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    for (map, stride) in features.into_iter().zip(backbone.strides()) {
        let shape = map.shape.to_vec();
        let values: Vec<f32> = map.into_vec().map_err(|e| format!("reading features: {e:?}"))?;
        let path = args.out.join(format!("s{stride}.npy"));
        // npy::write goes through a temporary file renamed into place.
        io::npy::write(&path, &shape, &values)?;
        println!("{}: {shape:?}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    // Bad arguments: clap prints its message and exits 2.
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
