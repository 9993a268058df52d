//! Artefacts as [safetensors](https://huggingface.co/docs/safetensors) files, so that Python
//! (`safetensors.safe_open`, or `json` + `struct` alone) reads every file pnpt saves.
//!
//! Layout (the safetensors format, nothing added): an 8-byte little-endian header length `n`,
//! `n` bytes of JSON (padded with spaces to a multiple of 8), then the tensors' bytes. The JSON
//! maps every tensor name to `{"dtype", "shape", "data_offsets"}` and holds a `__metadata__`
//! map of strings:
//!
//! * `pnpt.kind`: what the file is (`prompt_pool`, `patch_memory`, `pnpt_model`,
//!   `training_checkpoint`), so that one artefact is never read as another;
//! * `pnpt.format`: the version of this layout ([`FORMAT`]);
//! * `pnpt.sha256`: the SHA-256 (lower-case hex) of the whole file as written with these 64
//!   characters set to ASCII `0`. It covers the header too (a flipped bit in a class name or
//!   the configuration is as much an error as one in a weight), and it needs no trailer, which
//!   safetensors readers would refuse;
//! * every other entry is one field of the artefact's header (class names, configuration,
//!   counts...), its value as JSON text.
//!
//! Reading checks the length of the file against the header first (a truncated file is a
//! [`Error::Format`] saying so), then the digest ([`Error::Checksum`]), and only then lets the
//! `safetensors` crate validate the layout and parses any value.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::atomic::write_atomic;
use crate::checksum::{hex, sha256_hex};
use crate::error::{format_err, io_err};
use crate::{Error, Result, bytes_to_f32, f32_to_bytes};

/// Version of the pnpt conventions on top of safetensors (`pnpt.format`).
pub const FORMAT: u32 = 1;
/// Metadata key of the artefact kind.
pub const KIND_KEY: &str = "pnpt.kind";
/// Metadata key of the layout version.
pub const FORMAT_KEY: &str = "pnpt.format";
/// Metadata key of the whole-file SHA-256.
pub const DIGEST_KEY: &str = "pnpt.sha256";
const RESERVED_PREFIX: &str = "pnpt.";
const PLACEHOLDER: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A reader of pnpt tensor files in plain Python (`json`, `struct`, `hashlib`; no numpy, no
/// `safetensors` package): prints the metadata, every tensor and whether the digest holds, as
/// JSON. The tests of every crate that saves a tensor file check it with this script, which
/// shares no code with the Rust writer; it is also a starting point for reading artefacts
/// without pnpt (`python3 -c "$PYTHON_READER" FILE`).
pub const PYTHON_READER: &str = include_str!("../python/read_pnpt_safetensors.py");

/// Reads `path` with [`PYTHON_READER`] in `python3`: the JSON object it prints (`metadata`,
/// `tensors` with their values, `digest_ok`). `Ok(None)` when `python3` cannot be started;
/// `Err` with Python's message when the reader fails. For checking an artefact from outside
/// pnpt; the tests of every crate that saves one do.
pub fn read_with_python(path: impl AsRef<Path>) -> std::result::Result<Option<Value>, String> {
    let path = path.as_ref();
    let out = match std::process::Command::new("python3").arg("-c").arg(PYTHON_READER).arg(path).output() {
        Ok(out) => out,
        Err(_) => return Ok(None),
    };
    if !out.status.success() {
        return Err(format!("python reader failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| format!("python reader printed no JSON: {e}"))
}

/// Element type of a stored tensor (the two pnpt writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float, little endian (`F32`).
    F32,
    /// Raw bytes (`U8`): an opaque record such as a Burn optimizer state.
    U8,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::U8 => "U8",
        }
    }
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::U8 => 1,
        }
    }
}

/// One named tensor to write.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Little-endian element bytes, `shape.product() * dtype size` of them.
    pub bytes: Vec<u8>,
}

