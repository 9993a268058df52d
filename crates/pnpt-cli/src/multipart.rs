//! The one `multipart/form-data` case the service needs: the bytes of an uploaded file. Written
//! by hand (about 50 lines) instead of pulling in a multipart crate and its encodings.

/// The boundary of a `multipart/form-data` content type, `None` for any other type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// The file of a form: the part named `image` or `file`, else the first part with a file name,
/// else the first part. Errors say what is malformed.
pub fn file_part<'a>(body: &'a [u8], boundary: &str) -> Result<&'a [u8], String> {
    if boundary.is_empty() {
        return Err("multipart body without a boundary".into());
    }
    let delim = format!("--{boundary}");
    let mut at = find(body, delim.as_bytes(), 0).ok_or("multipart body without its boundary")? + delim.len();
    let mut parts: Vec<(String, bool, &[u8])> = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            break;
        }
        let head_start = at + 2; // the CRLF after the boundary
        let head_end =
            find(body, b"\r\n\r\n", head_start).ok_or("multipart part without a blank line after its headers")?;
        let head = String::from_utf8_lossy(&body[head_start..head_end]).to_ascii_lowercase();
        let name = head.split("name=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("").to_string();
        let has_file = head.contains("filename=");
        let end = find(body, format!("\r\n{delim}").as_bytes(), head_end + 4)
            .ok_or("multipart part is not closed by the boundary (truncated body?)")?;
        parts.push((name, has_file, &body[head_end + 4..end]));
        at = end + 2 + delim.len();
    }
    let pick = parts
        .iter()
        .find(|(n, _, _)| n == "image" || n == "file")
        .or_else(|| parts.iter().find(|p| p.1))
        .or(parts.first());
    pick.map(|p| p.2).ok_or_else(|| "multipart body without any part".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_file_part() {
        assert_eq!(boundary("multipart/form-data; boundary=\"xyz\"").as_deref(), Some("xyz"));
        assert_eq!(boundary("image/png"), None);
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--xyz\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--xy\r\n--xyz--\r\n";
        assert_eq!(file_part(body, "xyz").unwrap(), b"\x89PNG\r\n--xy");
        assert!(file_part(&body[..60], "xyz").unwrap_err().contains("truncated"));
        assert!(file_part(b"no boundary here", "xyz").is_err());
    }
}
