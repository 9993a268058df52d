//! Data-parallel training gives the one-device run's losses and model: on two and three CPU
//! replicas in one process, on two processes joined on 127.0.0.1, and across a resume; with the
//! same device count, the same bits on every run, also with other trainings running at once
//! (docs/data-parallel.md).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use burn::tensor::backend::Device;
use common::{B, feature_set, tiny_config};
use pnpt::model::PnptConfig;
use pnpt::model::train::{EpochStats, NodeOptions, TrainOptions, TrainOutput, train_transformer};

type A = Autodiff<B>;

/// Relative bound on the epoch losses against one device: four units of f32 rounding. A step's
/// loss and gradients are the same real sums as the one-device run's, taken as sums of the
/// shares' means: they differ by rounding of f32 sums, and the nine AdamW steps of this test
/// carry that into the later losses only as rounding (docs/data-parallel.md). Measured: up to
/// 3.2e-7 on losses near 6 (one unit is 4.8e-7 there), over 300 three-device runs in every
/// summation order.
const LOSS_TOLERANCE: f64 = 4.0 * f32::EPSILON as f64;
/// Outputs of weights after nine AdamW steps on gradients that differ in rounding (measured:
/// up to 5.4e-7).
const WEIGHT_TOLERANCE: f32 = 1e-5;

fn config() -> PnptConfig {
    let mut cfg = tiny_config(3);
    // 10 images in batches of 4: batches of 4, 4, 2, so three devices get shares of 2, 1, 1
    // and one of them none in the last batch.
    cfg.train.grad_clip_norm = Some(1.0);
    cfg
}

fn losses(h: &[EpochStats]) -> Vec<f64> {
    h.iter().map(|e| e.loss).collect()
}

fn run(cfg: &PnptConfig, options: &TrainOptions) -> TrainOutput<B> {
    let (set, pool) = feature_set(cfg, 10);
    train_transformer::<A>(cfg, &set, &pool, &Default::default(), options, None).unwrap()
}

/// The model's output on the training features, flattened.
fn outputs(cfg: &PnptConfig, out: &TrainOutput<B>) -> Vec<f32> {
    let (set, pool) = feature_set(cfg, 10);
    let prior = pool.prior_of(&set.prior_index).unwrap();
    let r = out.model.forward(&set.rows(0, set.len()).unwrap(), Some(&prior)).unwrap();
    r.sample.into_iter().flat_map(|t| t.into_data().iter::<f32>().collect::<Vec<_>>()).collect()
}

fn assert_same(what: &str, a: &TrainOutput<B>, b: &TrainOutput<B>, cfg: &PnptConfig) {
    let (la, lb) = (losses(&a.history), losses(&b.history));
    assert_eq!(la.len(), lb.len(), "{what}");
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= LOSS_TOLERANCE * x.abs().max(1.0), "{what}: losses {la:?} vs {lb:?}");
    }
    let (oa, ob) = (outputs(cfg, a), outputs(cfg, b));
    let diff = oa.iter().zip(&ob).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    let loss_diff = la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0.0f64, f64::max);
    eprintln!("{what}: losses differ by up to {loss_diff:.2e}, outputs by up to {diff:.2e}");
    assert!(diff <= WEIGHT_TOLERANCE, "{what}: outputs differ by up to {diff}");
}

fn cpu_ids(n: usize) -> Vec<burn::tensor::backend::DeviceId> {
    vec![burn::tensor::Device::<B>::default().to_id(); n]
}

/// Training on `n` CPU replicas (`n == 1`: the plain one-device run).
fn on(n: usize) -> TrainOptions {
    if n == 1 { TrainOptions::default() } else { TrainOptions::default().with_devices(cpu_ids(n)) }
}

/// The bits of a run's losses and of its model's outputs.
fn bits(cfg: &PnptConfig, out: &TrainOutput<B>) -> (Vec<u64>, Vec<u32>) {
    (
        losses(&out.history).iter().map(|l| l.to_bits()).collect(),
        outputs(cfg, out).iter().map(|o| o.to_bits()).collect(),
    )
}

#[test]
fn two_and_three_cpu_devices_match_one() {
    let cfg = config();
    let one = run(&cfg, &TrainOptions::default());
    let two = run(&cfg, &TrainOptions::default().with_devices(cpu_ids(2)));
    assert_same("2 devices", &one, &two, &cfg);
    let three = run(&cfg, &TrainOptions::default().with_devices(cpu_ids(3)));
    assert_same("3 devices", &one, &three, &cfg);
    // Sums add the devices in rank order: another run on as many devices gives the same bits
    // (with burn-collective's all-reduce, three devices added in a new order on every run).
    let again = run(&cfg, &on(3));
    assert!(
        bits(&cfg, &three) == bits(&cfg, &again),
        "3 devices, twice: {:?} vs {:?}",
        losses(&three.history),
        losses(&again.history)
    );
    // The check can fail: another seed gives other losses.
    let mut other = cfg.clone();
    other.train.seed = 1;
    let moved = run(&other, &TrainOptions::default().with_devices(cpu_ids(2)));
    assert!(losses(&moved.history) != losses(&one.history));
}

