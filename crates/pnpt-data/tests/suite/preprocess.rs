//! Decoding of every supported format, resize/normalise arithmetic, masks, tensors and batches.
use std::fs;

use burn::backend::Flex;
use pnpt_data::image::codecs::jpeg::JpegEncoder;
use pnpt_data::image::{DynamicImage, Rgb, RgbImage, RgbaImage};
use pnpt_data::{
    BatchIter, Preprocess, Sample, decode_rgb, load_image, load_images, load_mask, load_masks, resize_nearest, to_chw,
};
use tempfile::tempdir;

use crate::{png_mask, png_rgb};

type B = Flex;

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
}

fn sample(path: std::path::PathBuf) -> Sample {
    Sample { path, category: "c".into(), defect: "good".into(), masks: vec![] }
}

/// The 2×2 image of the hand-worked normalisation example.
fn two_by_two() -> RgbImage {
    let px = [[0, 0, 0], [255, 255, 255], [255, 0, 51], [0, 128, 255]];
    RgbImage::from_fn(2, 2, |x, y| Rgb(px[(y * 2 + x) as usize]))
}

#[test]
fn to_chw_normalises_by_hand() {
    let pre = Preprocess::new(2, [0.5, 0.5, 0.5], [0.5, 0.25, 1.0]);
    let got = to_chw(&DynamicImage::ImageRgb8(two_by_two()), &pre);
    // (v/255 - 0.5) / std, worked out per pixel in row-major order, plane by plane.
    let g11 = (128.0 / 255.0 - 0.5) / 0.25;
    let want = [-1.0, 1.0, 1.0, -1.0, -2.0, 2.0, -2.0, g11, -0.5, 0.5, -0.3, 0.5];
    assert!(close(&got, &want), "{got:?}");
}

#[test]
fn imagenet_constants() {
    let p = Preprocess::imagenet(256);
    assert_eq!((p.size, p.mean, p.std), (256, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]));
    assert_eq!(p.len(), 3 * 256 * 256);
    // White in the red channel: (1 - 0.485) / 0.229.
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([255, 0, 0])));
    let v = to_chw(&img, &Preprocess::imagenet(1));
    assert!(close(&v, &[(1.0 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]));
}

#[test]
fn bilinear_upsample_matches_hand_values() {
    // Columns 0 and 200 → width 4: align_corners=False bilinear gives 0, 50, 150, 200.
    let img = RgbImage::from_fn(2, 2, |x, _| Rgb([if x == 0 { 0 } else { 200 }; 3]));
    let v = to_chw(&DynamicImage::ImageRgb8(img), &Preprocess::new(4, [0.0; 3], [1.0; 3]));
    let row: Vec<f32> = [0.0, 50.0, 150.0, 200.0].iter().map(|x| x / 255.0).collect();
    for c in 0..3 {
        for y in 0..4 {
            assert!(close(&v[c * 16 + y * 4..c * 16 + y * 4 + 4], &row), "c{c} y{y}: {v:?}");
        }
    }
}

#[test]
fn triangle_downsample_is_antialiased() {
    // Row [0, 0, 255, 255] halved: the triangle spans two source pixels each side, so each output
    // mixes in its neighbour: (0.25*255)/1.75 = 36.4 → 36 and (1.5*255)/1.75 = 218.6 → 219.
    let img = RgbImage::from_fn(4, 4, |x, _| Rgb([if x < 2 { 0 } else { 255 }; 3]));
    let v = to_chw(&DynamicImage::ImageRgb8(img), &Preprocess::new(2, [0.0; 3], [1.0; 3]));
    let want: Vec<f32> = [36.0, 219.0, 36.0, 219.0].iter().map(|x| x / 255.0).collect();
    assert!(close(&v[..4], &want), "{v:?}");
}

#[test]
fn nearest_resize_keeps_blocks() {
    let mut m = vec![0u8; 16];
    m[4 + 1] = 1; // (1, 1) of a 4×4
    assert_eq!(resize_nearest(&m, 4, 4, 2), [1, 0, 0, 0]);
    assert_eq!(resize_nearest(&[1, 0, 0, 1], 2, 2, 4), [1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1]);
    // 3 → 2: sources floor(0.5*1.5)=0 and floor(1.5*1.5)=2.
    assert_eq!(resize_nearest(&[1, 0, 0, 0, 0, 0, 0, 0, 1], 3, 3, 2), [1, 0, 0, 1]);
}

