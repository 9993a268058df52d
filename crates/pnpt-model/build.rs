//! Tells the crate whether it is compiled without optimisation (`OPT_LEVEL` 0, the default
//! `cargo run` profile of a dependent that did not raise `opt-level` for its dependencies), so
//! that `Detector::load` can warn that inference will be some 30-60× slower.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(pnpt_unoptimised)");
    println!("cargo::rerun-if-env-changed=OPT_LEVEL");
    if std::env::var("OPT_LEVEL").is_ok_and(|level| level == "0") {
        println!("cargo::rustc-cfg=pnpt_unoptimised");
    }
}