impl Entry {
    /// An `F32` tensor.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Self {
        Self { name: name.into(), dtype: Dtype::F32, shape, bytes: f32_to_bytes(values) }
    }
    /// A one-dimensional `U8` tensor holding `bytes`.
    pub fn bytes(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self { name: name.into(), dtype: Dtype::U8, shape: vec![bytes.len()], bytes }
    }
}

/// Whether `bytes` start like a safetensors file (a header length, then `{`), as opposed to
/// the earlier pnpt container (an 8-byte ASCII magic) or a Burn MessagePack record.
pub fn looks_like_tensor_file(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && bytes[8] == b'{'
}

/// Serialises a tensor file in memory (see the module documentation for the layout).
/// `header` must serialise to a JSON object whose keys do not start with `pnpt.`.
pub fn encode<H: Serialize>(path: &Path, kind: &str, header: &H, tensors: &[Entry]) -> Result<Vec<u8>> {
    let fields = match serde_json::to_value(header).map_err(|e| format_err(path, e.to_string()))? {
        Value::Object(fields) => fields,
        other => return Err(format_err(path, format!("header must be a JSON object, not {other}"))),
    };
    let mut metadata = BTreeMap::new();
    for (key, value) in fields {
        if key.starts_with(RESERVED_PREFIX) {
            return Err(format_err(path, format!("header field `{key}` uses the reserved prefix {RESERVED_PREFIX}")));
        }
        metadata.insert(key, value.to_string());
    }
    metadata.insert(KIND_KEY.to_string(), kind.to_string());
    metadata.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
    let mut json = Map::new();
    let mut offset = 0usize;
    for t in tensors {
        let want = t.shape.iter().product::<usize>() * t.dtype.size();
        if t.bytes.len() != want || t.name == "__metadata__" || t.name.is_empty() || json.contains_key(&t.name) {
            return Err(format_err(
                path,
                format!("tensor `{}`: {} bytes for shape {:?}, or a duplicate name", t.name, t.bytes.len(), t.shape),
            ));
        }
        let info = serde_json::json!({
            "dtype": t.dtype.name(),
            "shape": t.shape,
            "data_offsets": [offset, offset + t.bytes.len()],
        });
        json.insert(t.name.clone(), info);
        offset += t.bytes.len();
    }
    // `__metadata__` first and the digest first in it, written by hand around serde_json's
    // sorted maps: the digits then sit at a fixed place near the start of the file (byte 40),
    // apart from the fields and tensors that a damaged byte is most likely to hit.
    let rest = serde_json::to_string(&metadata).expect("strings");
    let tensors_json = serde_json::to_string(&Value::Object(json)).map_err(|e| format_err(path, e.to_string()))?;
    let mut header_text = format!("{{\"__metadata__\":{{\"{DIGEST_KEY}\":\"{PLACEHOLDER}\",{}", &rest[1..]);
    if tensors_json.len() > 2 {
        header_text.push(',');
    }
    header_text.push_str(&tensors_json[1..]);
    let mut header_text = header_text.into_bytes();
    // Padding to a multiple of 8 keeps the data aligned for readers that map it (as the
    // Python library writes it).
    while header_text.len() % 8 != 0 {
        header_text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header_text.len() + offset);
    out.extend_from_slice(&(header_text.len() as u64).to_le_bytes());
    out.extend_from_slice(&header_text);
    for t in tensors {
        out.extend_from_slice(&t.bytes);
    }
    let (at, _) = find_digest(&out[8..8 + header_text.len()]).expect("the placeholder was just written");
    let digest = sha256_hex(&out);
    out[8 + at..8 + at + 64].copy_from_slice(digest.as_bytes());
    Ok(out)
}

/// Writes a tensor file atomically (see [`encode`]).
pub fn write<H: Serialize>(path: &Path, kind: &str, header: &H, tensors: &[Entry]) -> Result<()> {
    write_atomic(path, &encode(path, kind, header, tensors)?)
}