#[test]
fn decodes_gray_rgba_rgb16_palette_bmp_jpeg() {
    let d = tempdir().unwrap();
    let p = d.path();

    let gray = p.join("gray.png");
    pnpt_data::image::GrayImage::from_pixel(2, 1, pnpt_data::image::Luma([77])).save(&gray).unwrap();
    assert_eq!(decode_rgb(&gray).unwrap().as_raw(), &[77u8; 6]);

    let rgba = p.join("rgba.png");
    RgbaImage::from_pixel(1, 1, pnpt_data::image::Rgba([10, 20, 30, 0])).save(&rgba).unwrap();
    assert_eq!(decode_rgb(&rgba).unwrap().as_raw(), &[10, 20, 30]);

    // 16-bit RGB written with the png crate (big-endian samples): 0, 65535, 128*257.
    let rgb16 = p.join("rgb16.png");
    {
        let f = fs::File::create(&rgb16).unwrap();
        let mut e = png::Encoder::new(f, 1, 1);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Sixteen);
        let mut w = e.write_header().unwrap();
        let v: [u16; 3] = [0, 65535, 128 * 257];
        w.write_image_data(&v.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<_>>()).unwrap();
    }
    assert_eq!(decode_rgb(&rgb16).unwrap().as_raw(), &[0, 255, 128]);

    // Palette: index 0 = red, 1 = blue; pixels 0,1,1,0.
    let pal = p.join("palette.png");
    {
        let f = fs::File::create(&pal).unwrap();
        let mut e = png::Encoder::new(f, 2, 2);
        e.set_color(png::ColorType::Indexed);
        e.set_depth(png::BitDepth::Eight);
        e.set_palette(vec![255, 0, 0, 0, 0, 255]);
        e.write_header().unwrap().write_image_data(&[0, 1, 1, 0]).unwrap();
    }
    assert_eq!(decode_rgb(&pal).unwrap().as_raw(), &[255, 0, 0, 0, 0, 255, 0, 0, 255, 255, 0, 0]);

    let bmp = p.join("x.bmp");
    RgbImage::from_pixel(3, 2, Rgb([1, 2, 3])).save(&bmp).unwrap();
    assert_eq!(decode_rgb(&bmp).unwrap().as_raw(), &[1u8, 2, 3].repeat(6));

    // JPEG is lossy: a flat colour comes back within a few levels.
    let jpg = p.join("x.jpg");
    {
        let f = fs::File::create(&jpg).unwrap();
        let img = RgbImage::from_pixel(16, 16, Rgb([200, 100, 50]));
        JpegEncoder::new_with_quality(f, 95).encode_image(&img).unwrap();
    }
    let got = decode_rgb(&jpg).unwrap();
    assert_eq!(got.dimensions(), (16, 16));
    for px in got.pixels() {
        for (a, b) in px.0.iter().zip([200u8, 100, 50]) {
            assert!((*a as i32 - b as i32).abs() <= 4, "{:?}", px.0);
        }
    }
    // A JPEG saved under a .png name still decodes: the format comes from the bytes.
    let disguised = p.join("really_jpeg.png");
    fs::copy(&jpg, &disguised).unwrap();
    assert_eq!(decode_rgb(&disguised).unwrap().dimensions(), (16, 16));
}

#[test]
fn load_image_resizes_mixed_sizes() {
    let d = tempdir().unwrap();
    let a = png_rgb(&d.path().join("a.png"), 8, 8, |_, _| [255, 255, 255]);
    let b = png_rgb(&d.path().join("b.png"), 3, 5, |_, _| [0, 0, 0]);
    let pre = Preprocess::new(4, [0.0; 3], [1.0; 3]);
    assert!(close(&load_image(&a, &pre).unwrap(), &[1.0; 48]));
    assert!(close(&load_image(&b, &pre).unwrap(), &[0.0; 48]));
}

#[test]
fn masks_merge_binarise_and_resize() {
    let d = tempdir().unwrap();
    let img = png_rgb(&d.path().join("img.png"), 4, 4, |_, _| [0, 0, 0]);
    // Two LOCO-style masks with non-255 labels: both count, merged by OR.
    let m1 = png_mask(&d.path().join("m1.png"), 4, 4, &[(0, 0)], 255);
    let m2 = png_mask(&d.path().join("m2.png"), 4, 4, &[(3, 3)], 1);
    let s = Sample { path: img.clone(), category: "c".into(), defect: "x".into(), masks: vec![m1, m2] };
    let mut want = vec![0u8; 16];
    want[0] = 1;
    want[15] = 1;
    assert_eq!(load_mask(&s, 4).unwrap(), want);
    // Upsampled ×2: each set pixel becomes a 2×2 block.
    let up = load_mask(&s, 8).unwrap();
    assert_eq!(up.iter().map(|&v| v as usize).sum::<usize>(), 8);
    assert_eq!((up[0], up[1], up[8], up[9], up[63], up[54]), (1, 1, 1, 1, 1, 1));
    // A 16-bit mask with value 1 (would vanish if scaled to 8 bits first) is anomalous.
    let m16 = d.path().join("m16.png");
    {
        let f = fs::File::create(&m16).unwrap();
        let mut e = png::Encoder::new(f, 4, 4);
        e.set_color(png::ColorType::Grayscale);
        e.set_depth(png::BitDepth::Sixteen);
        let mut px = vec![0u8; 32];
        px[2 * 5 + 1] = 1; // pixel (1, 1) = 0x0001
        e.write_header().unwrap().write_image_data(&px).unwrap();
    }
    let s16 = Sample { masks: vec![m16], ..s.clone() };
    let got = load_mask(&s16, 4).unwrap();
    assert_eq!(got.iter().position(|&v| v == 1), Some(5));
    assert_eq!(got.iter().filter(|&&v| v == 1).count(), 1);
    // Normal samples: zeros, no file access (the path need not exist).
    let normal = sample(d.path().join("does-not-exist.png"));
    assert_eq!(load_mask(&normal, 3).unwrap(), vec![0; 9]);
    // Batch of masks, in order.
    let all = load_masks(&[normal, s], 4).unwrap();
    assert_eq!(all.len(), 32);
    assert_eq!(&all[16..], &want[..]);
}

