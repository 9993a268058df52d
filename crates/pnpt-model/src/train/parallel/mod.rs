//! Data-parallel training: several devices of one process ([`TrainOptions::devices`]), or
//! several processes or machines ([`TrainOptions::nodes`]).
//!
//! Every device holds the same model and runs the same loop with its own copy of the run's RNG,
//! so all of them draw the same epoch order and jitter noise as a one-device run. Each takes a
//! contiguous share of every batch, weights its loss by its share of the batch, and the
//! gradients are summed across devices (all-reduce) before the same AdamW step on every device.
//! Sums add the devices' values in rank order (the devices of a process on the first one, the
//! processes at node 0), so a run gives the same bits every time with the same device count;
//! against one device it differs by rounding (docs/data-parallel.md). The first device of each
//! process reports progress, validates and writes the checkpoints; resuming reads them on every
//! device.
//!
//! Equality with one device holds for deterministic layers; with `model.dropout > 0` every
//! device draws its own dropout masks.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend, Device, DeviceId};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use pnpt_prompt::PromptPool;

use super::epochs::Run;
use super::{EpochHook, FeatureSet, TrainOptions, TrainOutput};
use crate::{Error, PnptConfig, Result};

mod local;
mod node;

pub(crate) use local::LocalGroup;
use local::Member;
pub(crate) use node::NodeLink;

/// This process's place in a run over several processes or machines (one training device
/// each, as `torchrun` runs one process per GPU).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeOptions {
    /// Number of processes (nodes) in the run.
    pub nodes: u32,
    /// This process's rank, `0..nodes`.
    pub rank: u32,
    /// Where node 0 listens and the others connect: `HOST:PORT` (HOST: node 0's machine, as
    /// the others reach it).
    pub orchestrator: String,
}

impl NodeOptions {
    fn check(&self) -> Result<()> {
        if self.nodes == 0 || self.rank >= self.nodes {
            return Err(Error::Config(format!("node rank {} of {} nodes", self.rank, self.nodes)));
        }
        let port = self.orchestrator.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
        if port.is_none() {
            return Err(Error::Config(format!("orchestrator address `{}`: expected HOST:PORT", self.orchestrator)));
        }
        Ok(())
    }
}

/// How a device's sums reach the other devices.
#[derive(Debug)]
enum Reducer {
    /// Devices of this process: the run's own [`LocalGroup`].
    Local(Arc<LocalGroup>),
    /// One device per process: the node link.
    Nodes(Mutex<NodeLink>),
}

/// One device's place in a data-parallel run.
#[derive(Debug)]
pub(crate) struct Rank {
    /// Index among this process's devices (0 leads).
    local: usize,
    /// Index among all devices of the run.
    global: usize,
    /// Devices in the run.
    world: usize,
    reducer: Reducer,
}

impl Rank {
    /// Whether this device reports progress, validates and writes checkpoints.
    pub(crate) fn is_leader(&self) -> bool {
        self.local == 0
    }

    /// `(start, len)` of this device's rows of an `n`-row batch: contiguous shares whose sizes
    /// differ by at most one.
    pub(crate) fn share(&self, n: usize) -> (usize, usize) {
        let start = self.global * n / self.world;
        (start, (self.global + 1) * n / self.world - start)
    }

    /// The sum over all devices of `value` (the same on every device).
    pub(crate) fn sum<B: Backend>(&self, value: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        match &self.reducer {
            Reducer::Local(group) => group.sum(self.local, value),
            Reducer::Nodes(link) => {
                let device = value.device();
                let values = value
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| Error::Invalid(format!("{e:?}")))?;
                let n = values.len();
                let total = link.lock().unwrap_or_else(|e| e.into_inner()).sum(values)?;
                Ok(Tensor::from_data(TensorData::new(total, [n]), &device))
            }
        }
    }

    /// The mean over all devices of a host number (the same result on every device).
    pub(crate) fn mean<B: Backend>(&self, value: f64, device: &B::Device) -> Result<f64> {
        let t = Tensor::<B, 1>::from_data(TensorData::new(vec![value as f32], [1]), device);
        let total: f32 = self.sum(t)?.into_scalar().elem();
        Ok(total as f64 / self.world as f64)
    }

    /// `grads` summed over all devices, parameter by parameter in the model's own order (the
    /// same on every device and process; parameter ids are random per process).
    pub(crate) fn sum_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        mut grads: GradientsParams,
    ) -> Result<GradientsParams> {
        let mut visitor =
            SumGradients::<B> { rank: self, grads: &mut grads, seen: HashSet::new(), error: None, _b: PhantomData };
        model.visit(&mut visitor);
        match visitor.error.take() {
            Some(e) => Err(e),
            None => Ok(grads),
        }
    }
}

