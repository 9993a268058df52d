//! The bad-input suite of the job (`pnpt_cli::job`, docs/reliability.md): each case is one wrong argument, file,
//! folder or checkpoint, and asserts the typed error *variant* it must produce (never the
//! message text), that nothing panicked, and that no half-written file was left under a final
//! name. Tiny configurations and 32-pixel images keep the whole file within seconds of CPU,
//! but for the one real job it trains (about 10 s).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pnpt::Error;
use pnpt::data::{DataError, Dataset, Sample};
use pnpt::model::PnptConfig;
use pnpt::model::train::CHECKPOINT_FILE;
use pnpt::synth::synthetic::{SynthKind, SyntheticConfig, generate};
use pnpt_cli::CliError;
use pnpt_cli::job::{
    ConfigChoice, JobKind, JobOptions, parse_categories, parse_duration, parse_whole, resume_folder, run_job,
};

mod common;

use common::{copy_dir, tiny_config};

/// A one-category MVTec-layout folder of 32-pixel images: 6 normal training images, 2 normal
/// and 2 defective test images with masks.
fn tiny_data(root: &Path) {
    let synth = SyntheticConfig {
        size: 32,
        train_good: 6,
        test_good: 2,
        test_defective: 2,
        categories: vec![SynthKind::Bottle],
        ..Default::default()
    };
    generate(root, &synth).unwrap();
}

fn job(data: &Path, out: &Path, config: PnptConfig) -> JobOptions {
    let mut o = JobOptions::new(config);
    o.data = Some(data.to_path_buf());
    o.out = out.to_path_buf();
    o.heatmaps = false;
    o.verbose = false;
    o
}

/// Every file under `dir`, recursively (nothing when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A failed run left no output under a final name and no temporary behind.
fn assert_nothing_written(out: &Path, case: &str) {
    let files = files_under(out);
    assert!(files.is_empty(), "{case}: files left in {}: {files:?}", out.display());
    assert!(!out.join("detector").exists() && !out.join("report.json").exists(), "{case}");
}

fn tiny_job_error(data: &Path, config: PnptConfig, case: &str) -> CliError {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("out");
    let err = match run_job(job(data, &o, config)) {
        Ok(_) => panic!("{case}: the job succeeded"),
        Err(e) => e,
    };
    assert_nothing_written(&o, case);
    err
}

