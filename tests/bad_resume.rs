//! The resume half of the job's bad-input suite (docs/reliability.md): a checkpoint of other
//! data, fewer epochs than were done, damaged or foreign checkpoint files. Each case asserts
//! the typed error variant and that the checkpoint is left untouched.

mod common;

use std::path::Path;

use burn::backend::Autodiff;
use common::{copy_dir, feature_set, tiny_config};
use pnpt::backend::Cpu;
use pnpt::data::Dataset;
use pnpt::data::fingerprint::Fingerprint;
use pnpt::model::PnptConfig;
use pnpt::model::train::{CHECKPOINT_FILE, TrainOptions, train_transformer};

type A = Autodiff<Cpu>;

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
    train_transformer::<A>(&cfg, &set, &pool, &device, &first, None).unwrap();
    let good_ckpt = std::fs::read(&ckpt).unwrap();
    let resume = |c: &PnptConfig, print: Option<Fingerprint>| {
        let o = TrainOptions::default()
            .with_checkpoint_dir(Some(dir.path().to_path_buf()))
            .with_resume(true)
            .with_dataset(print);
        train_transformer::<A>(c, &set, &pool, &device, &o, None)
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
    let full = train_transformer::<A>(&cfg, &set, &pool, &device, &two, None).unwrap();
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
    let file = pnpt::io::tensor_file::TensorFile::read(&ckpt, "training_checkpoint").unwrap();
    let header: serde_json::Value = file.header().unwrap();
    let mut old = header.clone();
    old.as_object_mut().unwrap().remove("dataset");
    assert!(header.get("dataset").is_some_and(|d| d.is_object()), "the fingerprint is in the header");
    pnpt::io::tensor_file::write(&ckpt, "training_checkpoint", &old, &file.entries()).unwrap();
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
            Err(pnpt::model::Error::File(
                pnpt::io::Error::Checksum { path, .. } | pnpt::io::Error::Format { path, .. },
            )) => assert_eq!(path, ckpt, "{case}"),
            other => panic!("{case}: {:?}", other.map(|o| o.history.len())),
        }
    }
}
