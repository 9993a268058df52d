//! End to end on a tiny synthetic set: train → save → load → predict, and the metrics beat
//! chance clearly. Kept small so it runs in CI on 2 cores.

use burn::backend::Autodiff;
use pnpt::backend::Cpu;
use pnpt::data::Dataset;
use pnpt::evaluate::{EvaluateOptions, evaluate};
use pnpt::model::detector::{Detector, files, upgrade};
use pnpt::model::{Maps, PnptConfig, ScoringMethod, TrainOptions};
use pnpt::synth::synthetic::{SynthKind, SyntheticConfig, generate};
use pnpt::train::train;
use pnpt::validation::ValidationOptions;

type B = Autodiff<Cpu>;

fn tiny_config() -> PnptConfig {
    let mut cfg = PnptConfig::cpu();
    cfg.preset = "test".into();
    cfg.input_size = 128;
    cfg.model.hidden = 64;
    cfg.model.semantic_tokens = 8;
    cfg.model.heads = 4;
    cfg.model.layers = 1;
    cfg.train.epochs = 30;
    cfg.train.lr = 1e-3;
    cfg.scoring.sigma = 2.0;
    cfg
}

#[test]
fn train_save_load_predict_beats_chance() {
    let data = tempfile::tempdir().unwrap();
    let synth = SyntheticConfig {
        size: 128,
        train_good: 40,
        test_good: 12,
        test_defective: 12,
        categories: vec![SynthKind::Bottle, SynthKind::Weave],
        ..Default::default()
    };
    generate(data.path(), &synth).unwrap();
    let dataset = Dataset::open(data.path(), None).unwrap();
    let cfg = tiny_config();
    let device = Default::default();
    let (detector, full) =
        train::<B>(&cfg, &dataset, &device, &TrainOptions::default(), Some(&ValidationOptions::default())).unwrap();
    let report = &full;

    // Validation scored every candidate on pseudo-anomalies of the 8 held-out images and the
    // detector now scores with the best one.
    let v = full.validation.clone().expect("validation ran");
    let defaults = ValidationOptions::default();
    // Every method that uses PNPT's map also with its per-position standardisation, for the
    // image score only and for score and map.
    let grid = (1 + 3 * (1 + defaults.weights.len())) * defaults.score_rules.len();
    let (grid_candidates, extra) = v.candidates.split_at(grid);
    for map in [false, true] {
        assert_eq!(
            grid_candidates.iter().filter(|c| c.rule.positional && c.rule.positional_map == map).count(),
            (1 + defaults.weights.len()) * defaults.score_rules.len()
        );
    }
    assert!(
        grid_candidates.iter().all(|c| c.rule.score_from.is_none() && (c.rule.positional || !c.rule.positional_map))
    );
    // At most one more: the image score of the best at image AUROC with the map of the best at
    // pixel AUROC plus AUPRO, with their metrics.
    assert!(extra.len() <= 1);
    for c in extra {
        let top =
            |key: fn(&pnpt::validation::Candidate) -> f64| grid_candidates.iter().map(key).fold(f64::MIN, f64::max);
        assert_eq!(c.image_auroc, top(|c| c.image_auroc));
        assert_eq!(c.pixel_auroc + c.aupro, top(|c| c.pixel_auroc + c.aupro));
    }
    // The image-score-only form has the pixel metrics of the form without it (same map) and the
    // image AUROC of the form with it (same scores).
    for c in v.candidates.iter().filter(|c| c.rule.positional && !c.rule.positional_map) {
        let twin = |positional, positional_map| {
            v.candidates
                .iter()
                .find(|d| d.rule == pnpt::model::ScoringRule { positional, positional_map, ..c.rule })
                .unwrap()
        };
        let (off, both) = (twin(false, false), twin(true, true));
        assert_eq!((c.pixel_auroc, c.aupro), (off.pixel_auroc, off.aupro));
        assert_eq!(c.image_auroc, both.image_auroc);
    }
    assert!(v.candidates.iter().all(|c| !(c.rule.positional && c.rule.method == ScoringMethod::Memory)));
    assert_eq!((v.normal_images, v.anomalous_images), (8, 8 * ValidationOptions::default().per_image));
    let best = v.best();
    assert!(v.candidates.iter().all(|c| c.objective() <= best.objective()));
    // AUPRO is scored (every category has pseudo-defect regions) and is part of the objective.
    assert!(
        v.candidates.iter().all(|c| c.aupro > 0.0 && c.aupro <= 1.0 && c.categories.values().all(|s| s.aupro > 0.0))
    );
    assert!(
        v.candidates.iter().all(|c| (c.objective() - (c.image_auroc + c.pixel_auroc + c.aupro) / 3.0).abs() < 1e-12)
    );
    let scoring = &detector.config().scoring;
    assert_eq!(scoring.rule(), best.rule);
    // Positional statistics of both classes, one mean and deviation per map position.
    let positional = detector.post().positional();
    assert_eq!(positional.classes.keys().collect::<Vec<_>>(), ["bottle", "weave"]);
    assert!(
        positional
            .classes
            .values()
            .all(|(m, s)| m.len() == 128 * 128 && s.len() == 128 * 128 && s.iter().all(|&x| x >= 0.0))
    );
    eprintln!(
        "validation: {:?}",
        v.candidates
            .iter()
            .map(|c| (c.rule.method, c.rule.memory_weight, c.image_auroc, c.pixel_auroc, c.aupro))
            .collect::<Vec<_>>()
    );
    // One bank per class, 10 % of 36 images × 16 × 16 patches each.
    let memory = detector.model().memory().expect("patch memory");
    assert_eq!(memory.sizes(), vec![922, 922]);

    // The loss falls.
    let losses: Vec<f64> = report.history.iter().map(|e| e.loss).collect();
    eprintln!("losses {losses:?}, {:.1} s training", report.train_seconds);
    assert_eq!(losses.len(), cfg.train.epochs);
    // Validated after every epoch, on the same held-out set as the final choice.
    let per_epoch: Vec<(f64, f64)> =
        report.history.iter().map(|e| e.validation.expect("per-epoch validation")).collect();
    assert!(per_epoch.iter().all(|&(i, p)| (0.0..=1.0).contains(&i) && (0.0..=1.0).contains(&p)));
    // The last epoch's model is the detector's: its entry is the final validation's `pnpt`
    // candidate with the configured image-score rule (same images, same map).
    let last = per_epoch[per_epoch.len() - 1];
    let same = v
        .candidates
        .iter()
        .find(|c| c.rule.method == ScoringMethod::Pnpt && !c.rule.positional && c.rule.score == cfg.scoring.score)
        .unwrap();
    assert!(
        (last.0 - same.image_auroc).abs() < 1e-9 && (last.1 - same.pixel_auroc).abs() < 1e-9,
        "{last:?} vs {same:?}"
    );
    assert!(losses.last().unwrap() < &(0.7 * losses[0]), "loss did not fall enough: {losses:?}");
    // 10 % of 40 normal images per category held out for the thresholds.
    assert_eq!(report.holdout_images, 8);
    assert_eq!(detector.post().thresholds().per_category.len(), 2);

    // Save, load, and the loaded detector gives the same scores.
    let parent = tempfile::tempdir().unwrap();
    let out_dir = parent.path().join("detector");
    detector.save(&out_dir).unwrap();
    // Saving again replaces the folder through a staging copy and leaves nothing else behind.
    std::fs::write(out_dir.join("stale.txt"), b"from an older save").unwrap();
    detector.save(&out_dir).unwrap();
    assert!(!out_dir.join("stale.txt").exists());
    let entries: Vec<_> = std::fs::read_dir(parent.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("detector")]);
    for f in [
        files::CONFIG,
        files::MODEL,
        files::POOL,
        files::THRESHOLDS,
        files::MANIFEST,
        files::MEMORY,
        files::NORMALIZATION,
        files::POSITIONAL,
    ] {
        assert!(out_dir.as_path().join(f).is_file(), "{f} missing");
    }
    let loaded = Detector::<Cpu>::load(out_dir.as_path(), &device).unwrap();
    let sample = &dataset.categories[0].test.iter().find(|s| s.is_anomalous()).unwrap().clone();
    let image = pnpt::data::image::open(&sample.path).unwrap();
    let a = detector.predict(std::slice::from_ref(&image)).unwrap().remove(0);
    let b = loaded.predict(std::slice::from_ref(&image)).unwrap().remove(0);
    assert!((a.score - b.score).abs() < 1e-5, "{} vs {}", a.score, b.score);
    assert_eq!(a.category, b.category);
    assert_eq!(b.anomaly_map.len(), 128 * 128);
    assert_eq!(b.is_anomalous, b.score > b.threshold.unwrap());
    assert_eq!(loaded.model().memory().unwrap().sizes(), memory.sizes());
    assert_eq!(
        (&loaded.post().normalization().pnpt, &loaded.post().normalization().memory),
        (&detector.post().normalization().pnpt, &detector.post().normalization().memory)
    );
    assert_eq!(loaded.post().positional(), detector.post().positional());
    // `pnpt` with positional standardisation is the module's formula applied to PNPT's own map.
    let parts = loaded.model().image_components(std::slice::from_ref(&image), 1, Maps::PNPT, None).unwrap();
    let class = &loaded.categories()[parts.categories[0]];
    let rule = pnpt::model::ScoringRule {
        method: ScoringMethod::Pnpt,
        memory_weight: 0.0,
        score: pnpt::model::ScoreMode::Max,
        positional: true,
        positional_map: true,
        score_from: None,
    };
    let out = loaded.post().combine_with(&parts, &rule).unwrap();
    let floor = loaded.post().normalization().pnpt[class].std;
    let by_hand = loaded.post().positional().standardise(class, parts.pnpt.as_ref().unwrap(), floor).unwrap();
    assert_eq!(out.maps, by_hand);
    assert_eq!(out.scores[0], by_hand.iter().copied().fold(f32::MIN, f32::max));
    // For the image score only: the map stays PNPT's own (one class, so standardised or not it
    // is the raw map for `pnpt` alone), the score is the per-position map's.
    let score_only =
        loaded.post().combine_with(&parts, &pnpt::model::ScoringRule { positional_map: false, ..rule }).unwrap();
    assert_eq!(&score_only.maps, parts.pnpt.as_ref().unwrap());
    assert_eq!(score_only.scores, out.scores);
    // An image score read from another map: the memory's scores with the fused map.
    let both = loaded
        .model()
        .image_components(std::slice::from_ref(&image), 1, Maps { pnpt: true, memory: true }, None)
        .unwrap();
    let fused = pnpt::model::ScoringRule { method: ScoringMethod::Fused, memory_weight: 0.5, ..rule };
    let memory_alone = pnpt::model::ScoringRule { method: ScoringMethod::Memory, ..rule };
    let source = pnpt::model::ScoreSource { method: ScoringMethod::Memory, memory_weight: 1.0 };
    let mixed =
        loaded.post().combine_with(&both, &pnpt::model::ScoringRule { score_from: Some(source), ..fused }).unwrap();
    assert_eq!(mixed.maps, loaded.post().combine_with(&both, &fused).unwrap().maps);
    assert_eq!(mixed.scores, loaded.post().combine_with(&both, &memory_alone).unwrap().scores);
    assert!(
        loaded.post().combine_with(&parts, &pnpt::model::ScoringRule { score_from: Some(source), ..rule }).is_err()
    );
    // Re-fitting the scoring of the saved detector (what `rescore` does for detectors saved
    // before positional statistics existed) reproduces training's statistics and choice.
    let refit = Detector::<Cpu>::load(out_dir.as_path(), &device).unwrap();
    let (refit, v2) = pnpt::train::rescore(refit, &dataset, &ValidationOptions::default()).unwrap();
    let v2 = v2.expect("validation ran");
    assert_eq!(v2.best().rule, best.rule);
    for (name, (mean, std)) in &detector.post().positional().classes {
        let (m2, s2) = &refit.post().positional().classes[name];
        let diff = mean.iter().zip(m2).chain(std.iter().zip(s2)).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{name}: positional statistics differ by {diff}");
    }

    // Metrics on the test split: clearly better than chance.
    let eval = evaluate(
        &loaded,
        &dataset,
        &EvaluateOptions::default().with_heatmaps(true).with_out_dir(Some(out_dir.as_path().join("eval"))),
    )
    .unwrap();
    eprintln!("{}", eval.to_markdown());
    assert!(eval.mean.image_auroc > 0.7, "image AUROC {}", eval.mean.image_auroc);
    assert!(eval.mean.pixel_auroc > 0.7, "pixel AUROC {}", eval.mean.pixel_auroc);
    assert!(eval.mean_retrieval_accuracy > 0.9, "retrieval {}", eval.mean_retrieval_accuracy);
    // Every method on the same images; the detector's own method is the top-level table.
    let methods: Vec<&str> = eval.methods.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(methods, ["pnpt", "memory", "fused"]);
    let own = eval.methods.iter().find(|m| m.method == eval.method).unwrap();
    assert_eq!(own.mean, eval.mean);
    // The patch memory alone finds these defects without any training.
    let memory_only = &eval.methods[1].mean;
    assert!(memory_only.image_auroc > 0.8, "memory image AUROC {}", memory_only.image_auroc);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.as_path().join("eval/report.json")).unwrap()).unwrap();
    for key in [
        "image_auroc",
        "pixel_auroc",
        "aupro",
        "image_ap",
        "pixel_ap",
        "image_f1_max",
        "pixel_f1_max",
        "retrieval_accuracy",
    ] {
        assert!(json["mean"][key].is_number(), "{key}");
        assert!(json["categories"]["bottle"][key].is_number(), "{key}");
    }
    assert!(out_dir.as_path().join("eval/report.md").is_file());
    assert!(json["methods"]["memory"]["mean"]["image_auroc"].is_number());
    // Without its memory file, a detector that scores with the memory is a clear error.
    let moved = parent.path().join("memory.bin");
    std::fs::rename(out_dir.join(files::MEMORY), &moved).unwrap();
    let err = Detector::<Cpu>::load(out_dir.as_path(), &device).unwrap_err().to_string();
    assert!(err.contains(files::MEMORY), "{err}");
    std::fs::rename(&moved, out_dir.join(files::MEMORY)).unwrap();

    // Integrity: one flipped byte in any file is a checksum error naming that file, before
    // anything is parsed (a corrupted detector can no longer produce a number).
    for f in [
        files::MODEL,
        files::THRESHOLDS,
        files::CONFIG,
        files::POOL,
        files::MEMORY,
        files::NORMALIZATION,
        files::POSITIONAL,
    ] {
        let path = out_dir.join(f);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        match Detector::<Cpu>::load(out_dir.as_path(), &device) {
            Err(pnpt::model::Error::File(pnpt::io::Error::Checksum { path: p, .. })) => assert_eq!(p, path),
            other => panic!("{f} with a flipped byte: {:?}", other.map(|_| "loaded")),
        }
        std::fs::write(&path, &good).unwrap();
    }
    // A manifest that drops a checksum is refused as changed, and so is one that a tool
    // rewrote together with its own checksum file (`manifest.sha256`).
    let manifest_text = std::fs::read_to_string(out_dir.join(files::MANIFEST)).unwrap();
    let sidecar_text = std::fs::read(out_dir.join(files::MANIFEST_CHECKSUM)).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest_text).unwrap();
    manifest["checksums"].as_object_mut().unwrap().remove(files::MODEL);
    std::fs::write(out_dir.join(files::MANIFEST), manifest.to_string()).unwrap();
    match Detector::<Cpu>::load(out_dir.as_path(), &device) {
        Err(pnpt::model::Error::File(pnpt::io::Error::Checksum { path, .. })) => {
            assert_eq!(path, out_dir.join(files::MANIFEST))
        }
        other => panic!("edited manifest: {:?}", other.map(|_| "loaded")),
    }
    pnpt::io::checksum::write_sidecar(&out_dir.join(files::MANIFEST), &out_dir.join(files::MANIFEST_CHECKSUM)).unwrap();
    assert!(matches!(Detector::<Cpu>::load(out_dir.as_path(), &device), Err(pnpt::model::Error::Artefact { .. })));
    std::fs::write(out_dir.join(files::MANIFEST), &manifest_text).unwrap();
    std::fs::write(out_dir.join(files::MANIFEST_CHECKSUM), &sidecar_text).unwrap();

    // A detector saved before the patch memory existed (manifest format 1, no `scoring.method`,
    // no memory files, no checksums, the files under their names of the time; the readers tell
    // the two encodings apart by their first bytes) is refused by `load` and converted by
    // `upgrade`; it then scores with PNPT's map.
    let old = parent.path().join("old");
    std::fs::create_dir(&old).unwrap();
    for (from, to) in [
        (files::CONFIG, files::CONFIG),
        (files::MODEL, files::legacy::MODEL),
        (files::POOL, files::legacy::POOL),
        (files::THRESHOLDS, files::THRESHOLDS),
        (files::MANIFEST, files::MANIFEST),
    ] {
        std::fs::copy(out_dir.join(from), old.join(to)).unwrap();
    }
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(old.join(files::MANIFEST)).unwrap()).unwrap();
    manifest["format"] = 1.into();
    manifest.as_object_mut().unwrap().remove("checksums");
    std::fs::write(old.join(files::MANIFEST), manifest.to_string()).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(old.join(files::CONFIG)).unwrap()).unwrap();
    config["scoring"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k != "method" && k != "memory_weight" && k != "positional");
    config.as_object_mut().unwrap().remove("memory");
    std::fs::write(old.join(files::CONFIG), config.to_string()).unwrap();
    let err = Detector::<Cpu>::load(old.as_path(), &device).unwrap_err().to_string();
    assert!(err.contains("format 1") && err.contains("pnpt upgrade"), "{err}");
    let upgraded = parent.path().join("upgraded");
    assert_eq!(upgrade::<Cpu>(&old, &upgraded, &device).unwrap(), 1);
    let legacy = Detector::<Cpu>::load(upgraded.as_path(), &device).unwrap();
    assert_eq!(legacy.config().scoring.method, ScoringMethod::Pnpt);
    assert!(legacy.model().memory().is_none());
    assert_eq!(legacy.predict(std::slice::from_ref(&image)).unwrap()[0].anomaly_map.len(), 128 * 128);
    let heat = out_dir.as_path().join("eval/heatmaps/bottle").join(format!("{}_{}.png", sample.defect, sample.stem()));
    assert!(heat.is_file(), "{}", heat.display());

    // A configuration that does not match the weights is a clear error, not a panic: caught by
    // the checksum, and when a folder without checksums (format 1) is upgraded by the
    // architecture comparison.
    let mut wrong = PnptConfig::load(out_dir.as_path().join(files::CONFIG)).unwrap();
    wrong.model.hidden = 32;
    wrong.save(out_dir.as_path().join(files::CONFIG)).unwrap();
    let err = Detector::<Cpu>::load(out_dir.as_path(), &device).unwrap_err();
    assert!(matches!(err, pnpt::model::Error::File(pnpt::io::Error::Checksum { .. })), "{err}");
    config["model"]["hidden"] = 32.into();
    std::fs::write(old.join(files::CONFIG), config.to_string()).unwrap();
    let err = upgrade::<Cpu>(&old, &parent.path().join("wrong"), &device).unwrap_err().to_string();
    assert!(err.contains("hidden"), "{err}");
}