#[test]
fn command_line_values() {
    // (case, result, expected variant)
    type Check = fn(&CliError) -> bool;
    let out_of_range: Check = |e| matches!(e, CliError::OutOfRange { .. });
    let not_a_number: Check = |e| matches!(e, CliError::NotANumber { .. });
    let empty_list: Check = |e| matches!(e, CliError::EmptyList { .. });
    let config: Check = |e| matches!(e.library(), Some(Error::Model(pnpt::model::Error::Config(_))));
    let config_file: Check = |e| matches!(e.library(), Some(Error::Model(pnpt::model::Error::ConfigFile { .. })));
    let io: Check = |e| matches!(e.library(), Some(Error::Model(pnpt::model::Error::Io { .. })));
    let resume: Check = |e| matches!(e, CliError::Resume { .. });
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let typo = file("typo.json", r#"{"model": {"hiden": 64}}"#);
    let huge_input = file("huge.json", r#"{"input_size": 16384}"#);
    let not_json = file("garbage.json", "this is not JSON");
    let seed = |v: &str| parse_whole("--seed", v, u64::MAX).map(|_| ());
    let epochs = |v: &str| parse_whole("--epochs", v, usize::MAX as u64).map(|_| ());
    let choice = |c: ConfigChoice| c.build().map(|_| ());
    let cases: Vec<(&str, pnpt_cli::Result<()>, Check)> = vec![
        ("--seed 2^70", seed("1180591620717411303424"), out_of_range),
        ("--seed u64::MAX + 1", seed("18446744073709551616"), out_of_range),
        ("--seed -1", seed("-1"), not_a_number),
        ("--seed abc", seed("abc"), not_a_number),
        ("--epochs 1.5", epochs("1.5"), not_a_number),
        ("--epochs ''", epochs(""), not_a_number),
        ("--epochs 99999999999999999999999", epochs("99999999999999999999999"), out_of_range),
        ("--categories ''", parse_categories("").map(|_| ()), empty_list),
        ("--categories ' , ,'", parse_categories(" , ,").map(|_| ()), empty_list),
        ("--time-budget soon", parse_duration("soon").map(|_| ()), config),
        ("--time-budget -5m", parse_duration("-5m").map(|_| ()), config),
        ("--time-budget 0", parse_duration("0").map(|_| ()), config),
        ("--epochs 0", choice(ConfigChoice { epochs: Some(0), ..Default::default() }), config),
        ("--preset nope", choice(ConfigChoice { preset: "nope".into(), ..Default::default() }), config),
        (
            "--config with a misspelled field",
            choice(ConfigChoice { file: Some(typo), ..Default::default() }),
            config_file,
        ),
        ("--config that is not JSON", choice(ConfigChoice { file: Some(not_json), ..Default::default() }), config_file),
        (
            "--config missing",
            choice(ConfigChoice { file: Some(dir.path().join("none.json")), ..Default::default() }),
            io,
        ),
        ("\"input_size\": 16384", choice(ConfigChoice { file: Some(huge_input), ..Default::default() }), config_file),
        (
            "--resume A --out B",
            resume_folder(Some(&dir.path().join("a")), Some(&dir.path().join("b"))).map(|_| ()),
            resume,
        ),
    ];
    for (case, result, expect) in cases {
        match result {
            Err(e) => assert!(expect(&e), "{case}: {e:?}"),
            Ok(()) => panic!("{case}: accepted"),
        }
    }
    // The good forms still work: the rule is not "refuse everything".
    assert_eq!(parse_whole("--seed", &u64::MAX.to_string(), u64::MAX).unwrap(), u64::MAX);
    assert_eq!(parse_categories(" a, ,b ").unwrap(), ["a", "b"]);
    let same = dir.path().join("run");
    std::fs::create_dir(&same).unwrap();
    let (out, resume) = resume_folder(Some(&same), Some(&dir.path().join("run/../run/."))).unwrap();
    assert_eq!((out, resume), (same.clone(), true), "the same folder spelled differently");
    assert_eq!(resume_folder(None, None).unwrap(), (PathBuf::from("pnpt-out"), false));
}

#[test]
fn job_refuses_bad_data_and_folders_before_training() {
    let base = tempfile::tempdir().unwrap();
    let good = base.path().join("good");
    tiny_data(&good);
    type Break = fn(&Path);
    type Check = fn(&CliError) -> bool;
    let cases: Vec<(&str, Break, Check)> = vec![
        (
            "truncated training image",
            |r| truncate(&r.join("bottle/train/good/003.png")),
            |e| matches!(e.library(), Some(Error::Data(DataError::Corrupt { .. }))),
        ),
        (
            "truncated test image",
            |r| truncate(&first_png(&r.join("bottle/test/good"))),
            |e| matches!(e.library(), Some(Error::Data(DataError::Corrupt { .. }))),
        ),
        (
            "zero-byte mask",
            |r| std::fs::write(first_png(&r.join("bottle/ground_truth").join(defect_of(r))), b"").unwrap(),
            |e| matches!(e.library(), Some(Error::Data(DataError::EmptyFile { .. }))),
        ),
        (
            "mask deleted",
            |r| std::fs::remove_file(first_png(&r.join("bottle/ground_truth").join(defect_of(r)))).unwrap(),
            |e| matches!(e.library(), Some(Error::Data(DataError::MissingMask { .. }))),
        ),
        (
            "mask of another size",
            |r| {
                let m = first_png(&r.join("bottle/ground_truth").join(defect_of(r)));
                pnpt::data::image::GrayImage::new(8, 8).save(&m).unwrap();
            },
            |e| matches!(e.library(), Some(Error::Data(DataError::MaskSizeMismatch { .. }))),
        ),
        (
            "000.png beside 000.bmp",
            |r| {
                pnpt::data::image::RgbImage::new(32, 32).save(r.join("bottle/train/good/000.bmp")).unwrap();
            },
            |e| matches!(e.library(), Some(Error::Data(DataError::NameCollision { .. }))),
        ),
        (
            "FIFO in train/good",
            |r| {
                let ok = std::process::Command::new("mkfifo")
                    .arg(r.join("bottle/train/good/fifo.png"))
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                assert!(ok, "mkfifo");
            },
            |e| matches!(e.library(), Some(Error::Data(DataError::Io { .. }))),
        ),
        (
            "dangling symlink in train/good",
            |r| std::os::unix::fs::symlink(r.join("gone.png"), r.join("bottle/train/good/link.png")).unwrap(),
            |e| matches!(e.library(), Some(Error::Data(DataError::Io { .. }))),
        ),
        (
            "two problems at once",
            |r| {
                truncate(&r.join("bottle/train/good/001.png"));
                std::fs::write(r.join("bottle/train/good/002.png"), b"").unwrap();
            },
            |e| matches!(e.library(), Some(Error::Data(DataError::Problems { problems, .. })) if problems.len() == 2),
        ),
        (
            "no training images",
            |r| {
                for p in files_under(&r.join("bottle/train/good")) {
                    std::fs::remove_file(p).unwrap();
                }
            },
            |e| matches!(e.library(), Some(Error::Data(DataError::NoTrainImages { .. }))),
        ),
        (
            "no test folder",
            |r| std::fs::remove_dir_all(r.join("bottle/test")).unwrap(),
            |e| matches!(e.library(), Some(Error::Data(DataError::MissingSplit { .. }))),
        ),
        (
            "category folder name not UTF-8",
            |r| {
                let bad = r.join(OsStr::from_bytes(b"bad\xffname"));
                std::fs::create_dir_all(bad.join("train/good")).unwrap();
                std::fs::create_dir_all(bad.join("test/good")).unwrap();
            },
            |e| matches!(e.library(), Some(Error::Data(DataError::NonUtf8Name { .. }))),
        ),
        (
            "defect folder name not UTF-8",
            |r| {
                let bad = r.join("bottle/test").join(OsStr::from_bytes(b"scratch\xfe"));
                std::fs::create_dir_all(&bad).unwrap();
                std::fs::copy(r.join("bottle/train/good/000.png"), bad.join("000.png")).unwrap();
            },
            |e| matches!(e.library(), Some(Error::Data(DataError::NonUtf8Name { .. }))),
        ),
    ];
    for (case, break_it, expect) in cases {
        let d = tempfile::tempdir().unwrap();
        copy_dir(&good, d.path());
        break_it(d.path());
        let err = tiny_job_error(d.path(), tiny_config(1), case);
        assert!(expect(&err), "{case}: {err:?}");
    }

    // Folders and options.
    let err = tiny_job_error(&base.path().join("nowhere"), tiny_config(1), "missing --data");
    assert!(matches!(err.library(), Some(Error::Data(DataError::MissingRoot { .. }))), "{err:?}");
    let mut o = job(&good, &base.path().join("o1"), tiny_config(1));
    o.categories = Some(vec!["carpet".into()]);
    assert!(matches!(run_job(o), Err(CliError::Pnpt(Error::Data(DataError::UnknownCategory { .. })))));
    assert_nothing_written(&base.path().join("o1"), "unknown category");
    let file = base.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(run_job(job(&good, &file, tiny_config(1))), Err(CliError::Output { .. })), "--out is a file");
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "the file is left alone");
    // Not writable even for root: the kernel's own folder.
    assert!(
        matches!(run_job(job(&good, Path::new("/proc/pnpt-bad-out"), tiny_config(1))), Err(CliError::Output { .. })),
        "--out not creatable"
    );
    // --resume of a folder without a checkpoint, and of a misspelled one: refused, and the
    // misspelled folder is not created.
    let empty = base.path().join("empty-run");
    std::fs::create_dir(&empty).unwrap();
    for (case, dir) in [
        ("--resume without checkpoint", empty.clone()),
        ("--resume of a misspelled folder", base.path().join("emtpy-run")),
    ] {
        let o = job(&good, &dir, tiny_config(1)).with_kind(JobKind::Train { resume: true });
        assert!(matches!(run_job(o), Err(CliError::Resume { .. })), "{case}");
        assert_nothing_written(&dir, case);
    }
    assert!(!base.path().join("emtpy-run").exists(), "a misspelled --resume folder is not created");
    // A configuration that cannot fit in memory is refused before anything is allocated.
    let mut wide = tiny_config(1);
    wide.model.hidden = 65536;
    let err = tiny_job_error(&good, wide, "\"hidden\": 65536");
    assert!(matches!(err.library(), Some(Error::Model(pnpt::model::Error::OutOfMemory { .. }))), "{err:?}");
    // A detector folder that does not exist, or is not a detector.
    for (case, det) in
        [("--evaluate missing folder", base.path().join("no-detector")), ("--evaluate a data folder", good.clone())]
    {
        let o = job(&good, &base.path().join("o2"), tiny_config(1))
            .with_kind(JobKind::Evaluate { detector: det, rescore: false });
        match run_job(o) {
            Err(CliError::Pnpt(Error::Model(pnpt::model::Error::Io { .. } | pnpt::model::Error::Artefact { .. }))) => {}
            other => panic!("{case}: {:?}", other.map(|_| "evaluated")),
        }
    }
}

