//! Several processes or machines: node 0 sums every node's values in rank order.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::NodeOptions;
use crate::{Error, Result};

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
    pub(super) fn connect(options: &NodeOptions) -> Result<Self> {
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
    pub(super) fn sum(&mut self, mut values: Vec<f32>) -> Result<Vec<f32>> {
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
