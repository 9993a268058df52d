//! Decoding (PNG/JPEG/BMP → 8-bit RGB), resizing and normalisation into CHW `f32`.
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageError, ImageReader, RgbImage};

use crate::DataError;
use crate::dataset::Sample;

/// How images become model input: a square resize and a per-channel normalisation.
///
/// The backbone crate owns the statistics its weights were trained with and builds this; the
/// data crate only applies it: `x = (pixel / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Side of the square model input in pixels (images are resized to `size × size`).
    pub size: u32,
    /// Per-channel mean (R, G, B) subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B) divided by after the mean.
    pub std: [f32; 3],
}

impl Preprocess {
    /// ImageNet statistics (torchvision's `Normalize` defaults) at the given input size.
    ///
    /// ```
    /// let p = pnpt_data::Preprocess::imagenet(256);
    /// assert_eq!(p.size, 256);
    /// assert_eq!(p.mean, [0.485, 0.456, 0.406]);
    /// ```
    pub fn imagenet(size: u32) -> Self {
        Self { size, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
    }

    /// Arbitrary statistics.
    pub fn new(size: u32, mean: [f32; 3], std: [f32; 3]) -> Self {
        Self { size, mean, std }
    }

    /// Number of `f32` values one image occupies: `3 * size * size`.
    pub fn len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// Whether `size` is zero (then every image is empty).
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
}

impl Default for Preprocess {
    /// ImageNet statistics at 256×256, the paper's input.
    fn default() -> Self {
        Self::imagenet(256)
    }
}

/// Maps an `image` error to ours, keeping the path.
pub(crate) fn map_image_error(path: &Path, e: ImageError) -> DataError {
    let path = path.to_path_buf();
    match e {
        ImageError::Unsupported(u) => DataError::UnsupportedFormat { path, reason: u.to_string() },
        // A stream that ends early is a truncated file, not an OS failure.
        ImageError::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => {
            DataError::Corrupt { path, reason: format!("unexpected end of file ({io})") }
        }
        ImageError::IoError(io) => DataError::Io { path, source: io },
        other => DataError::Corrupt { path, reason: other.to_string() },
    }
}

/// Opens a reader with the format taken from the bytes (falling back to the extension), after
/// rejecting zero-byte files with their own message.
fn open_reader(path: &Path) -> Result<ImageReader<std::io::BufReader<fs::File>>, DataError> {
    let meta = fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if !meta.is_file() {
        return Err(DataError::io(path, std::io::Error::other("not a regular file")));
    }
    if meta.len() == 0 {
        return Err(DataError::EmptyFile { path: path.to_path_buf() });
    }
    let reader = ImageReader::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = reader.with_guessed_format().map_err(|e| DataError::io(path, e))?;
    if reader.format().is_none() {
        return Err(DataError::UnsupportedFormat {
            path: path.to_path_buf(),
            reason: "neither the file contents nor its extension name a known image format".into(),
        });
    }
    Ok(reader)
}

/// Largest accepted image side in pixels, checked in the header before any pixel is decoded
/// (the largest MVTec/VisA images are about 1,600 pixels a side).
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// Decodes any supported file (PNG of any bit depth / colour type, JPEG, BMP) as-is; a side
/// above [`MAX_IMAGE_SIDE`] is [`DataError::TooLarge`] before decoding.
pub fn decode(path: impl AsRef<Path>) -> Result<DynamicImage, DataError> {
    use image::ImageDecoder;
    let path = path.as_ref();
    let decoder = open_reader(path)?.into_decoder().map_err(|e| map_image_error(path, e))?;
    let (width, height) = decoder.dimensions();
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(DataError::TooLarge { path: path.to_path_buf(), width, height, limit: MAX_IMAGE_SIDE });
    }
    DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(path, e))
}

/// Decodes any supported file into 8-bit RGB.
///
/// Grey is replicated to three channels, alpha is dropped (not composited: MVTec-style data
/// is opaque), 16-bit samples are scaled to 8 bits with rounding (`v / 257`), palettes are
/// expanded.
///
/// ```no_run
/// let rgb = pnpt_data::decode_rgb(std::path::Path::new("bottle/train/good/000.png")).unwrap();
/// println!("{}x{}", rgb.width(), rgb.height());
/// ```
pub fn decode_rgb(path: impl AsRef<Path>) -> Result<RgbImage, DataError> {
    let path = path.as_ref();
    Ok(match decode(path)? {
        DynamicImage::ImageRgb8(img) => img,
        other => other.to_rgb8(),
    })
}

/// Width and height from the file header only (no pixel decoding), with the same errors as
/// [`decode_rgb`] for empty, unsupported or unreadable files.
pub fn image_size(path: impl AsRef<Path>) -> Result<(u32, u32), DataError> {
    let path = path.as_ref();
    open_reader(path)?.into_dimensions().map_err(|e| map_image_error(path, e))
}