#[test]
fn load_images_builds_nchw_tensor() {
    let d = tempdir().unwrap();
    let a = d.path().join("a.png");
    two_by_two().save(&a).unwrap();
    let b = png_rgb(&d.path().join("b.png"), 2, 2, |_, _| [255, 0, 255]);
    let pre = Preprocess::new(2, [0.5, 0.5, 0.5], [0.5, 0.25, 1.0]);
    let t = load_images::<B>(&[sample(a), sample(b)], &pre, &Default::default()).unwrap();
    assert_eq!(t.dims(), [2, 3, 2, 2]);
    let v = t.into_data().to_vec::<f32>().unwrap();
    let g11 = (128.0 / 255.0 - 0.5) / 0.25;
    let first = [-1.0, 1.0, 1.0, -1.0, -2.0, 2.0, -2.0, g11, -0.5, 0.5, -0.3, 0.5];
    let second = [1.0, 1.0, 1.0, 1.0, -2.0, -2.0, -2.0, -2.0, 0.5, 0.5, 0.5, 0.5];
    assert!(close(&v[..12], &first), "{v:?}");
    assert!(close(&v[12..], &second), "{v:?}");
}

/// Seven 2×2 images whose red value encodes their index, to trace batches.
fn indexed_samples(dir: &std::path::Path) -> Vec<Sample> {
    (0..7u8).map(|i| sample(png_rgb(&dir.join(format!("{i}.png")), 2, 2, move |_, _| [i * 10, 0, 0]))).collect()
}

#[test]
fn batch_iter_ordered_and_shuffled() {
    let d = tempdir().unwrap();
    let samples = indexed_samples(d.path());
    let pre = Preprocess::new(2, [0.0; 3], [1.0; 3]);
    let dev = Default::default();
    let it = BatchIter::<B>::new(&samples, &pre, 3, None, &dev).unwrap();
    assert_eq!(it.remaining(), 3);
    let mut seen = Vec::new();
    for batch in it {
        let (t, idx) = batch.unwrap();
        assert_eq!(t.dims(), [idx.len(), 3, 2, 2]);
        let v = t.into_data().to_vec::<f32>().unwrap();
        for (k, &i) in idx.iter().enumerate() {
            // Red plane of image k carries its index.
            assert!((v[k * 12] - (i as f32 * 10.0) / 255.0).abs() < 1e-6);
        }
        seen.push(idx);
    }
    assert_eq!(seen, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);

    let order = |seed| -> Vec<usize> {
        BatchIter::<B>::new(&samples, &pre, 2, Some(seed), &dev).unwrap().flat_map(|b| b.unwrap().1).collect()
    };
    let (a, b, c) = (order(11), order(11), order(12));
    assert_eq!(a, b, "same seed, same order");
    assert_ne!(a, c, "different seed, different order");
    assert_ne!(a, (0..7).collect::<Vec<_>>(), "shuffled");
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..7).collect::<Vec<_>>(), "each sample exactly once");
    assert_eq!(BatchIter::<B>::order(7, Some(11)), a);
}

#[test]
fn batch_iter_stops_after_error() {
    let d = tempdir().unwrap();
    let mut samples = indexed_samples(d.path());
    fs::write(&samples[4].path, b"").unwrap();
    samples[4].path = samples[4].path.clone();
    let pre = Preprocess::new(2, [0.0; 3], [1.0; 3]);
    let mut it = BatchIter::<B>::new(&samples, &pre, 3, None, &Default::default()).unwrap();
    assert!(it.next().unwrap().is_ok());
    let err = it.next().unwrap().unwrap_err();
    assert!(err.to_string().contains("4.png"), "{err}");
    assert!(it.next().is_none());
    // Dropping a half-consumed iterator must not hang or panic.
    let mut it = BatchIter::<B>::new(&indexed_samples(d.path()), &pre, 1, None, &Default::default()).unwrap();
    it.next();
    drop(it);
}
