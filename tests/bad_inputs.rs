//! The bad-input suite of the job (README, "Reliability"): each case is one wrong argument, file,
//! folder or checkpoint, and asserts the typed error *variant* it must produce (never the
//! message text), that nothing panicked, and that no half-written file was left under a final
//! name. Tiny configurations and 32-pixel images keep the whole file within seconds of CPU,
//! but for the one real job it trains (about 10 s).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use pnpt::Error;
use pnpt::backend::Cpu;
use pnpt::data::fingerprint::Fingerprint;
use pnpt::data::synthetic::{SynthKind, SyntheticConfig, generate};
use pnpt::data::{DataError, Dataset, Sample};
use pnpt::job::{ConfigChoice, JobOptions, parse_categories, parse_duration, parse_whole, resume_folder, run_job};
use pnpt::model::PnptConfig;
use pnpt::model::train::{CHECKPOINT_FILE, FeatureSet, TrainOptions, train_model};
use pnpt::prompt::PoolBuilder;

type A = Autodiff<Cpu>;
type B = Cpu;

/// A model small enough to train in a blink (as `tests/train_resume.rs`).
fn tiny_config(epochs: usize) -> PnptConfig {
    let mut cfg = PnptConfig::cpu();
    cfg.preset = "test".into();
    cfg.input_size = 32;
    cfg.model.hidden = 32;
    cfg.model.semantic_tokens = 4;
    cfg.model.heads = 4;
    cfg.model.layers = 1;
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 4;
    cfg
}

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

