//! Data-parallel training with Burn's collective operations (`burn-collective`).
//!
//! Every device — several in one process ([`TrainOptions::devices`]), in several processes
//! or machines ([`TrainOptions::nodes`]) — holds the same model and runs the same loop with
//! its own copy of the run's RNG, so all of them draw the same epoch order and jitter noise as
//! a one-device run. Each takes a contiguous share of every batch, weights its loss by its
//! share of the batch, and the gradients are summed across devices (all-reduce) before the
//! same AdamW step on every device: the update is the one-device run's, up to the order of
//! floating-point sums. The first device of each process reports progress, validates and
//! writes the checkpoints; resuming reads them on every device.
//!
//! Equality with one device holds for deterministic layers; with `model.dropout > 0` every
//! device draws its own dropout masks.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend, Device, DeviceId};
use burn::tensor::{ElementConversion, Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
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
    /// Devices of this process: burn-collective's local all-reduce.
    Local,
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

    fn peer(&self) -> PeerId {
        PeerId(self.global as u32)
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
            Reducer::Local => {
                let reduced = burn_collective::all_reduce::<B>(
                    self.peer(),
                    value.into_primitive().tensor(),
                    ReduceOperation::Sum,
                )
                .map_err(|e| Error::Invalid(format!("all-reduce across devices failed: {e:?}")))?;
                Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
            }
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

/// One data-parallel run at a time per process: burn-collective's state is per process.
static RUN: Mutex<()> = Mutex::new(());

/// Runs [`Run::train`] on every device of this process (the first on this thread, the others
/// on their own) joined by burn-collective, or on this process's one device joined to the
/// other processes by a [`NodeLink`].
pub(super) fn train<B: AutodiffBackend>(
    config: &PnptConfig,
    set: &FeatureSet<B::InnerBackend>,
    pool: &PromptPool<B::InnerBackend>,
    device: &B::Device,
    options: &TrainOptions,
    on_epoch: EpochHook<'_, B::InnerBackend>,
) -> Result<TrainOutput<B::InnerBackend>> {
    let _one_run = RUN.lock().unwrap_or_else(|e| e.into_inner());
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
    let collective = CollectiveConfig::default().with_num_devices(world);
    let rank = |l: usize| Rank { local: l, global: l, world, reducer: Reducer::Local };
    // The other devices report nothing: the first one's bars and lines stand for the run.
    let quiet = options.clone().with_progress(false).with_progress_sink(Default::default());
    let run = |r: Rank, device: &B::Device, options: &TrainOptions, hook: EpochHook<'_, B::InnerBackend>| {
        let peer = r.peer();
        burn_collective::register::<B::InnerBackend>(peer, device.clone(), collective.clone())
            .map_err(|e| Error::Invalid(format!("joining the devices failed: {e:?}")))?;
        let out = Run::<B>::start(config, device, options, Some(r)).and_then(|run| run.train(set, pool, hook));
        if out.is_err() {
            // The others may wait in an all-reduce this device will never join.
            burn_collective::reset_collective::<B::InnerBackend>();
            return out;
        }
        burn_collective::finish_collective::<B::InnerBackend>(peer)
            .map_err(|e| Error::Invalid(format!("leaving the devices failed: {e:?}")))?;
        out
    };
    std::thread::scope(|scope| {
        let followers: Vec<_> = devices
            .iter()
            .enumerate()
            .skip(1)
            .map(|(l, d)| {
                let (quiet, run) = (&quiet, &run);
                scope.spawn(move || run(rank(l), d, quiet, &mut |_, _| Ok(None)).map(|_| ()))
            })
            .collect();
        let out = run(rank(0), &devices[0], options, on_epoch);
        let mut first_error = None;
        for f in followers {
            match f.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(Error::Invalid("a training device's thread panicked".into()));
                }
            }
        }
        match (out, first_error) {
            (Ok(out), None) => Ok(out),
            (Err(e), _) | (Ok(_), Some(e)) => Err(e),
        }
    })
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
                    let (start, len) = Rank { local: global, global, world, reducer: Reducer::Local }.share(n);
                    assert_eq!(start, next, "world {world} n {n}");
                    assert!(len == n / world || len == n / world + 1);
                    next = start + len;
                }
                assert_eq!(next, n);
            }
        }
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