struct SumGradients<'a, B: AutodiffBackend> {
    rank: &'a Rank,
    grads: &'a mut GradientsParams,
    seen: HashSet<burn::module::ParamId>,
    error: Option<Error>,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SumGradients<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_some() || !self.seen.insert(param.id) {
            return;
        }
        // Every parameter of PNPT gets a gradient from the loss; one without (a device whose
        // share skipped a branch) still joins the sum with zeros.
        let grad = self
            .grads
            .remove::<B::InnerBackend, D>(param.id)
            .unwrap_or_else(|| Tensor::zeros(param.val().dims(), &param.val().device()));
        let shape = grad.dims();
        let flat = grad.reshape([shape.iter().product::<usize>()]);
        match self.rank.sum(flat) {
            Ok(sum) => self.grads.register(param.id, sum.reshape(shape)),
            Err(e) => self.error = Some(e),
        }
    }
}

/// The training backend's device with id `id`.
pub(crate) fn device_of<B: Backend>(id: DeviceId) -> B::Device {
    <B::Device as Device>::from_id(id)
}

/// Runs [`Run::train`] on every device of this process (the first on this thread, the others
/// on their own) joined by a [`LocalGroup`] of their own, or on this process's one device
/// joined to the other processes by a [`NodeLink`].
pub(super) fn train<B: AutodiffBackend>(
    config: &PnptConfig,
    set: &FeatureSet<B::InnerBackend>,
    pool: &PromptPool<B::InnerBackend>,
    device: &B::Device,
    options: &TrainOptions,
    on_epoch: EpochHook<'_, B::InnerBackend>,
) -> Result<TrainOutput<B::InnerBackend>> {
    let devices: Vec<B::Device> = if options.devices.is_empty() {
        vec![device.clone()]
    } else {
        options.devices.iter().map(|id| device_of::<B>(*id)).collect()
    };
    if let Some(nodes) = &options.nodes {
        nodes.check()?;
        if devices.len() > 1 {
            return Err(Error::Config(format!(
                "a multi-node run trains on one device per process ({} given): start one process per device",
                devices.len()
            )));
        }
        let link = NodeLink::connect(nodes)?;
        let rank = Rank {
            local: 0,
            global: nodes.rank as usize,
            world: nodes.nodes as usize,
            reducer: Reducer::Nodes(Mutex::new(link)),
        };
        return Run::<B>::start(config, &devices[0], options, Some(rank))?.train(set, pool, on_epoch);
    }
    let world = devices.len();
    // This run's own group: other runs of the process (several trainings at once) have theirs.
    let group = Arc::new(LocalGroup::new(world));
    let rank = |l: usize| Rank { local: l, global: l, world, reducer: Reducer::Local(Arc::clone(&group)) };
    // The other devices report nothing: the first one's bars and lines stand for the run.
    let quiet = options.clone().with_progress(false).with_progress_sink(Default::default());
    let run = |r: Rank, device: &B::Device, options: &TrainOptions, hook: EpochHook<'_, B::InnerBackend>| {
        // A device that stops early (an error, a panic) ends the others' sums with an error
        // instead of leaving them waiting for its contributions.
        let mut member = Member { group: &group, local: r.local, done: false };
        let out = Run::<B>::start(config, device, options, Some(r)).and_then(|run| run.train(set, pool, hook));
        member.done = out.is_ok();
        out
    };
    let outcomes: Vec<Result<Option<TrainOutput<B::InnerBackend>>>> = std::thread::scope(|scope| {
        let followers: Vec<_> = devices
            .iter()
            .enumerate()
            .skip(1)
            .map(|(l, d)| {
                let (quiet, run) = (&quiet, &run);
                scope.spawn(move || run(rank(l), d, quiet, &mut |_, _| Ok(None)).map(|_| None))
            })
            .collect();
        let mut outcomes = vec![run(rank(0), &devices[0], options, on_epoch).map(Some)];
        for f in followers {
            outcomes
                .push(f.join().unwrap_or_else(|_| Err(Error::Invalid("a training device's thread panicked".into()))));
        }
        outcomes
    });
    // The device that failed first has the error to report; the others only saw their sums end.
    let first = group.failed().unwrap_or(0);
    let mut outcomes: Vec<_> = outcomes.into_iter().enumerate().collect();
    outcomes.sort_by_key(|(l, _)| *l != first);
    let mut output = None;
    for (_, outcome) in outcomes {
        if let Some(out) = outcome? {
            output = Some(out);
        }
    }
    output.ok_or_else(|| Error::Invalid("the first training device returned no model".into()))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order() {
        for world in 1..5 {
            for n in 0..11 {
                let mut next = 0;
                for global in 0..world {
                    let group = Arc::new(LocalGroup::new(world));
                    let (start, len) = Rank { local: global, global, world, reducer: Reducer::Local(group) }.share(n);
                    assert_eq!(start, next, "world {world} n {n}");
                    assert!(len == n / world || len == n / world + 1);
                    next = start + len;
                }
                assert_eq!(next, n);
            }
        }
    }

    type F = burn::backend::Flex<f32>;

    fn vector(values: &[f32]) -> Tensor<F, 1> {
        Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), &Default::default())
    }

    /// Three devices whose values round differently in any order but rank order (or its first
    /// two swapped): `(1e8 + 1) - 1e8` is 0 in f32, `(1e8 - 1e8) + 1` is 1. Every device gets
    /// rank order's `[0, 1]` in every round, whichever thread comes first (started last to
    /// first here).
    #[test]
    fn local_sums_add_in_rank_order() {
        let group = LocalGroup::new(3);
        let values = [[1e8f32, 1e8], [1.0, -1e8], [-1e8, 1.0]];
        let sums: Vec<Vec<Vec<f32>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .rev()
                .map(|local| {
                    let (group, mine) = (&group, values[local]);
                    scope.spawn(move || {
                        (0..20)
                            .map(|_| group.sum(local, vector(&mine)).unwrap().into_data().to_vec::<f32>().unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for rounds in sums {
            assert!(rounds.iter().all(|sum| sum == &[0.0, 1.0]), "{rounds:?}");
        }
    }

    /// A device that stops ends the others' sums with an error (none waits forever), and
    /// values of other lengths are an error, not a panic.
    #[test]
    fn local_sums_end_when_a_device_stops() {
        let group = LocalGroup::new(2);
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| group.sum(0, vector(&[1.0])));
            drop(Member { group: &group, local: 1, done: false });
            assert!(waiting.join().unwrap().is_err());
        });
        assert_eq!(group.failed(), Some(1));
        assert!(group.sum(0, vector(&[1.0])).is_err());

        let group = LocalGroup::new(2);
        std::thread::scope(|scope| {
            let other = scope.spawn(|| group.sum(1, vector(&[1.0, 2.0])));
            assert!(group.sum(0, vector(&[1.0])).is_err());
            assert!(other.join().unwrap().is_err());
        });
        assert!(LocalGroup::new(2).sum(2, vector(&[1.0])).is_err());
    }

    #[test]
    fn node_options_are_checked() {
        let ok = NodeOptions { nodes: 2, rank: 1, orchestrator: "10.0.0.1:3000".into() };
        assert!(ok.check().is_ok());
        assert!(NodeOptions { rank: 2, ..ok.clone() }.check().is_err());
        assert!(NodeOptions { nodes: 0, rank: 0, ..ok.clone() }.check().is_err());
        assert!(NodeOptions { orchestrator: "host".into(), ..ok }.check().is_err());
    }

    /// Three nodes on 127.0.0.1 sum by hand-checkable vectors, twice (the link stays usable),
    /// and a wrong length is an error, not a wrong sum.
    #[test]
    fn node_link_sums_across_three_nodes() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let handles: Vec<_> = (0..3u32)
            .map(|rank| {
                std::thread::spawn(move || {
                    let o = NodeOptions { nodes: 3, rank, orchestrator: format!("127.0.0.1:{port}") };
                    let mut link = NodeLink::connect(&o).unwrap();
                    let first = link.sum(vec![rank as f32, 10.0 * rank as f32]).unwrap();
                    let second = link.sum(vec![1.5]).unwrap();
                    (first, second)
                })
            })
            .collect();
        for h in handles {
            let (first, second) = h.join().unwrap();
            assert_eq!(first, vec![3.0, 30.0]);
            assert_eq!(second, vec![4.5]);
        }
    }
}
