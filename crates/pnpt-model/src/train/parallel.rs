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

use std::any::Any;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend, Device, DeviceId};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use pnpt_prompt::PromptPool;

use super::epochs::Run;
use super::{EpochHook, FeatureSet, TrainOptions, TrainOutput};
use crate::{Error, PnptConfig, Result};

/// This process's place in a run over several processes or machines (one training device
/// each, as `torchrun` runs one process per GPU).
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The devices of one data-parallel run in this process. A sum waits for every device's value
/// and adds them in rank order on the first device, so it gives the same bits on every run
/// whichever device comes first, and every device gets those bits. (burn-collective's local
/// all-reduce adds in the iteration order of a `HashMap` with a random hasher: from three
/// devices on, the rounding of every sum was drawn anew on each run.) Each run has its own
/// group, so runs at once in one process cannot mix their values.
#[derive(Debug)]
pub(crate) struct LocalGroup {
    world: usize,
    state: Mutex<GroupState>,
    changed: Condvar,
}

/// Every device of a run sums tensors of the one training backend; anything else is a bug.
const MIXED_TYPES: &str = "devices of one run summed tensors of different types";

#[derive(Default)]
struct GroupState {
    /// The values of the sum in progress, by device (`Tensor<B, 1>`s of the training backend).
    values: Vec<Option<Box<dyn Any + Send>>>,
    /// The last completed sum (or why it failed), until every device has taken it.
    total: Option<std::result::Result<Box<dyn Any + Send>, String>>,
    /// Devices yet to take `total`.
    takers: usize,
    /// Sums completed: a device waits for this to move past the sum it joined.
    round: u64,
    /// The first device that stopped early: every sum ends with an error from then on.
    failed: Option<usize>,
    /// A device that finished its run: a sum started after it can never complete.
    finished: Option<usize>,
}

impl std::fmt::Debug for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupState").field("round", &self.round).field("failed", &self.failed).finish()
    }
}

impl LocalGroup {
    pub(crate) fn new(world: usize) -> Self {
        let state = GroupState { values: (0..world).map(|_| None).collect(), ..Default::default() };
        Self { world, state: Mutex::new(state), changed: Condvar::new() }
    }

    /// The sum over the group's devices of `value` (device `local`'s), on `value`'s device.
    pub(crate) fn sum<B: Backend>(&self, local: usize, value: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        let device = value.device();
        let ended = |state: &GroupState| match (state.failed, state.finished) {
            (Some(failed), _) => Some(Error::Invalid(format!("training device {failed} stopped; the run ends"))),
            (None, Some(done)) => {
                Some(Error::Invalid(format!("training device {done} finished its run while device {local} still sums")))
            }
            (None, None) => None,
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A device that has taken the last sum may be back before the others took it.
        while state.takers > 0 && ended(&state).is_none() {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = ended(&state) {
            return Err(e);
        }
        if local >= self.world || state.values[local].is_some() {
            return Err(Error::Invalid(format!("device {local} joined a sum of {} devices twice", self.world)));
        }
        let round = state.round;
        state.values[local] = Some(Box::new(value));
        if state.values.iter().all(Option::is_some) {
            let values: Vec<_> = state.values.iter_mut().filter_map(Option::take).collect();
            state.total = Some(Self::add::<B>(values));
            state.takers = self.world;
            state.round += 1;
            self.changed.notify_all();
        }
        while state.round == round && ended(&state).is_none() {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.round == round {
            // Ended before every device joined: `ended` says why.
            return Err(ended(&state).unwrap_or_else(|| Error::Invalid("a sum ended unfinished".into())));
        }
        let total = match &state.total {
            Some(Ok(total)) => total.downcast_ref::<Tensor<B, 1>>().cloned().ok_or_else(|| MIXED_TYPES.to_string()),
            Some(Err(e)) => Err(e.clone()),
            None => Err("a sum's result was taken too early".to_string()),
        };
        state.takers -= 1;
        if state.takers == 0 {
            state.total = None;
            self.changed.notify_all();
        }
        drop(state);
        Ok(total.map_err(Error::Invalid)?.to_device(&device))
    }

    /// `values` (by device) added in that order on the first one's device.
    fn add<B: Backend>(values: Vec<Box<dyn Any + Send>>) -> std::result::Result<Box<dyn Any + Send>, String> {
        let mut values = values.into_iter().map(|v| v.downcast::<Tensor<B, 1>>().map(|t| *t));
        let Some(Ok(mut total)) = values.next() else {
            return Err(MIXED_TYPES.into());
        };
        let device = total.device();
        for value in values {
            let value = value.map_err(|_| MIXED_TYPES.to_string())?;
            if value.dims() != total.dims() {
                return Err(format!("devices summed {} and {} values", total.dims()[0], value.dims()[0]));
            }
            total = total + value.to_device(&device);
        }
        Ok(Box::new(total))
    }

    /// Device `local` leaves the group: stopped early (`done` false), every sum ends with an
    /// error naming it; finished, every sum that could only complete with it does.
    fn leave(&self, local: usize, done: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if done {
            state.finished.get_or_insert(local);
        } else {
            state.failed.get_or_insert(local);
        }
        self.changed.notify_all();
    }

    /// The first device that stopped early, if any.
    fn failed(&self) -> Option<usize> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).failed
    }
}

/// A device's membership of a [`LocalGroup`]: dropped before `done` (an error returned, or a
/// panic unwinding), it stops the group; after, it leaves it. Either way no device waits
/// forever for a sum it cannot join.
struct Member<'a> {
    group: &'a LocalGroup,
    local: usize,
    done: bool,
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        self.group.leave(self.local, self.done);
    }
}

