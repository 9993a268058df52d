//! Throwaway generator run by `convert.sh`: ONNX graph -> Burn Rust module + burnpack weights.
//!
//! Not part of the workspace build: `convert.sh` copies this file into a temporary cargo
//! project so that burn-onnx is compiled only when a developer regenerates the weights.
use burn_onnx::{LoadStrategy, ModelGen};

fn main() {
    let mut args = std::env::args().skip(1);
    let (input, out_dir) = match (args.next(), args.next()) {
        (Some(i), Some(o)) => (i, o),
        _ => {
            eprintln!("usage: gen <model.onnx> <out_dir>");
            std::process::exit(2);
        }
    };
    ModelGen::new()
        .input(&input)
        .out_dir(&out_dir)
        // `Bytes`: only `from_bytes` is generated, so the generated code holds no machine-specific
        // absolute path; pnpt-backbone embeds the `.bpk` itself with a relative `include_bytes!`.
        .load_strategy(LoadStrategy::Bytes)
        // One flat module: the graph is small, and a single file is easier to review.
        .partition(false)
        .development(false)
        .run_from_cli();
}
