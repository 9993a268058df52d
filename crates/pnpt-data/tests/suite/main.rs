//! Integration tests of pnpt-data, one binary (linking Burn once) with a module per area.
mod audit;
mod errors;
mod layouts;
mod preprocess;
mod real_data;

use std::fs;
use std::path::{Path, PathBuf};

use pnpt_data::image::{GrayImage, Luma, Rgb, RgbImage};

/// Writes an RGB PNG whose pixel (x, y) is `f(x, y)`, creating parent folders.
pub fn png_rgb(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y))).save(path).unwrap();
    path.to_path_buf()
}

/// Writes an 8-bit grey PNG mask with the listed pixels set to `v`, others 0.
pub fn png_mask(path: &Path, w: u32, h: u32, on: &[(u32, u32)], v: u8) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    GrayImage::from_fn(w, h, |x, y| Luma([if on.contains(&(x, y)) { v } else { 0 }])).save(path).unwrap();
    path.to_path_buf()
}

/// A small uniform RGB PNG.
pub fn png(path: &Path) -> PathBuf {
    png_rgb(path, 4, 4, |_, _| [100, 150, 200])
}

/// Writes arbitrary bytes, creating parent folders.
pub fn bytes(path: &Path, b: &[u8]) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b).unwrap();
    path.to_path_buf()
}

/// Path relative to a root, with `/` separators, for readable expectations.
pub fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/")
}