/// Resizes (bilinear/triangle filter, antialiased when shrinking) to `pre.size²` and normalises
/// into a CHW vector of length `3 * size * size` (channel-major: all R, then all G, then all B).
///
/// Non-square images are stretched to the square, as MVTec-style pipelines do.
///
/// ```
/// use image::{DynamicImage, RgbImage, Rgb};
/// let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, Rgb([255, 0, 51])));
/// let pre = pnpt_data::Preprocess::new(2, [0.0; 3], [1.0; 3]);
/// let chw = pnpt_data::to_chw(&img, &pre);
/// assert_eq!(chw.len(), 12);
/// assert_eq!(&chw[..4], &[1.0; 4]);      // R plane
/// assert_eq!(&chw[4..8], &[0.0; 4]);     // G plane
/// assert!((chw[8] - 0.2).abs() < 1e-6);  // B = 51 / 255
/// ```
pub fn to_chw(img: &DynamicImage, pre: &Preprocess) -> Vec<f32> {
    match img.as_rgb8() {
        Some(rgb) => rgb_to_chw(rgb, pre),
        None => rgb_to_chw(&img.to_rgb8(), pre),
    }
}

/// [`to_chw`] for an image that is already 8-bit RGB (no conversion copy).
pub fn rgb_to_chw(img: &RgbImage, pre: &Preprocess) -> Vec<f32> {
    let s = pre.size;
    let resized;
    let img = if img.dimensions() == (s, s) {
        img
    } else {
        resized = image::imageops::resize(img, s, s, FilterType::Triangle);
        &resized
    };
    let plane = s as usize * s as usize;
    let mut out = vec![0f32; 3 * plane];
    // Per channel: (v/255 - m)/sd = v * a + b, folded once instead of per pixel.
    let mut a = [0f32; 3];
    let mut b = [0f32; 3];
    for c in 0..3 {
        a[c] = 1.0 / (255.0 * pre.std[c]);
        b[c] = -pre.mean[c] / pre.std[c];
    }
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px.0[c] as f32 * a[c] + b[c];
        }
    }
    out
}

/// Decodes a file and preprocesses it: [`decode_rgb`] then [`rgb_to_chw`].
pub fn load_image(path: impl AsRef<Path>, pre: &Preprocess) -> Result<Vec<f32>, DataError> {
    let path = path.as_ref();
    Ok(rgb_to_chw(&decode_rgb(path)?, pre))
}

/// Nearest-neighbour resize of a row-major `w × h` byte map to `size × size`.
///
/// Source index `floor((dst + 0.5) * src / dst)` (PIL `NEAREST`, PyTorch `nearest-exact`), so
/// masks stay binary and an upscale by 2 copies each pixel into a 2×2 block.
pub fn resize_nearest(src: &[u8], w: u32, h: u32, size: u32) -> Vec<u8> {
    let (w, h, s) = (w as usize, h as usize, size as usize);
    if w == 0 || h == 0 {
        return vec![0; s * s];
    }
    let map = |dst: usize, n: usize| (((dst as f64 + 0.5) * n as f64 / s as f64) as usize).min(n - 1);
    let xs: Vec<usize> = (0..s).map(|x| map(x, w)).collect();
    let mut out = Vec::with_capacity(s * s);
    for y in 0..s {
        let row = &src[map(y, h) * w..][..w];
        out.extend(xs.iter().map(|&x| row[x]));
    }
    out
}

/// Reads one mask file as a binary map at its native size: 1 where any colour channel is > 0.
///
/// Any colour channel counts (not luma) so a pure-blue or low-valued LOCO label is never lost.
pub fn decode_mask(path: impl AsRef<Path>) -> Result<(Vec<u8>, u32, u32), DataError> {
    let path = path.as_ref();
    let img = decode(path)?;
    let (w, h) = (img.width(), img.height());
    let bin: Vec<u8> = match &img {
        DynamicImage::ImageLuma8(m) => m.as_raw().iter().map(|&v| (v > 0) as u8).collect(),
        _ => {
            let rgb = img.to_rgb16();
            rgb.pixels().map(|p| (p.0.iter().any(|&v| v > 0)) as u8).collect()
        }
    };
    Ok((bin, w, h))
}

/// The ground truth of a sample as a `size × size` row-major map of 0/1 (1 = anomalous).
///
/// Several masks (MVTec LOCO) are merged with a logical OR at native resolution, then resized
/// with [`resize_nearest`]. Each mask must have its image's size. A normal sample (no masks)
/// gives all zeros without touching the disk.
pub fn load_mask(sample: &Sample, size: u32) -> Result<Vec<u8>, DataError> {
    let n = size as usize * size as usize;
    if sample.masks.is_empty() {
        return Ok(vec![0; n]);
    }
    let (iw, ih) = image_size(&sample.path)?;
    let mut merged = vec![0u8; iw as usize * ih as usize];
    for m in &sample.masks {
        let (bin, mw, mh) = decode_mask(m)?;
        if (mw, mh) != (iw, ih) {
            return Err(DataError::MaskSizeMismatch {
                path: sample.path.clone(),
                mask: m.clone(),
                image_size: (iw, ih),
                mask_size: (mw, mh),
            });
        }
        for (d, s) in merged.iter_mut().zip(bin) {
            *d |= s;
        }
    }
    Ok(resize_nearest(&merged, iw, ih, size))
}