/// What used to fail only after training, or never: said before anything is written.
#[test]
fn job_refuses_before_training_what_would_fail_at_the_end() {
    let base = tempfile::tempdir().unwrap();
    let good = base.path().join("good");
    tiny_data(&good);
    // Only normal test images: nothing could be evaluated (it used to train and save first).
    let d = tempfile::tempdir().unwrap();
    copy_dir(&good, d.path());
    for entry in std::fs::read_dir(d.path().join("bottle/test")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name() != Some(OsStr::new("good")) {
            std::fs::remove_dir_all(path).unwrap();
        }
    }
    std::fs::remove_dir_all(d.path().join("bottle/ground_truth")).unwrap();
    let err = tiny_job_error(d.path(), tiny_config(1), "only test/good");
    assert!(matches!(err.library(), Some(Error::NothingToEvaluate)), "{err:?}");
    // One training image: none held out, so no threshold (`"global": null`, every verdict
    // normal).
    let d = tempfile::tempdir().unwrap();
    copy_dir(&good, d.path());
    for p in files_under(&d.path().join("bottle/train/good")) {
        if p.file_name() != Some(OsStr::new("000.png")) {
            std::fs::remove_file(p).unwrap();
        }
    }
    let err = tiny_job_error(d.path(), tiny_config(1), "one training image");
    assert!(matches!(err.library(), Some(Error::Validation(m)) if m.contains("at least 2")), "{err:?}");
}