/// Offset and value of the 64 hex digits of the `pnpt.sha256` entry in the raw `header`
/// bytes (`"pnpt.sha256"`, optional spaces, `:`, `"`, 64 hex digits, `"`; the first such key).
fn find_digest(header: &[u8]) -> Option<(usize, String)> {
    let key = format!("\"{DIGEST_KEY}\"");
    let mut i = header.windows(key.len()).position(|w| w == key.as_bytes())? + key.len();
    let skip_space = |i: &mut usize| {
        while header.get(*i).is_some_and(u8::is_ascii_whitespace) {
            *i += 1;
        }
    };
    skip_space(&mut i);
    (header.get(i) == Some(&b':')).then_some(())?;
    i += 1;
    skip_space(&mut i);
    (header.get(i) == Some(&b'"')).then_some(())?;
    let digits = header.get(i + 1..i + 65)?;
    let closed = header.get(i + 65) == Some(&b'"');
    (closed && digits.iter().all(u8::is_ascii_hexdigit))
        .then(|| (i + 1, String::from_utf8(digits.to_vec()).expect("ASCII")))
}

/// A tensor file read and verified by [`TensorFile::parse`].
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    metadata: BTreeMap<String, String>,
    tensors: BTreeMap<String, (Dtype, Vec<usize>, Range<usize>)>,
    bytes: Vec<u8>,
}

