//! The `pnpt` command with real parts: `predict` on folders, `info`, `train` and `eval`, run as
//! subprocesses against the tiny detector of `common` (fitted once for this binary).

mod common;

use std::path::Path;

use common::{fixture, pnpt_bin};
use pnpt::data::image::{self, ImageFormat};
use serde_json::Value;

/// A folder mixing good images, a truncated PNG and a text file named `.png`: results for the
/// good ones, error lines for the bad two, exit code 1.
#[test]
fn predict_command_on_a_mixed_folder() {
    let f = fixture();
    let dir = f.root.join("mixed");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a_good.png"), &f.good_png).unwrap();
    let jpeg = image::load_from_memory(&f.good_png).unwrap();
    jpeg.to_rgb8().save_with_format(dir.join("sub/b_good.jpg"), ImageFormat::Jpeg).unwrap();
    std::fs::write(dir.join("c_truncated.png"), &f.good_png[..f.good_png.len() / 2]).unwrap();
    std::fs::write(dir.join("d_text.png"), b"not a picture").unwrap();
    std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
    let out = f.root.join("mixed-out");
    let _ = std::fs::remove_dir_all(&out);
    let run = pnpt_bin()
        .arg("predict")
        .arg(&f.dir)
        .arg(&dir)
        .arg(&f.foreign)
        .arg("--out")
        .arg(&out)
        .arg("--batch")
        .arg("2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("5 images") && stderr.contains("2 failed") && stderr.contains("images/s"), "{stderr}");
    let text = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<String> = lines
        .iter()
        .map(|l| Path::new(l["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let foreign_name = f.foreign.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(names, ["a_good.png", "c_truncated.png", "d_text.png", "b_good.jpg", foreign_name.as_str()]);
    for (i, l) in lines.iter().enumerate() {
        let bad = names[i].starts_with('c') || names[i].starts_with('d');
        assert_eq!(l["error"].is_string(), bad, "{l}");
        if !bad {
            for key in [
                "category",
                "retrieval_distance",
                "score",
                "threshold",
                "normalized_score",
                "verdict",
                "ms",
                "unknown_category",
            ] {
                assert!(!l[key].is_null(), "{key}: {l}");
            }
            let overlay = out.join(l["overlay"].as_str().unwrap());
            let mask = image::open(out.join(l["mask"].as_str().unwrap())).unwrap();
            assert!(overlay.is_file());
            assert_eq!((mask.width(), mask.height()), (64, 64), "masks are at the image's size");
        }
    }
    assert_eq!(lines[0]["overlay"], "maps/a_good.overlay.png");
    assert_eq!(lines[3]["mask"], "maps/sub/b_good.mask.png");
    assert_eq!(lines[4]["unknown_category"], true, "{}", lines[4]);
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "predictions.jsonl" && n != "maps")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // --category and --no-maps on one file: exit 0, only the JSONL.
    let out2 = f.root.join("single-out");
    let _ = std::fs::remove_dir_all(&out2);
    let run = pnpt_bin()
        .arg("predict")
        .arg(&f.dir)
        .arg(dir.join("a_good.png"))
        .args(["--category", "screw", "--no-maps", "--out"])
        .arg(&out2)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let line: Value =
        serde_json::from_str(std::fs::read_to_string(out2.join("predictions.jsonl")).unwrap().trim()).unwrap();
    assert_eq!(
        (line["category"].as_str(), line["category_given"].as_bool(), line["overlay"].is_null()),
        (Some("screw"), Some(true), true)
    );
    assert!(!out2.join("maps").exists());
    // The results of the run before are not replaced without a word: refused before anything
    // is scored, and replaced with --overwrite (the earlier maps go too).
    let run = pnpt_bin().arg("predict").arg(&f.dir).arg(&dir).arg("--out").arg(&out2).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("earlier run (predictions.jsonl)") && stderr.contains("--overwrite"), "{stderr}");
    assert!(!stderr.contains("images/s"), "scored before refusing: {stderr}");
    std::fs::create_dir_all(out.join("maps/old")).unwrap();
    let mut run = pnpt_bin();
    let run = run.arg("predict").arg(&f.dir).arg(dir.join("a_good.png")).arg("--out").arg(&out);
    let run = run.arg("--overwrite").output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(std::fs::read_to_string(out.join("predictions.jsonl")).unwrap().lines().count(), 1);
    assert!(!out.join("maps/old").exists() && out.join("maps/a_good.overlay.png").is_file());
    // An unknown category is an error before anything is scored.
    let out3 = f.root.join("teapot-out");
    let _ = std::fs::remove_dir_all(&out3);
    let run = pnpt_bin()
        .arg("predict")
        .arg(&f.dir)
        .arg(&dir)
        .args(["--category", "teapot", "--out"])
        .arg(&out3)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("unknown category `teapot`"));
    // An output folder that cannot be written (sysfs refuses new files, even to root) is an
    // error before the detector loads, let alone an image is scored; so are too many inputs.
    if cfg!(target_os = "linux") {
        for unwritable in ["/sys", "/sys/pnpt-test-out"] {
            let run = pnpt_bin().arg("predict").arg(&f.dir).arg(&dir).args(["--out", unwritable]).output().unwrap();
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert_eq!(run.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains(&format!("output folder {unwritable}")), "{stderr}");
        }
    }
    let mut run = pnpt_bin();
    let run = run.arg("predict").arg(&f.dir).arg(&dir).args(["--max-inputs", "3", "--out"]).arg(&out3);
    let stderr = String::from_utf8_lossy(&run.output().unwrap().stderr).into_owned();
    assert!(stderr.contains("more than 3 images") && !out3.join("predictions.jsonl").exists(), "{stderr}");
}

/// Link loops in the inputs end, and no image is scored twice however many paths reach it
/// (two loops once took 147 s and 7.5 GB before failing; one scored an image 41 times).
#[cfg(unix)]
#[test]
fn predict_follows_each_folder_once() {
    use std::os::unix::fs::symlink;
    let f = fixture();
    let dir = f.root.join("loops");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/one.png"), &f.good_png).unwrap();
    std::fs::write(dir.join("a/b/two.png"), &f.good_png).unwrap();
    symlink(&dir, dir.join("a/b/up")).unwrap();
    symlink(dir.join("a"), dir.join("a/b/again")).unwrap();
    symlink(dir.join("a/one.png"), dir.join("a/b/one-link.png")).unwrap();
    let out = f.root.join("loops-out");
    let _ = std::fs::remove_dir_all(&out);
    let mut run = pnpt_bin();
    let run = run.arg("predict").arg(&f.dir).arg(&dir).arg(dir.join("a")).arg("--no-maps").arg("--out");
    let run = run.arg(&out).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let paths: Vec<String> =
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["path"].as_str().unwrap().to_string()).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths[0].ends_with("a/b/two.png") && paths[1].ends_with("a/one.png"), "{paths:?}");
}

