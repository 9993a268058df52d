//! The command line itself: `--help` everywhere exits 0, bad arguments exit 2 with clap's
//! message, and a bad detector path is a run-time error (exit 1) naming the path.

use std::process::{Command, Output};

fn pnpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pnpt")).args(args).output().expect("run pnpt")
}

#[test]
fn help_on_every_subcommand_exits_0() {
    for sub in [&[][..], &["predict"], &["serve"], &["info"], &["eval"], &["train"]] {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = pnpt(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let top = pnpt(&["--help"]);
    let text = String::from_utf8_lossy(&top.stdout);
    for sub in ["predict", "serve", "info", "eval", "train"] {
        assert!(text.contains(sub), "{sub} missing from --help: {text}");
    }
    assert_eq!(pnpt(&["--version"]).status.code(), Some(0));
}

#[test]
fn bad_arguments_exit_2_with_clap_message() {
    let cases: [&[&str]; 9] = [
        &[],
        &["frobnicate"],
        &["predict"],
        &["predict", "detector"],
        &["predict", "detector", "x.png", "--batch", "0"],
        &["serve", "detector", "--addr", "not-an-address"],
        &["eval", "detector"],
        &["train", "--method", "magic"],
        &["train", "--time-budget", "soon"],
    ];
    for args in cases {
        let out = pnpt(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error:") || err.contains("Usage:"), "{args:?}: {err}");
    }
    // Numbers and lists go through pnpt_cli::job's parsers: the message names the real problem
    // (2^70 used to read "needs a whole number", an empty list "no categories found").
    let named: [(&[&str], &str); 4] = [
        (&["train", "--seed", "1180591620717411303424"], "out of range"),
        (&["train", "--categories", ""], "the list is empty"),
        (&["eval", "detector", "--data", "d", "--categories", " , "], "the list is empty"),
        (&["train", "--epochs", "three"], "needs a whole number"),
    ];
    for (args, says) in named {
        let out = pnpt(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // --resume with another --out is refused before anything is created.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let out = pnpt(&["train", "--resume", a.to_str().unwrap(), "--out", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resumes in its own folder"));
    assert!(!a.exists() && !b.exists());
    // So is --rescore without a saved detector to re-fit (pnpt_cli::job::TrainArgs::job_options).
    let out = pnpt(&["train", "--rescore"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("it needs --evaluate DETECTOR_DIR"));
    // The device is checked by clap too.
    let out = pnpt(&["predict", "d", "x.png", "--device", "tpu"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device `tpu`"));
}

#[test]
fn missing_detector_is_an_error_naming_it() {
    for args in [
        &["predict", "/nonexistent/detector", "x.png"][..],
        &["info", "/nonexistent/detector"],
        &["serve", "/nonexistent/detector", "--addr", "127.0.0.1:0"],
    ] {
        let out = pnpt(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("/nonexistent/detector"), "{args:?}: {err}");
    }
}