/// Two data-parallel trainings at once in one process (two devices with seed 0, three with
/// seed 1), their one-device runs training beside them: each ends where its one-device run
/// ends, and with the bits of the same run made alone. Trainings of one process share Burn's
/// autodiff registry, where a backward pass used to free steps of another thread's graph.
#[test]
fn two_runs_on_several_devices_at_once_match_their_one_device_runs() {
    let cfg = config();
    let mut other = cfg.clone();
    other.train.seed = 1;
    let jobs = [(&cfg, 2), (&other, 3), (&cfg, 1), (&other, 1)];
    let outs: Vec<TrainOutput<B>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs.iter().map(|&(c, n)| scope.spawn(move || run(c, &on(n)))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_same("2 devices, trained beside others", &outs[2], &outs[0], &cfg);
    assert_same("3 devices, trained beside others", &outs[3], &outs[1], &other);
    for (out, &(c, n)) in outs.iter().zip(&jobs) {
        let alone = run(c, &on(n));
        assert!(
            bits(c, out) == bits(c, &alone),
            "{n} device(s), seed {}: beside others {:?}, alone {:?}",
            c.train.seed,
            losses(&out.history),
            losses(&alone.history)
        );
    }
}

/// A two-device run interrupted after one epoch and resumed (on two devices, and on one)
/// ends where the uninterrupted one-device run ends.
#[test]
fn resume_under_two_devices() {
    let cfg = config();
    let one = run(&cfg, &TrainOptions::default());
    for resume_on in [2, 1] {
        let dir = tempfile::tempdir().unwrap();
        let first = TrainOptions::default()
            .with_devices(cpu_ids(2))
            .with_checkpoint_dir(Some(dir.path().to_path_buf()))
            .with_stop_after_epoch(Some(1));
        let part = run(&cfg, &first);
        assert!(!part.completed);
        let resume = TrainOptions::default()
            .with_devices(cpu_ids(resume_on))
            .with_checkpoint_dir(Some(dir.path().to_path_buf()))
            .with_resume(true);
        let resumed = run(&cfg, &resume);
        assert!(resumed.completed);
        assert_same(&format!("2 devices, resumed on {resume_on}"), &one, &resumed, &cfg);
    }
}

/// Set in the environment of the child processes of [`two_processes_match_one`].
const NODE_ENV: &str = "PNPT_TEST_NODE";

/// One node of [`two_processes_match_one`]: does nothing unless started by it.
#[test]
fn node_worker() {
    let Ok(spec) = std::env::var(NODE_ENV) else { return };
    // RANK PORT OUT_FILE
    let parts: Vec<&str> = spec.split(' ').collect();
    let nodes =
        NodeOptions { nodes: 2, rank: parts[0].parse().unwrap(), orchestrator: format!("127.0.0.1:{}", parts[1]) };
    let out = run(&config(), &TrainOptions::default().with_nodes(Some(nodes)));
    let text: Vec<String> = losses(&out.history).iter().map(|l| format!("{l:e}")).collect();
    std::fs::write(parts[2], text.join("\n")).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two processes of this test binary, each one node with one CPU device, joined at node 0's
/// port: their losses are the one-process run's.
#[test]
fn two_processes_match_one() {
    if std::env::var(NODE_ENV).is_ok() {
        return;
    }
    let cfg = config();
    let one = run(&cfg, &TrainOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let port = free_port();
    let files = [dir.path().join("node0.txt"), dir.path().join("node1.txt")];
    let mut children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", "node_worker", "--nocapture", "--test-threads", "1"])
                .env(NODE_ENV, format!("{rank} {port} {}", files[rank].display()))
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    // Bounded: a node that waits for a peer forever is killed, and the test fails.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut statuses = [None, None];
    while statuses.iter().any(Option::is_none) && Instant::now() < deadline {
        for (c, s) in children.iter_mut().zip(statuses.iter_mut()) {
            if s.is_none() {
                *s = c.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(statuses.iter().all(|s| s.is_some_and(|s| s.success())), "nodes ended with {statuses:?}");
    let read =
        |p: &Path| -> Vec<f64> { std::fs::read_to_string(p).unwrap().lines().map(|l| l.parse().unwrap()).collect() };
    let expected = losses(&one.history);
    for f in &files {
        let got = read(f);
        assert_eq!(got.len(), expected.len());
        for (x, y) in got.iter().zip(&expected) {
            assert!((x - y).abs() <= LOSS_TOLERANCE * y.abs().max(1.0), "{}: {got:?} vs {expected:?}", f.display());
        }
    }
}
