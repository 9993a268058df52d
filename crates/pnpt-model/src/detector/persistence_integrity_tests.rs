//! Every change to a saved detector folder is refused, and the error names the file that
//! changed: every bit of the manifest and of its checksum file, bytes of every position class
//! of every other file, files cut short, grown, removed or added, and the manifest's format
//! edited to turn the checks off (with its checksum file rewritten to match, or removed).

use std::path::{Path, PathBuf};

use super::tests::{B, same, set_manifest, tiny};
use super::*;

fn load(dir: &Path) -> Result<Detector<B>> {
    Detector::<B>::load(dir, &Default::default())
}

/// The file a refusal names.
fn named(e: &Error) -> Option<PathBuf> {
    match e {
        Error::File(
            pnpt_io::Error::Checksum { path, .. }
            | pnpt_io::Error::Sidecar { path, .. }
            | pnpt_io::Error::Io { path, .. },
        )
        | Error::Mismatch { path, .. }
        | Error::Artefact { path, .. } => Some(path.clone()),
        _ => None,
    }
}

fn assert_refused(dir: &Path, file: &Path, what: &str) {
    match load(dir) {
        Ok(_) => panic!("{what}: the detector loaded"),
        Err(e) => assert_eq!(named(&e).as_deref(), Some(file), "{what}: {e}"),
    }
}

fn saved() -> (tempfile::TempDir, PathBuf, Detector<B>) {
    let detector = tiny();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("detector");
    detector.save(&dir).unwrap();
    (parent, dir, detector)
}

#[test]
fn every_bit_of_the_manifest_and_of_its_checksum_file() {
    let (_parent, dir, detector) = saved();
    for name in [files::MANIFEST, files::MANIFEST_CHECKSUM] {
        let path = dir.join(name);
        let good = std::fs::read(&path).unwrap();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &bad).unwrap();
            assert_refused(&dir, &path, &format!("bit {bit} of {name}"));
        }
        std::fs::write(&path, &good).unwrap();
    }
    same(&load(&dir).unwrap(), &detector);
}

#[test]
fn every_position_class_of_every_other_file() {
    let (_parent, dir, detector) = saved();
    let names = [files::MODEL, files::POOL, files::MEMORY, files::THRESHOLDS, files::CONFIG, files::NORMALIZATION];
    for name in names {
        let path = dir.join(name);
        let good = std::fs::read(&path).unwrap();
        let n = good.len();
        // First and last bytes, a safetensors file's header length (0..8) and header (8..),
        // the tensor data (from the middle on); JSON's braces, keys and numbers likewise.
        let mut positions = vec![0, 1, 7, 8, 9, 16, n / 4, n / 2, 3 * n / 4, n - 2, n - 1];
        positions.retain(|&p| p < n);
        positions.dedup();
        for at in positions {
            for bit in [0, 7] {
                let mut bad = good.clone();
                bad[at] ^= 1 << bit;
                std::fs::write(&path, &bad).unwrap();
                assert_refused(&dir, &path, &format!("{name}: bit {bit} of byte {at}"));
            }
        }
        let mut longer = good.clone();
        longer.push(b'\n');
        for (what, bytes) in [("cut short", &good[..n - 1]), ("grown", &longer[..]), ("emptied", &[][..])] {
            std::fs::write(&path, bytes).unwrap();
            assert_refused(&dir, &path, &format!("{name} {what}"));
        }
        std::fs::remove_file(&path).unwrap();
        assert_refused(&dir, &path, &format!("{name} removed"));
        std::fs::write(&path, &good).unwrap();
    }
    // A file the detector did not have, added: named, not silently used.
    let added = dir.join(files::POSITIONAL);
    pnpt_io::npy::write(&added, &[2, 2, 32, 32], &vec![0.0f32; 2 * 2 * 32 * 32]).unwrap();
    assert_refused(&dir, &added, "positional.npy added");
    std::fs::remove_file(&added).unwrap();
    same(&load(&dir).unwrap(), &detector);
}