/// The job records the data in its checkpoint: resuming it on other data, or asking for fewer
/// epochs than done, is refused, and the checkpoint is left as it was.
#[test]
fn job_resume_checks_the_data_and_the_epochs() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    tiny_data(&data);
    let out = base.path().join("run");
    let t0 = std::time::Instant::now();
    run_job(job(&data, &out, tiny_config(2))).unwrap();
    eprintln!("tiny job: {:.1} s", t0.elapsed().as_secs_f64());
    let ckpt = out.join("checkpoint").join(CHECKPOINT_FILE);
    let saved = std::fs::read(&ckpt).unwrap();
    let resume =
        |epochs: usize| run_job(job(&data, &out, tiny_config(epochs)).with_kind(JobKind::Train { resume: true }));
    std::fs::copy(data.join("bottle/train/good/000.png"), data.join("bottle/train/good/100.png")).unwrap();
    match resume(3) {
        Err(CliError::Pnpt(Error::Model(pnpt::model::Error::DatasetChanged { differences, .. }))) => {
            assert_eq!(differences, ["bottle/train/good/100.png added"])
        }
        other => panic!("resume on other data: {:?}", other.map(|_| "resumed")),
    }
    std::fs::remove_file(data.join("bottle/train/good/100.png")).unwrap();
    assert!(matches!(
        resume(1),
        Err(CliError::Pnpt(Error::Model(pnpt::model::Error::EpochsTooFew { requested: 1, done: 2, .. })))
    ));
    assert_eq!(std::fs::read(&ckpt).unwrap(), saved, "refused resumes leave the checkpoint as it was");
    let tmp: Vec<PathBuf> = files_under(&out).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(tmp.is_empty(), "{tmp:?}");

    // The finished run is not replaced without a word: a new job into its folder is refused
    // before anything runs, its report and checkpoint untouched.
    let report = std::fs::read(out.join("report.json")).unwrap();
    assert!(matches!(run_job(job(&data, &out, tiny_config(2))), Err(CliError::Output { .. })));
    assert_eq!(std::fs::read(out.join("report.json")).unwrap(), report);
    assert_eq!(std::fs::read(&ckpt).unwrap(), saved);

    // A test image whose name is not UTF-8: evaluated, its path written with U+FFFD, its heat
    // map under its exact name and linked by it (report.json used to be `null`).
    let odd = OsStr::from_bytes(b"\xff.png");
    std::fs::copy(first_png(&data.join("bottle/test/good")), data.join("bottle/test/good").join(odd)).unwrap();
    let eval_out = base.path().join("eval");
    let evaluate = |overwrite: bool| {
        let mut o = job(&data, &eval_out, tiny_config(2))
            .with_kind(JobKind::Evaluate { detector: out.join("detector"), rescore: false })
            .with_overwrite(overwrite);
        o.heatmaps = true;
        run_job(o)
    };
    evaluate(false).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(eval_out.join("report.json")).unwrap()).unwrap();
    let results = json["images"]["bottle"]["results"].as_array().unwrap();
    let r = results.iter().find(|r| r["path"].as_str().unwrap().ends_with("good/\u{fffd}.png")).unwrap();
    assert_eq!(r["heatmap"], "heatmaps/bottle/good_\u{fffd}.png");
    assert!(r["score"].is_number());
    assert!(eval_out.join("heatmaps/bottle").join(OsStr::from_bytes(b"good_\xff.png")).is_file());
    let html = std::fs::read_to_string(eval_out.join("report.html")).unwrap();
    assert!(html.contains("heatmaps/bottle/good_%FF.png"), "report.html does not link the heat map");
    // Evaluating into that folder again needs --overwrite.
    assert!(matches!(evaluate(false), Err(CliError::Output { .. })));
    evaluate(true).unwrap();
}