fn tiny_job_error(data: &Path, config: PnptConfig, case: &str) -> Error {
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
    type Check = fn(&Error) -> bool;
    let out_of_range: Check = |e| matches!(e, Error::OutOfRange { .. });
    let not_a_number: Check = |e| matches!(e, Error::NotANumber { .. });
    let empty_list: Check = |e| matches!(e, Error::EmptyList { .. });
    let config: Check = |e| matches!(e, Error::Model(pnpt::model::Error::Config(_)));
    let config_file: Check = |e| matches!(e, Error::Model(pnpt::model::Error::ConfigFile { .. }));
    let io: Check = |e| matches!(e, Error::Model(pnpt::model::Error::Io { .. }));
    let resume: Check = |e| matches!(e, Error::Resume { .. });
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
    let cases: Vec<(&str, pnpt::Result<()>, Check)> = vec![
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
    type Check = fn(&Error) -> bool;
    let cases: Vec<(&str, Break, Check)> = vec![
        (
            "truncated training image",
            |r| truncate(&r.join("bottle/train/good/003.png")),
            |e| matches!(e, Error::Data(DataError::Corrupt { .. })),
        ),
        (
            "truncated test image",
            |r| truncate(&first_png(&r.join("bottle/test/good"))),
            |e| matches!(e, Error::Data(DataError::Corrupt { .. })),
        ),
        (
            "zero-byte mask",
            |r| std::fs::write(first_png(&r.join("bottle/ground_truth").join(defect_of(r))), b"").unwrap(),
            |e| matches!(e, Error::Data(DataError::EmptyFile { .. })),
        ),
        (
            "mask deleted",
            |r| std::fs::remove_file(first_png(&r.join("bottle/ground_truth").join(defect_of(r)))).unwrap(),
            |e| matches!(e, Error::Data(DataError::MissingMask { .. })),
        ),
        (
            "mask of another size",
            |r| {
                let m = first_png(&r.join("bottle/ground_truth").join(defect_of(r)));
                pnpt::data::image::GrayImage::new(8, 8).save(&m).unwrap();
            },
            |e| matches!(e, Error::Data(DataError::MaskSizeMismatch { .. })),
        ),
        (
            "000.png beside 000.bmp",
            |r| {
                pnpt::data::image::RgbImage::new(32, 32).save(r.join("bottle/train/good/000.bmp")).unwrap();
            },
            |e| matches!(e, Error::Data(DataError::NameCollision { .. })),
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
            |e| matches!(e, Error::Data(DataError::Io { .. })),
        ),
        (
            "dangling symlink in train/good",
            |r| std::os::unix::fs::symlink(r.join("gone.png"), r.join("bottle/train/good/link.png")).unwrap(),
            |e| matches!(e, Error::Data(DataError::Io { .. })),
        ),
        (
            "two problems at once",
            |r| {
                truncate(&r.join("bottle/train/good/001.png"));
                std::fs::write(r.join("bottle/train/good/002.png"), b"").unwrap();
            },
            |e| matches!(e, Error::Data(DataError::Problems { problems, .. }) if problems.len() == 2),
        ),
        (
            "no training images",
            |r| {
                for p in files_under(&r.join("bottle/train/good")) {
                    std::fs::remove_file(p).unwrap();
                }
            },
            |e| matches!(e, Error::Data(DataError::NoTrainImages { .. })),
        ),
        (
            "no test folder",
            |r| std::fs::remove_dir_all(r.join("bottle/test")).unwrap(),
            |e| matches!(e, Error::Data(DataError::MissingSplit { .. })),
        ),
        (
            "category folder name not UTF-8",
            |r| {
                let bad = r.join(OsStr::from_bytes(b"bad\xffname"));
                std::fs::create_dir_all(bad.join("train/good")).unwrap();
                std::fs::create_dir_all(bad.join("test/good")).unwrap();
            },
            |e| matches!(e, Error::Data(DataError::NonUtf8Name { .. })),
        ),
        (
            "defect folder name not UTF-8",
            |r| {
                let bad = r.join("bottle/test").join(OsStr::from_bytes(b"scratch\xfe"));
                std::fs::create_dir_all(&bad).unwrap();
                std::fs::copy(r.join("bottle/train/good/000.png"), bad.join("000.png")).unwrap();
            },
            |e| matches!(e, Error::Data(DataError::NonUtf8Name { .. })),
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
    assert!(matches!(err, Error::Data(DataError::MissingRoot { .. })), "{err:?}");
    let mut o = job(&good, &base.path().join("o1"), tiny_config(1));
    o.categories = Some(vec!["carpet".into()]);
    assert!(matches!(run_job(o), Err(Error::Data(DataError::UnknownCategory { .. }))));
    assert_nothing_written(&base.path().join("o1"), "unknown category");
    let file = base.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(run_job(job(&good, &file, tiny_config(1))), Err(Error::Output { .. })), "--out is a file");
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "the file is left alone");
    // Not writable even for root: the kernel's own folder.
    assert!(
        matches!(run_job(job(&good, Path::new("/proc/pnpt-bad-out"), tiny_config(1))), Err(Error::Output { .. })),
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
        let mut o = job(&good, &dir, tiny_config(1));
        o.resume = true;
        assert!(matches!(run_job(o), Err(Error::Resume { .. })), "{case}");
        assert_nothing_written(&dir, case);
    }
    assert!(!base.path().join("emtpy-run").exists(), "a misspelled --resume folder is not created");
    // A configuration that cannot fit in memory is refused before anything is allocated.
    let mut wide = tiny_config(1);
    wide.model.hidden = 65536;
    let err = tiny_job_error(&good, wide, "\"hidden\": 65536");
    assert!(matches!(err, Error::Model(pnpt::model::Error::OutOfMemory { .. })), "{err:?}");
    // A detector folder that does not exist, or is not a detector.
    for (case, det) in
        [("--evaluate missing folder", base.path().join("no-detector")), ("--evaluate a data folder", good.clone())]
    {
        let mut o = job(&good, &base.path().join("o2"), tiny_config(1));
        o.evaluate = Some(det);
        match run_job(o) {
            Err(Error::Model(pnpt::model::Error::Io { .. } | pnpt::model::Error::Artefact { .. })) => {}
            other => panic!("{case}: {:?}", other.map(|_| "evaluated")),
        }
    }
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
    let resume = |epochs: usize| {
        let mut o = job(&data, &out, tiny_config(epochs));
        o.resume = true;
        run_job(o)
    };
    std::fs::copy(data.join("bottle/train/good/000.png"), data.join("bottle/train/good/100.png")).unwrap();
    match resume(3) {
        Err(Error::Model(pnpt::model::Error::DatasetChanged { differences, .. })) => {
            assert_eq!(differences, ["bottle/train/good/100.png added"])
        }
        other => panic!("resume on other data: {:?}", other.map(|_| "resumed")),
    }
    std::fs::remove_file(data.join("bottle/train/good/100.png")).unwrap();
    assert!(matches!(resume(1), Err(Error::Model(pnpt::model::Error::EpochsTooFew { requested: 1, done: 2, .. }))));
    assert_eq!(std::fs::read(&ckpt).unwrap(), saved, "refused resumes leave the checkpoint as it was");
    let tmp: Vec<PathBuf> = files_under(&out).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(tmp.is_empty(), "{tmp:?}");
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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Deterministic features for [`train_model`] (as `tests/train_resume.rs`).
fn feature_set(cfg: &PnptConfig, n: usize) -> (FeatureSet<B>, pnpt::prompt::PromptPool<B>) {
    let spec = cfg.feature_spec();
    let device = Default::default();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let feats = [0, 1, 2].map(|i| {
        let [h, w] = spec.sizes[i];
        let shape = [n, spec.channels[i], h, w];
        let v: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::<B, 4>::from_data(TensorData::new(v, shape), &device)
    });
    let half = n / 2;
    let categories: Vec<String> = (0..n).map(|i| if i < half { "a".into() } else { "b".into() }).collect();
    let mut builder = PoolBuilder::<B>::new();
    builder.add("a", &feats.clone().map(|t| t.narrow(0, 0, half))).unwrap();
    builder.add("b", &feats.clone().map(|t| t.narrow(0, half, n - half))).unwrap();
    let pool = builder.build(cfg.distance).unwrap();
    let prior_index = pool.nearest(&feats).unwrap().0;
    (FeatureSet { feats, categories, prior_index }, pool)
}

/// A small MVTec-layout folder for fingerprints: categories `a` and `b`, three images each.
fn print_data(root: &Path) {
    for c in ["a", "b"] {
        for i in 0..3 {
            let p = root.join(c).join(format!("train/good/{i:03}.png"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            pnpt::data::image::RgbImage::from_pixel(8, 8, pnpt::data::image::Rgb([i as u8 * 40, 10, 200]))
                .save(&p)
                .unwrap();
        }
        std::fs::create_dir_all(root.join(c).join("test/good")).unwrap();
    }
}

fn print_of(root: &Path) -> Fingerprint {
    Fingerprint::of(&Dataset::open(root, None).unwrap()).unwrap()
}

#[test]
fn resume_refuses_other_data_fewer_epochs_and_damaged_checkpoints() {
    let cfg = tiny_config(2);
    let (set, pool) = feature_set(&cfg, 8);
    let device = Default::default();
    let data = tempfile::tempdir().unwrap();
    print_data(data.path());
    let saved = print_of(data.path());
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join(CHECKPOINT_FILE);
    let first = TrainOptions::default()
        .with_checkpoint_dir(Some(dir.path().to_path_buf()))
        .with_stop_after_epoch(Some(1))
        .with_dataset(Some(saved.clone()));
    train_model::<A>(&cfg, &set, &pool, &device, &first).unwrap();
    let good_ckpt = std::fs::read(&ckpt).unwrap();
    let resume = |c: &PnptConfig, print: Option<Fingerprint>| {
        let o = TrainOptions::default()
            .with_checkpoint_dir(Some(dir.path().to_path_buf()))
            .with_resume(true)
            .with_dataset(print);
        train_model::<A>(c, &set, &pool, &device, &o)
    };

    // Other data: each change is named.
    type Change = fn(&Path);
    let changes: Vec<(&str, Change, &str)> = vec![
        (
            "category added",
            |r| {
                std::fs::create_dir_all(r.join("c/train/good")).unwrap();
                std::fs::copy(r.join("a/train/good/000.png"), r.join("c/train/good/000.png")).unwrap();
                std::fs::create_dir_all(r.join("c/test/good")).unwrap();
            },
            "category c added",
        ),
        ("category removed", |r| std::fs::remove_dir_all(r.join("b")).unwrap(), "category b removed"),
        (
            "training image added",
            |r| {
                std::fs::copy(r.join("a/train/good/000.png"), r.join("a/train/good/009.png")).unwrap();
            },
            "a/train/good/009.png added",
        ),
        (
            "training image removed",
            |r| std::fs::remove_file(r.join("b/train/good/002.png")).unwrap(),
            "b/train/good/002.png removed",
        ),
        (
            "training image changed size",
            |r| {
                pnpt::data::image::RgbImage::new(16, 16).save(r.join("a/train/good/001.png")).unwrap();
            },
            "a/train/good/001.png changed size",
        ),
        (
            "training image changed content, same size",
            |r| {
                let p = r.join("a/train/good/002.png");
                let mut b = std::fs::read(&p).unwrap();
                let at = b.len() - 5; // inside the IEND chunk's CRC: same size, other bytes
                b[at] ^= 0xff;
                std::fs::write(&p, b).unwrap();
            },
            "a/train/good/002.png changed content",
        ),
    ];
    for (case, change, named) in changes {
        let d = tempfile::tempdir().unwrap();
        copy_dir(data.path(), d.path());
        change(d.path());
        // Fingerprint::of reads bytes only, so a file that no longer decodes still counts.
        match resume(&cfg, Some(print_of(d.path()))) {
            Err(pnpt::model::Error::DatasetChanged { path, differences }) => {
                assert_eq!(path, ckpt, "{case}");
                assert!(differences.len() == 1 && differences[0].starts_with(named), "{case}: {differences:?}");
            }
            other => panic!("{case}: {:?}", other.map(|o| o.history.len())),
        }
        assert_eq!(std::fs::read(&ckpt).unwrap(), good_ckpt, "{case}: the checkpoint is untouched");
    }

    // Fewer epochs than done: typed error (1 done, so ask a fresh 2-epoch checkpoint for 1).
    let two =
        TrainOptions::default().with_checkpoint_dir(Some(dir.path().to_path_buf())).with_dataset(Some(saved.clone()));
    let full = train_model::<A>(&cfg, &set, &pool, &device, &two).unwrap();
    assert_eq!(full.history.len(), 2);
    let done_two = std::fs::read(&ckpt).unwrap();
    match resume(&tiny_config(1), Some(saved.clone())) {
        Err(pnpt::model::Error::EpochsTooFew { requested: 1, done: 2, .. }) => {}
        other => panic!("--epochs 1 after 2: {:?}", other.map(|o| o.history.len())),
    }
    // Another seed or architecture: Mismatch.
    let mut seeded = cfg.clone();
    seeded.train.seed += 1;
    let mut wider = cfg.clone();
    wider.model.hidden = 64;
    for (case, c) in [("other seed", seeded), ("other hidden size", wider)] {
        assert!(matches!(resume(&c, Some(saved.clone())), Err(pnpt::model::Error::Mismatch { .. })), "{case}");
    }
    assert_eq!(std::fs::read(&ckpt).unwrap(), done_two, "refused resumes write nothing");
    // A larger --epochs extends the run to it.
    let extended = resume(&tiny_config(3), Some(saved.clone())).unwrap();
    assert_eq!(extended.history.iter().map(|e| e.epoch).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(extended.completed && extended.planned_epochs == 3);

    // A checkpoint written before fingerprints existed (no `dataset` in its header) resumes.
    let file = pnpt::prompt::tensor_file::TensorFile::read(&ckpt, "training_checkpoint").unwrap();
    let header: serde_json::Value = file.header().unwrap();
    let mut old = header.clone();
    old.as_object_mut().unwrap().remove("dataset");
    assert!(header.get("dataset").is_some_and(|d| d.is_object()), "the fingerprint is in the header");
    pnpt::prompt::tensor_file::write(&ckpt, "training_checkpoint", &old, &file.entries()).unwrap();
    assert!(resume(&tiny_config(3), Some(saved.clone())).unwrap().completed, "legacy checkpoint");

    // Damaged or foreign checkpoints: checksum or format errors, never a resumed run.
    let bytes = std::fs::read(&ckpt).unwrap();
    type Damage = fn(&[u8]) -> Vec<u8>;
    let damages: Vec<(&str, Damage)> = vec![
        ("truncated checkpoint", |b| b[..b.len() / 2].to_vec()),
        ("zero-byte checkpoint", |_| Vec::new()),
        ("text file as checkpoint", |_| b"not a checkpoint at all".to_vec()),
        ("one flipped bit in the header", |b| {
            let mut v = b.to_vec();
            v[20] ^= 1;
            v
        }),
        ("last byte (the digest) flipped", |b| {
            let mut v = b.to_vec();
            let n = v.len() - 1;
            v[n] ^= 0x80;
            v
        }),
        ("another container's magic", |b| {
            let mut v = b.to_vec();
            v[..8].copy_from_slice(b"PNPTPOOL");
            v
        }),
    ];
    for (case, damage) in damages {
        std::fs::write(&ckpt, damage(&bytes)).unwrap();
        match resume(&tiny_config(3), Some(saved.clone())) {
            Err(pnpt::model::Error::Prompt(
                pnpt::prompt::Error::Checksum { path, .. } | pnpt::prompt::Error::Format { path, .. },
            )) => assert_eq!(path, ckpt, "{case}"),
            other => panic!("{case}: {:?}", other.map(|o| o.history.len())),
        }
    }
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