#[test]
fn the_manifest_cannot_turn_the_checks_off() {
    let (parent, dir, detector) = saved();
    let manifest_path = dir.join(files::MANIFEST);
    let sidecar = dir.join(files::MANIFEST_CHECKSUM);
    let (manifest, sums) = (std::fs::read(&manifest_path).unwrap(), std::fs::read(&sidecar).unwrap());
    let restore = || {
        std::fs::write(&manifest_path, &manifest).unwrap();
        std::fs::write(&sidecar, &sums).unwrap();
    };
    let upgrade_to = |name: &str| upgrade::<B>(&dir, &parent.path().join(name), &Default::default());

    // A character changed inside the manifest's checksum of config.json: the manifest is named,
    // not config.json.
    let text = String::from_utf8(manifest.clone()).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sum = parsed["checksums"][files::CONFIG].as_str().unwrap();
    let at = text.find(sum).unwrap();
    let mut bad = manifest.clone();
    bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&manifest_path, &bad).unwrap();
    assert_refused(&dir, &manifest_path, "a checksum in the manifest");
    restore();

    // The format edited and the checksum file rewritten to match: refused, naming the format,
    // by `load` and by `upgrade` alike.
    for f in 1..FORMAT {
        set_manifest(&dir, |m| m["format"] = f.into());
        let err = load(&dir).err().unwrap().to_string();
        assert!(err.contains(&format!("format {f}")) && err.contains("edited"), "{err}");
        let err = upgrade_to("out").err().unwrap().to_string();
        assert!(err.contains(&format!("format {f}")) && err.contains("edited"), "{err}");
        restore();
    }

    // The checksum file removed: the current format is refused.
    std::fs::remove_file(&sidecar).unwrap();
    for err in [load(&dir).err().unwrap().to_string(), upgrade_to("out").err().unwrap().to_string()] {
        assert!(err.contains(files::MANIFEST_CHECKSUM), "{err}");
    }
    // ... and with the format edited to 5 as well, the folder is one of the previous version:
    // `load` asks for an upgrade, which checks every file's checksum (an edited threshold is
    // refused), then converts it unchanged.
    set_manifest(&dir, |m| m["format"] = 5.into());
    let err = load(&dir).err().unwrap().to_string();
    assert!(err.contains("format 5") && err.contains("pnpt upgrade"), "{err}");
    let thresholds = dir.join(files::THRESHOLDS);
    let good = std::fs::read(&thresholds).unwrap();
    let mut t: serde_json::Value = serde_json::from_slice(&good).unwrap();
    t["global"] = 1e9.into();
    std::fs::write(&thresholds, t.to_string()).unwrap();
    match upgrade_to("out") {
        Err(e) => assert_eq!(named(&e).as_deref(), Some(thresholds.as_path()), "{e}"),
        Ok(_) => panic!("an edited thresholds.json was upgraded"),
    }
    std::fs::write(&thresholds, &good).unwrap();
    assert_eq!(upgrade_to("upgraded").unwrap(), 5);
    same(&load(&parent.path().join("upgraded")).unwrap(), &detector);
    // ... or to 1 or 2, formats without checksums: refused as edited, checksums kept or not.
    for f in [1u32, 2] {
        set_manifest(&dir, |m| m["format"] = f.into());
        let err = upgrade_to("out").err().unwrap().to_string();
        assert!(err.contains(&format!("format {f}")) && err.contains("edited"), "{err}");
        set_manifest(&dir, |m| {
            m.as_object_mut().unwrap().remove("checksums");
        });
        let err = upgrade_to("out").err().unwrap().to_string();
        assert!(err.contains(&format!("format {f}")) && err.contains("edited"), "{err}");
        restore();
        std::fs::remove_file(&sidecar).unwrap();
    }
    assert!(!parent.path().join("out").exists(), "a refused upgrade writes nothing");
}
