//! The `.npy` header: parsing the dict literal numpy writes and writing it byte for byte.

use std::io::{self, Read};
use std::path::Path;

use super::{ALIGN, GROWTH_AXIS_MAX_DIGITS, MAGIC};
use crate::Error;

/// The parsed header dictionary.
#[derive(Debug, PartialEq)]
pub(super) struct Header {
    pub(super) descr: String,
    pub(super) fortran_order: bool,
    pub(super) shape: Vec<usize>,
}

/// Text right after `'key':` in a Python dict literal.
fn value_of<'a>(dict: &'a str, key: &str) -> Result<&'a str, String> {
    let at = [format!("'{key}'"), format!("\"{key}\"")]
        .iter()
        .find_map(|k| dict.find(k.as_str()).map(|i| i + k.len()))
        .ok_or_else(|| format!("no {key:?} key"))?;
    let rest = dict[at..].trim_start();
    rest.strip_prefix(':').map(str::trim_start).ok_or_else(|| format!("no ':' after {key:?}"))
}

fn parse_header(text: &str) -> Result<Header, String> {
    let dict = text.trim();
    if !(dict.starts_with('{') && dict.ends_with('}')) {
        return Err(format!("not a dict literal: {dict:?}"));
    }
    let v = value_of(dict, "descr")?;
    let descr = v
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"')
        .and_then(|q| v[1..].split(q).next())
        .ok_or_else(|| format!("descr is not a simple string (structured dtype?): {v:.40}"))?
        .to_string();
    let v = value_of(dict, "fortran_order")?;
    let fortran_order = if v.starts_with("True") {
        true
    } else if v.starts_with("False") {
        false
    } else {
        return Err(format!("fortran_order is neither True nor False: {v:.20}"));
    };
    let v = value_of(dict, "shape")?;
    let inner = v
        .strip_prefix('(')
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| format!("shape is not a tuple: {v:.40}"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        // Python 2 wrote long ints as `3L`.
        .map(|s| s.trim_end_matches('L').parse::<usize>().map_err(|e| format!("shape entry {s:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Header { descr, fortran_order, shape })
}

/// numpy's header bytes (magic, version, length, padded dict) for a C-order array.
pub(super) fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_repr = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = shape.first() {
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.to_string().len())));
    }
    let hlen = dict.len() + 1; // + '\n'
    // Like numpy: always pad (1..=ALIGN spaces), and use version 2 only when 1's u16 length overflows.
    let pad_for = |len_bytes: usize| ALIGN - (6 + 2 + len_bytes + hlen) % ALIGN;
    let (version, len_bytes) = if hlen + pad_for(2) <= u16::MAX as usize { (1u8, 2) } else { (2u8, 4) };
    let pad = pad_for(len_bytes);
    let mut out = Vec::with_capacity(6 + 2 + len_bytes + hlen + pad);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    let total = (hlen + pad) as u32;
    if version == 1 {
        out.extend_from_slice(&(total as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&total.to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// Reads a header from `r`, returning it and the number of bytes it took.
pub(super) fn read_header(r: &mut impl Read, path: &Path) -> Result<(Header, u64), Error> {
    let io_err = |source| Error::Io { path: path.to_path_buf(), source };
    let short = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof { Error::BadMagic { path: path.to_path_buf() } } else { io_err(e) }
    };
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(short)?;
    if &pre[..6] != MAGIC {
        return Err(Error::BadMagic { path: path.to_path_buf() });
    }
    let (major, minor) = (pre[6], pre[7]);
    let len_bytes = match major {
        1 => 2,
        2 | 3 => 4,
        _ => return Err(Error::UnsupportedVersion { path: path.to_path_buf(), major, minor }),
    };
    let bad = |reason: String| Error::BadHeader { path: path.to_path_buf(), reason };
    let mut len = [0u8; 4];
    r.read_exact(&mut len[..len_bytes]).map_err(|_| bad("file ends inside the header length".into()))?;
    let hlen = u32::from_le_bytes(len) as usize;
    if hlen > 1 << 24 {
        return Err(bad(format!("header length {hlen} is implausible")));
    }
    let mut text = vec![0u8; hlen];
    r.read_exact(&mut text).map_err(|_| bad(format!("file ends inside the {hlen}-byte header")))?;
    // Versions 1 and 2 are latin-1, 3 is UTF-8; the dict itself is ASCII either way.
    let text = String::from_utf8(text).map_err(|_| bad("header is not ASCII/UTF-8 text".into()))?;
    let header = parse_header(&text).map_err(bad)?;
    Ok((header, (8 + len_bytes + hlen) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_variants() {
        let h = parse_header("{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(3L, 4L)}  \n").unwrap();
        assert_eq!(h, Header { descr: "<f4".into(), fortran_order: false, shape: vec![3, 4] });
        let h = parse_header("{'shape': (7,), 'fortran_order': True, 'descr': '|u1', }").unwrap();
        assert_eq!(h, Header { descr: "|u1".into(), fortran_order: true, shape: vec![7] });
        for bad in [
            "'descr': '<f4'",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, x)}",
            "{'descr': '<f4', 'fortran_order': False}",
        ] {
            assert!(parse_header(bad).is_err(), "{bad}");
        }
    }
}