/// The processes of a multi-node run, joined in a star around node 0: for every sum each node
/// sends its values, node 0 adds them in rank order and sends the total back, so every node
/// gets the same bits. Plain TCP: messages are a little-endian `u64` count of `f32` values and
/// the values.
///
/// Not burn-collective's global orchestrator: with Burn 0.21 two processes on 127.0.0.1
/// completed the first all-reduce and then waited forever in the second (its tree and
/// centralized strategies alike; the ring refuses tensors smaller than the node count).
#[derive(Debug)]
pub(crate) struct NodeLink {
    /// Node 0: the other nodes' streams, by rank (`peers[r - 1]`). Others: node 0's stream.
    streams: Vec<TcpStream>,
    root: bool,
}

/// How long a node waits for node 0 to listen, or node 0 for the others to connect.
const JOIN_TIMEOUT: Duration = Duration::from_secs(300);

impl NodeLink {
    fn connect(options: &NodeOptions) -> Result<Self> {
        let addr = options.orchestrator.trim_start_matches("tcp://");
        let net = |what: &str, e: std::io::Error| Error::Invalid(format!("{what} {addr}: {e}"));
        let magic = |rank: u32, nodes: u32| [b"PNPT".as_slice(), &rank.to_le_bytes(), &nodes.to_le_bytes()].concat();
        if options.rank == 0 {
            let listener = TcpListener::bind(addr).map_err(|e| net("listening on", e))?;
            listener.set_nonblocking(true).map_err(|e| net("listening on", e))?;
            let mut slots: Vec<Option<TcpStream>> = (1..options.nodes).map(|_| None).collect();
            let deadline = Instant::now() + JOIN_TIMEOUT;
            while slots.iter().any(Option::is_none) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).map_err(|e| net("accepting on", e))?;
                        stream.set_nodelay(true).map_err(|e| net("accepting on", e))?;
                        let mut hello = [0u8; 12];
                        stream.read_exact(&mut hello).map_err(|e| net("greeting on", e))?;
                        let rank = u32::from_le_bytes(hello[4..8].try_into().expect("4 bytes"));
                        if hello[..] != magic(rank, options.nodes)[..] || rank == 0 || rank >= options.nodes {
                            return Err(Error::Config(format!(
                                "{addr}: a node that is not one of this run's {} (rank {rank}) connected",
                                options.nodes
                            )));
                        }
                        if slots[rank as usize - 1].replace(stream).is_some() {
                            return Err(Error::Config(format!("{addr}: two nodes claim rank {rank}")));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return Err(Error::Invalid(format!(
                                "{addr}: {} of {} nodes joined within {} s",
                                1 + slots.iter().flatten().count(),
                                options.nodes,
                                JOIN_TIMEOUT.as_secs()
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => return Err(net("accepting on", e)),
                }
            }
            Ok(Self { streams: slots.into_iter().flatten().collect(), root: true })
        } else {
            let deadline = Instant::now() + JOIN_TIMEOUT;
            let mut stream = loop {
                match TcpStream::connect(addr) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => return Err(net("connecting to node 0 at", e)),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            };
            stream.set_nodelay(true).map_err(|e| net("connecting to", e))?;
            stream.write_all(&magic(options.rank, options.nodes)).map_err(|e| net("greeting", e))?;
            Ok(Self { streams: vec![stream], root: false })
        }
    }

    fn send(stream: &mut TcpStream, values: &[f32]) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(8 + 4 * values.len());
        bytes.extend_from_slice(&(values.len() as u64).to_le_bytes());
        values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        stream.write_all(&bytes)
    }

    fn receive(stream: &mut TcpStream, n: usize) -> std::io::Result<Vec<f32>> {
        let mut len = [0u8; 8];
        stream.read_exact(&mut len)?;
        if u64::from_le_bytes(len) != n as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a node sent {} values where {n} were expected", u64::from_le_bytes(len)),
            ));
        }
        let mut bytes = vec![0u8; 4 * n];
        stream.read_exact(&mut bytes)?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// The element-wise sum of every node's `values`.
    fn sum(&mut self, mut values: Vec<f32>) -> Result<Vec<f32>> {
        let failed = |e: std::io::Error| Error::Invalid(format!("exchange with the other nodes failed: {e}"));
        let n = values.len();
        if self.root {
            for stream in &mut self.streams {
                let theirs = Self::receive(stream, n).map_err(failed)?;
                values.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
            }
            for stream in &mut self.streams {
                Self::send(stream, &values).map_err(failed)?;
            }
            Ok(values)
        } else {
            Self::send(&mut self.streams[0], &values).map_err(failed)?;
            Self::receive(&mut self.streams[0], n).map_err(failed)
        }
    }
}

#[cfg(test)]
mod tests {
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