impl TensorFile {
    /// Reads `path` and checks that it is a tensor file of `kind` (see [`TensorFile::parse`]).
    pub fn read(path: &Path, kind: &str) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        Self::parse(path, bytes, kind)
    }

    /// Checks length, digest, layout and kind of the file `bytes` read from `path`.
    pub fn parse(path: &Path, bytes: Vec<u8>, kind: &str) -> Result<Self> {
        let bad = |reason: String| format_err(path, reason);
        if bytes.len() < 8 {
            return Err(bad(format!("{} bytes: too short for a safetensors header", bytes.len())));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let header_end = usize::try_from(n).ok().and_then(|n| n.checked_add(8)).filter(|&e| e <= bytes.len());
        let Some(header_end) = header_end else {
            return Err(bad(format!(
                "truncated or not a safetensors file: the header claims {n} bytes, the file has {}",
                bytes.len()
            )));
        };
        let header = &bytes[8..header_end];
        // The file length the header promises, when it parses: a cut file says "truncated".
        let truncated = || -> Option<Error> {
            let fields: Map<String, Value> = serde_json::from_slice(header).ok()?;
            let data_len = fields
                .iter()
                .filter(|(k, _)| *k != "__metadata__")
                .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
                .max()
                .unwrap_or(0);
            let want = header_end as u64 + data_len;
            ((bytes.len() as u64) < want)
                .then(|| bad(format!("truncated (or damaged): {} bytes, the header describes {want}", bytes.len())))
        };
        // The digest is found in the raw header without parsing it, so that a flipped bit
        // anywhere else in the header is a checksum error, as one in the data is.
        let Some((at, digest)) = find_digest(header) else {
            return Err(truncated().unwrap_or_else(|| {
                bad(match serde_json::from_slice::<Value>(header) {
                    Err(e) => format!("the safetensors header is not JSON ({e}): the file is corrupt"),
                    Ok(_) => format!("no `{DIGEST_KEY}` entry in the metadata: not a pnpt artefact"),
                })
            }));
        };
        let at = at + 8;
        let actual = {
            use sha2::Digest;
            let mut hasher = sha2::Sha256::new();
            hasher.update(&bytes[..at]);
            hasher.update(PLACEHOLDER.as_bytes());
            hasher.update(&bytes[at + 64..]);
            hex(&hasher.finalize())
        };
        if !actual.eq_ignore_ascii_case(&digest) {
            return Err(truncated().unwrap_or(Error::Checksum { path: path.to_path_buf(), expected: digest, actual }));
        }
        // The digest vouches for the bytes; the safetensors crate vouches for the layout.
        let (n, parsed) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e:?}")))?;
        let data_start = 8 + n;
        let metadata: BTreeMap<String, String> = parsed.metadata().clone().unwrap_or_default().into_iter().collect();
        match metadata.get(KIND_KEY) {
            Some(k) if k == kind => {}
            other => {
                return Err(bad(format!(
                    "expected a {} file, found {}",
                    kind.replace('_', " "),
                    match other {
                        Some(k) => format!("a {}", k.replace('_', " ")),
                        None => "no `pnpt.kind`".into(),
                    }
                )));
            }
        }
        match metadata.get(FORMAT_KEY).map(|f| f.parse::<u32>()) {
            Some(Ok(f)) if f <= FORMAT => {}
            other => return Err(bad(format!("{FORMAT_KEY} {other:?}: this build reads up to {FORMAT}"))),
        }
        let mut tensors = BTreeMap::new();
        for (name, info) in parsed.tensors() {
            let dtype = match info.dtype {
                safetensors::Dtype::F32 => Dtype::F32,
                safetensors::Dtype::U8 => Dtype::U8,
                other => return Err(bad(format!("tensor `{name}`: dtype {other:?}, pnpt stores F32 and U8"))),
            };
            let (s, e) = info.data_offsets;
            tensors.insert(name, (dtype, info.shape.clone(), data_start + s..data_start + e));
        }
        Ok(Self { path: path.to_path_buf(), metadata, tensors, bytes })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole `__metadata__` map.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The header: every metadata entry outside `pnpt.*`, parsed as JSON, as one object.
    pub fn header<H: DeserializeOwned>(&self) -> Result<H> {
        let mut fields = Map::new();
        for (key, text) in self.metadata.iter().filter(|(k, _)| !k.starts_with(RESERVED_PREFIX)) {
            let value = serde_json::from_str(text)
                .map_err(|e| format_err(&self.path, format!("metadata `{key}` is not JSON: {e}")))?;
            fields.insert(key.clone(), value);
        }
        serde_json::from_value(Value::Object(fields)).map_err(|e| format_err(&self.path, format!("header: {e}")))
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    fn get(&self, name: &str, dtype: Dtype) -> Result<(&[usize], &[u8])> {
        let (d, shape, range) =
            self.tensors.get(name).ok_or_else(|| format_err(&self.path, format!("no tensor `{name}`")))?;
        if *d != dtype {
            return Err(format_err(&self.path, format!("tensor `{name}` is {}, expected {}", d.name(), dtype.name())));
        }
        Ok((shape, &self.bytes[range.clone()]))
    }

    /// An `F32` tensor: its shape and values.
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (shape, bytes) = self.get(name, Dtype::F32)?;
        let values = bytes_to_f32(bytes).expect("validated: 4 bytes per element");
        Ok((shape.to_vec(), values))
    }

    /// An `F32` tensor whose shape must be `shape`.
    pub fn f32_shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (got, values) = self.f32(name)?;
        if got != shape {
            return Err(format_err(&self.path, format!("tensor `{name}` has shape {got:?}, expected {shape:?}")));
        }
        Ok(values)
    }

    /// Every tensor as an [`Entry`], in the file's data order: to write the same tensors again
    /// with another header (tools, tests of older headers).
    pub fn entries(&self) -> Vec<Entry> {
        let mut entries: Vec<(usize, Entry)> = self
            .tensors
            .iter()
            .map(|(name, (dtype, shape, range))| {
                let bytes = self.bytes[range.clone()].to_vec();
                (range.start, Entry { name: name.clone(), dtype: *dtype, shape: shape.clone(), bytes })
            })
            .collect();
        entries.sort_by_key(|(start, _)| *start);
        entries.into_iter().map(|(_, e)| e).collect()
    }

    /// The bytes of a `U8` tensor.
    pub fn u8(&self, name: &str) -> Result<&[u8]> {
        Ok(self.get(name, Dtype::U8)?.1)
    }
}

#[cfg(test)]
#[path = "tensor_file_tests.rs"]
mod tests;