fn truncate(p: &Path) {
    let b = std::fs::read(p).unwrap();
    std::fs::write(p, &b[..b.len() / 2]).unwrap();
}

fn first_png(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> =
        files_under(dir).into_iter().filter(|p| p.extension() == Some(OsStr::new("png"))).collect();
    v.sort();
    v.remove(0)
}

/// The first defect type of the synthetic bottle.
fn defect_of(root: &Path) -> String {
    let mut d: Vec<String> = std::fs::read_dir(root.join("bottle/ground_truth"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    d.sort();
    d.remove(0)
}

#[test]
fn non_utf8_file_names_find_their_masks_and_heat_maps() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    let img = |p: &Path, v: u8| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        pnpt::data::image::RgbImage::from_pixel(8, 8, pnpt::data::image::Rgb([v, v, v]))
            .save_with_format(p, pnpt::data::image::ImageFormat::Png)
            .unwrap();
    };
    let mask = |p: &Path, on: u32| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        pnpt::data::image::GrayImage::from_fn(8, 8, |x, _| pnpt::data::image::Luma([if x == on { 255 } else { 0 }]))
            .save_with_format(p, pnpt::data::image::ImageFormat::Png)
            .unwrap();
    };
    img(&r.join("c/train/good/000.png"), 10);
    img(&r.join("c/test/good/000.png"), 10);
    // Two names that a lossy conversion would both turn into "\u{FFFD}": they must keep their
    // own masks and their own heat maps.
    let (ff, fe) = (OsStr::from_bytes(b"\xff.png"), OsStr::from_bytes(b"\xfe.png"));
    img(&r.join("c/test/crack").join(ff), 200);
    img(&r.join("c/test/crack").join(fe), 100);
    mask(&r.join("c/ground_truth/crack").join(OsStr::from_bytes(b"\xff_mask.png")), 1);
    mask(&r.join("c/ground_truth/crack").join(OsStr::from_bytes(b"\xfe_mask.png")), 6);
    let ds = Dataset::open(r, None).unwrap();
    ds.check().unwrap();
    let test = &ds.categories[0].test;
    let by_name = |n: &OsStr| test.iter().find(|s| s.path.file_name() == Some(n)).unwrap().clone();
    let (a, b): (Sample, Sample) = (by_name(ff), by_name(fe));
    assert_eq!(a.masks, [r.join("c/ground_truth/crack").join(OsStr::from_bytes(b"\xff_mask.png"))]);
    assert_eq!(b.masks, [r.join("c/ground_truth/crack").join(OsStr::from_bytes(b"\xfe_mask.png"))]);
    assert_eq!(a.file_stem().as_bytes(), b"\xff");
    let masks = pnpt::data::load_masks(&[a.clone(), b.clone()], 8).unwrap();
    assert_eq!((masks[1], masks[64 + 6]), (1, 1), "each image has its own mask");
    assert_eq!((masks[6], masks[64 + 1]), (0, 0));

    // Heat maps: one file per image, under its exact name.
    let out = tempfile::tempdir().unwrap();
    let maps = vec![0.5f32; 2 * 64];
    let scale = pnpt::heatmap::ColourScale::for_category(&maps, Some(0.4), None);
    pnpt::heatmap::write_category(out.path(), "c", &[a.clone(), b.clone()], &maps, &masks, 8, &scale).unwrap();
    let dir = out.path().join("heatmaps/c");
    let mut names: Vec<Vec<u8>> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().as_bytes().to_vec()).collect();
    names.sort();
    assert_eq!(names, [b"crack_\xfe.png".to_vec(), b"crack_\xff.png".to_vec()]);
    assert_eq!(out.path().join(pnpt::heatmap::relative_file("c", &a)), dir.join(OsStr::from_bytes(b"crack_\xff.png")));
}