#[test]
fn info_command_text_and_json() {
    let f = fixture();
    let run = pnpt_bin().arg("info").arg(&f.dir).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    for word in ["bottle", "screw", "efficientnet", "thresholds.json", "fused"] {
        assert!(text.to_lowercase().contains(word), "{word} missing: {text}");
    }
    let run = pnpt_bin().arg("info").arg(&f.dir).arg("--json").output().unwrap();
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["input_size"], 64);
    assert!(v["parameters"].as_u64().unwrap() > 0);
    assert!(v["files"]["model.safetensors"].as_u64().unwrap() > 0);
}

/// SIGTERM while a request is in progress: the request is answered, then `pnpt serve` exits 0.
#[cfg(unix)]
/// `pnpt train` and `pnpt eval` run the job (`pnpt_cli::job`) end to end on the tiny set.
#[test]
fn train_and_eval_commands() {
    let f = fixture();
    let out = f.root.join("train-out");
    let _ = std::fs::remove_dir_all(&out);
    let run = pnpt_bin()
        .arg("train")
        .arg("--data")
        .arg(f.root.join("data"))
        .arg("--config")
        .arg(f.root.join("config.json"))
        .args(["--epochs", "1", "--no-heatmaps", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("validation on"), "the scoring method is chosen on validation: {stderr}");
    assert!(out.join("detector/manifest.json").is_file() && out.join("checkpoint").is_dir());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(report["mean"]["image_auroc"].is_number() && report["validation"].is_object(), "{report}");
    assert!(String::from_utf8_lossy(&run.stdout).contains("bottle"), "the report table is printed");

    let eval = f.root.join("eval-out");
    let _ = std::fs::remove_dir_all(&eval);
    let run = pnpt_bin()
        .arg("eval")
        .arg(&f.dir)
        .arg("--data")
        .arg(f.root.join("data"))
        .args(["--method", "memory", "--categories", "bottle", "--out"])
        .arg(&eval)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(eval.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["method"], "memory");
    assert_eq!(report["categories"].as_object().map(|c| c.len()), Some(1));
    assert!(eval.join("heatmaps/bottle").is_dir());
}

/// `pnpt upgrade` converts the committed format-1 folder, which the other commands refuse with
/// a message naming the upgrade; the converted one works with them.
#[test]
fn upgrade_command_on_a_format_1_folder() {
    let old = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pnpt-model/tests/data/detector-format1");
    let run = pnpt_bin().arg("info").arg(&old).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("pnpt upgrade"), "{stderr}");
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("detector");
    let run = pnpt_bin().arg("upgrade").arg(&old).arg(&new).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success() && stderr.contains("format 1"), "{stderr}");
    let run = pnpt_bin().arg("info").arg(&new).arg("--json").output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let info: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(info["categories"].as_array().map(Vec::len), Some(2), "{info}");
    // NEW must be another folder: upgrading in place would replace what it reads.
    let run = pnpt_bin().arg("upgrade").arg(&new).arg(&new).output().unwrap();
    assert!(!run.status.success());
}

/// A detector whose manifest was edited (`"format": 6` made 1, which used to load without its
/// checksums and change every score) is refused by every command that loads it, naming the
/// manifest; `serve` does not start.
#[test]
fn an_edited_manifest_is_refused_by_every_command() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("detector");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(&f.dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let manifest = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("\"format\": 6"), "{text}");
    std::fs::write(&manifest, text.replace("\"format\": 6", "\"format\": 1")).unwrap();
    let image = f.test_images[0].clone();
    let out = tmp.path().join("out");
    let runs: Vec<(&str, Vec<std::ffi::OsString>)> = vec![
        ("info", vec!["info".into(), dir.clone().into()]),
        ("predict", vec!["predict".into(), dir.clone().into(), image.into(), "--out".into(), out.into()]),
        ("serve", vec!["serve".into(), dir.clone().into(), "--addr".into(), "127.0.0.1:0".into()]),
        ("upgrade", vec!["upgrade".into(), dir.clone().into(), tmp.path().join("new").into()]),
    ];
    for (what, args) in runs {
        let mut child = pnpt_bin()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A service that started anyway would run until killed: give it 60 s.
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > std::time::Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} ran on an edited manifest");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.contains("manifest.json") && stderr.contains("checksum mismatch"), "{what}: {stderr}");
    }
    assert!(!tmp.path().join("new").exists());
}
