//! The request rewrite of the gateway, pure: a caller's multipart body and a policy's
//! document in, the body orq receives out.
//!
//! - The policy's document becomes the `orq` form field (the first part).
//! - A caller's own `orq` field and the top-level router fields orq also accepts
//!   ([`ROUTER_FIELDS`]) are removed, compared case-insensitively and after percent-decoding,
//!   so no spelling of them reaches orq.
//! - Every other part — its headers and its bytes, the image included — passes unchanged.
//!
//! Framing: the body is buffered (bounded by `--max-body-bytes`) and split in place —
//! `memchr::memmem` finds the delimiters, `httparse` parses each part's header block. Every
//! kept part's data is a `Bytes` slice of the request body, so the image is never copied; the
//! output is a list of chunks. The tests parse every rewritten body back with multer, an
//! independent parser (docs/architecture.md, "Design notes", says why not multer here).
//!
//! The field *name* that decides removal is parsed strictly by [`disposition_name`]
//! (RFC 7578 / RFC 6266), and a part whose disposition is missing, repeated, ambiguous
//! (`name*`, two `name`s) or not `form-data` is refused: a lenient parser here and a
//! different one at orq are how a caller would smuggle its own `orq` field past the policy.
//! Kept parts are forwarded with their header lines re-serialized from what was parsed (the
//! same lines that were judged), and their data unchanged.

use std::borrow::Cow;

use bytes::Bytes;
use memchr::memmem;

/// The form field that carries the router configuration.
pub const ORQ_FIELD: &str = "orq";

/// Top-level fields that orq also reads as router configuration; the policy replaces them.
pub const ROUTER_FIELDS: [&str; 6] = ["name", "retry", "fallbacks", "cache", "load_balancer", "timeout"];

/// Why a body cannot be rewritten. Each maps to a 4xx answer; nothing goes upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// Missing or non-multipart `Content-Type`.
    #[error("Content-Type must be multipart/form-data with a boundary, got {0:?}")]
    NotMultipart(String),
    /// The body is not well-formed multipart.
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    /// A part's `Content-Disposition` is not one the gateway can read unambiguously.
    #[error("multipart part {index}: {reason}")]
    AmbiguousPart {
        /// Index of the part (0-based).
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A rewritten body, ready to send.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// `multipart/form-data; boundary=…` for the new body.
    pub content_type: String,
    /// The body, in order.
    pub chunks: Vec<Bytes>,
    /// Total length of `chunks`.
    pub len: u64,
    /// Names of the caller's fields that were removed, in order.
    pub removed: Vec<String>,
    /// Names of the fields kept, in order.
    pub kept: Vec<String>,
}

impl Rewritten {
    /// The body as one contiguous buffer (tests, small bodies).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len as usize);
        for chunk in &self.chunks {
            out.extend_from_slice(chunk);
        }
        out
    }
}

/// Whether a field of this name is the caller's router configuration (removed).
pub fn is_router_field(name: &str) -> bool {
    let known = |n: &str| n.eq_ignore_ascii_case(ORQ_FIELD) || ROUTER_FIELDS.iter().any(|f| n.eq_ignore_ascii_case(f));
    known(name) || percent_decode(name).is_some_and(|decoded| known(&decoded))
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `name` parameter of a `Content-Disposition: form-data; …` header value, parsed
/// strictly: disposition type `form-data`, parameters `token=token` or `token="quoted"`,
/// names case-insensitive, exactly one `name`, no `name*`.
pub fn disposition_name(value: &[u8]) -> Result<Cow<'_, str>, String> {
    let text = std::str::from_utf8(value).map_err(|_| "Content-Disposition is not UTF-8".to_string())?;
    let mut rest = text.trim_start();
    let kind_end = rest.find(|c: char| c == ';' || c.is_ascii_whitespace()).unwrap_or(rest.len());
    if !rest[..kind_end].eq_ignore_ascii_case("form-data") {
        return Err(format!("Content-Disposition must be form-data, got {:?}", &rest[..kind_end]));
    }
    rest = rest[kind_end..].trim_start();
    let mut name: Option<Cow<'_, str>> = None;
    while !rest.is_empty() {
        rest =
            rest.strip_prefix(';').ok_or_else(|| "Content-Disposition: expected ';' between parameters".to_string())?;
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let eq = rest.find('=').ok_or_else(|| "Content-Disposition: parameter without '='".to_string())?;
        let param = rest[..eq].trim();
        if param.is_empty() || !param.bytes().all(is_token_byte) {
            return Err(format!("Content-Disposition: invalid parameter name {param:?}"));
        }
        rest = rest[eq + 1..].trim_start();
        // Borrowed from the header unless a quoted value has escapes to undo.
        let value: Cow<'_, str>;
        if let Some(quoted) = rest.strip_prefix('"') {
            let (unquoted, end) = quoted_value(quoted)?;
            value = unquoted;
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(|c: char| c == ';' || c.is_ascii_whitespace()).unwrap_or(rest.len());
            let token = &rest[..end];
            if token.is_empty() || !token.bytes().all(is_token_byte) {
                return Err(format!("Content-Disposition: invalid unquoted value {token:?}"));
            }
            value = Cow::Borrowed(token);
            rest = rest[end..].trim_start();
        }
        if param.eq_ignore_ascii_case("name*") {
            return Err("Content-Disposition: name* (RFC 5987 encoding) is not accepted for form fields".to_string());
        }
        if param.eq_ignore_ascii_case("name") {
            if name.is_some() {
                return Err("Content-Disposition: two name parameters".to_string());
            }
            name = Some(value);
        }
    }
    name.ok_or_else(|| "Content-Disposition has no name parameter".to_string())
}

/// The value of a quoted parameter, `quoted` being what follows its opening quote, and where
/// its closing quote is. Borrowed unless it has escapes to undo; a line break or no closing
/// quote is refused.
fn quoted_value(quoted: &str) -> Result<(Cow<'_, str>, usize), String> {
    // The usual value, without escapes: found by its bytes (UTF-8 never hides an ASCII byte
    // inside a character), nothing decoded.
    let stop = quoted.bytes().position(|b| matches!(b, b'"' | b'\\' | b'\r' | b'\n'));
    if let Some(end) = stop
        && quoted.as_bytes()[end] == b'"'
    {
        return Ok((Cow::Borrowed(&quoted[..end]), end));
    }
    let mut out: Option<String> = None;
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => out.get_or_insert_with(|| quoted[..i].to_string()).push(escaped),
                None => break,
            },
            '"' => return Ok((out.map_or(Cow::Borrowed(&quoted[..i]), Cow::Owned), i)),
            '\r' | '\n' => return Err("Content-Disposition: line break in a quoted value".to_string()),
            c => {
                if let Some(out) = &mut out {
                    out.push(c);
                }
            }
        }
    }
    Err("Content-Disposition: unterminated quoted value".to_string())
}

/// Every value a lenient reader could take for the field name: whatever follows any
/// `name` (any case, anywhere, also inside quoted values and `filename`) and `=`. Borrowed
/// from `value` where nothing had to be decoded (no allocation for the usual header).
fn lenient_names(value: &[u8]) -> impl Iterator<Item = Cow<'_, str>> {
    let starts = memchr::memchr2_iter(b'n', b'N', value);
    starts.filter(|&at| value.get(at..at + 4).is_some_and(|w| w.eq_ignore_ascii_case(b"name"))).filter_map(|at| {
        let rest = &value[at + 4..];
        let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace() || **b == b'*').count()..];
        let rest = rest.strip_prefix(b"=")?;
        let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
        let (raw, quoted) = match rest.strip_prefix(b"\"") {
            Some(q) => (&q[..memchr::memchr(b'"', q).unwrap_or(q.len())], true),
            None => (
                &rest[..rest
                    .iter()
                    .position(|b| *b == b';' || *b == b'"' || b.is_ascii_whitespace())
                    .unwrap_or(rest.len())],
                false,
            ),
        };
        let text = String::from_utf8_lossy(raw);
        // `name*=UTF-8''orq`: the value after the charset and language.
        let text = match text {
            Cow::Borrowed(t) if !quoted => Cow::Borrowed(t.rsplit_once("''").map_or(t, |(_, v)| v)),
            Cow::Owned(t) if !quoted && t.contains("''") => {
                Cow::Owned(t.rsplit_once("''").map_or("", |(_, v)| v).to_string())
            }
            text => text,
        };
        Some(if text.contains('\\') { Cow::Owned(text.replace('\\', "")) } else { text })
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~*'%".contains(&b)
}

/// The boundary of a `multipart/form-data` content type (RFC 2046: 1 to 70 characters,
/// as a token or a quoted string).
pub fn boundary_of(content_type: Option<&str>) -> Result<&str, RewriteError> {
    let ct = content_type.unwrap_or("");
    let refuse = || RewriteError::NotMultipart(ct.to_string());
    let mut params = ct.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(refuse());
    }
    let mut boundary = None;
    for param in params {
        let Some((name, value)) = param.split_once('=') else { continue };
        if name.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            boundary = Some(value);
        }
    }
    match boundary {
        Some(b) if !b.is_empty() && b.len() <= 70 && b.bytes().all(|c| (0x20..0x7f).contains(&c)) => Ok(b),
        _ => Err(refuse()),
    }
}

/// One part of the caller's body: its header lines, re-serialized, and its data (a slice of
/// the body, not a copy).
struct Part {
    head: Bytes,
    data: Bytes,
    name: String,
}

/// Splits `body` at `boundary` (RFC 2046 §5.1.1: a delimiter is `--boundary` at the start or
/// after CRLF, then optional transport padding and CRLF; the close delimiter ends in `--`).
fn split(body: &Bytes, boundary: &str) -> Result<Vec<Part>, RewriteError> {
    let malformed = |m: &str| RewriteError::Malformed(m.to_string());
    let dash = format!("--{boundary}");
    let delimiter = format!("\r\n{dash}");
    let finder = memmem::Finder::new(delimiter.as_bytes());
    let mut pos = if body.starts_with(dash.as_bytes()) {
        dash.len()
    } else {
        finder.find(body).ok_or_else(|| malformed("no boundary delimiter"))? + delimiter.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            break; // close delimiter; the epilogue is ignored
        }
        let padding = rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
        if !rest[padding..].starts_with(b"\r\n") {
            return Err(malformed("boundary delimiter not followed by CRLF"));
        }
        let start = pos + padding + 2;
        let Some(len) = finder.find(&body[start..]) else {
            return Err(malformed("no close delimiter (body truncated?)"));
        };
        let end = start + len;
        parts.push(part(body, start, end, parts.len())?);
        pos = end + delimiter.len();
    }
    if parts.is_empty() {
        return Err(malformed("no parts"));
    }
    Ok(parts)
}

fn part(body: &Bytes, start: usize, end: usize, index: usize) -> Result<Part, RewriteError> {
    let Some(head) = part_head(body, start, end, index)? else {
        return Err(RewriteError::Malformed(format!("part {index}: header block not terminated")));
    };
    let name = head.name.into_owned();
    Ok(Part { head: head.head, data: body.slice(start + head.len..end), name })
}

/// A part's header block, judged: its length in the body, its lines re-serialized, its name.
pub(crate) struct PartHead<'a> {
    /// Bytes of the header block, the blank line included.
    pub len: usize,
    /// The header lines as forwarded, each `name: value` as parsed, blank line included: the
    /// caller's own bytes where they are already written so, else written out.
    pub head: Bytes,
    /// The field name.
    pub name: Cow<'a, str>,
}

/// Parses and judges the header block at the start of `source[start..end]` (a part's bytes);
/// `None` when it holds no complete header block. The lines forwarded are the ones parsed,
/// each `name: value`, re-serialized; a block already written that way is forwarded as the
/// slice of `source` it is (no copy).
pub(crate) fn part_head(
    source: &Bytes,
    start: usize,
    end: usize,
    index: usize,
) -> Result<Option<PartHead<'_>>, RewriteError> {
    let raw = &source[start..end];
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let (header_len, headers) = match httparse::parse_headers(raw, &mut headers) {
        Ok(httparse::Status::Complete((len, headers))) => (len, headers),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(RewriteError::Malformed(format!("part {index}: {e}"))),
    };
    let mut dispositions = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-disposition"));
    let disposition = match (dispositions.next(), dispositions.next()) {
        (Some(d), None) => d,
        (None, _) => return Err(RewriteError::AmbiguousPart { index, reason: "no Content-Disposition header".into() }),
        (Some(_), Some(_)) => {
            return Err(RewriteError::AmbiguousPart { index, reason: "two Content-Disposition headers".into() });
        }
    };
    let name = disposition_name(disposition.value).map_err(|reason| RewriteError::AmbiguousPart { index, reason })?;
    if !is_router_field(&name)
        && let Some(hidden) = lenient_names(disposition.value).find(|n| is_router_field(n))
    {
        return Err(RewriteError::AmbiguousPart {
            index,
            reason: format!(
                "Content-Disposition names field {name:?} but a lenient reader would see {hidden:?} in it; refused so no reader can take it for router configuration"
            ),
        });
    }
    let head = if serialized_as(raw, headers, header_len) {
        source.slice(start..start + header_len)
    } else {
        let mut head = Vec::with_capacity(header_len + 8);
        for h in headers.iter() {
            for piece in [h.name.as_bytes(), b": ", h.value, b"\r\n"] {
                head.extend_from_slice(piece);
            }
        }
        head.extend_from_slice(b"\r\n");
        Bytes::from(head)
    };
    Ok(Some(PartHead { len: header_len, head, name }))
}

/// Whether the first `len` bytes of `raw` are `headers` re-serialized (`name: value` lines, a
/// blank line): byte for byte what the gateway would write for them.
fn serialized_as(raw: &[u8], headers: &[httparse::Header<'_>], len: usize) -> bool {
    let mut rest = raw;
    for h in headers {
        for piece in [h.name.as_bytes(), b": ", h.value, b"\r\n"] {
            match rest.strip_prefix(piece) {
                Some(after) => rest = after,
                None => return false,
            }
        }
    }
    rest.starts_with(b"\r\n") && raw.len() - rest.len() + 2 == len
}

/// The first chunks of every rewritten body: the policy's document as the `orq` part, after
/// `line` (`--boundary` and CRLF).
pub(crate) fn orq_part(line: Bytes, document: &Bytes) -> [Bytes; 4] {
    [
        line,
        Bytes::from_static(b"Content-Disposition: form-data; name=\"orq\"\r\n\r\n"),
        document.clone(),
        Bytes::from_static(b"\r\n"),
    ]
}

/// Rewrites `body` (multipart with `boundary`) so that `document` is its `orq` field.
pub fn rewrite(body: &Bytes, boundary: &str, document: &Bytes) -> Result<Rewritten, RewriteError> {
    let mut removed = Vec::new();
    let mut parts = Vec::new();
    for part in split(body, boundary)? {
        if is_router_field(&part.name) {
            removed.push(part.name);
        } else {
            parts.push(part);
        }
    }
    let boundary = choose_boundary(boundary, document, parts.iter().map(|p| [&p.head, &p.data]));
    let delimiter = Bytes::from(format!("--{boundary}\r\n"));
    let separator = Bytes::from_static(b"\r\n");
    let mut chunks = Vec::with_capacity(parts.len() * 4 + 5);
    chunks.extend(orq_part(delimiter.clone(), document));
    let mut kept = Vec::with_capacity(parts.len());
    for part in parts {
        chunks.push(delimiter.clone());
        chunks.push(part.head);
        chunks.push(part.data);
        chunks.push(separator.clone());
        kept.push(part.name);
    }
    chunks.push(Bytes::from(format!("--{boundary}--\r\n")));
    let len = chunks.iter().map(|c| c.len() as u64).sum();
    Ok(Rewritten { content_type: format!("multipart/form-data; boundary={boundary}"), chunks, len, removed, kept })
}

/// The caller's boundary, unless the policy document contains it: a caller's part cannot
/// hold a delimiter (`CRLF--boundary`, which is how it was delimited), so only the document
/// could. Then a fresh one that neither the document nor any part contains.
fn choose_boundary<'a>(
    original: &str,
    document: &Bytes,
    parts: impl Iterator<Item = [&'a Bytes; 2]> + Clone,
) -> String {
    let in_document = |candidate: &str| memmem::find(document, format!("--{candidate}").as_bytes()).is_some();
    if !in_document(original) {
        return original.to_string();
    }
    let occurs = |candidate: &str| {
        let needle = format!("--{candidate}");
        let finder = memmem::Finder::new(needle.as_bytes());
        finder.find(document).is_some() || parts.clone().flatten().any(|p| finder.find(p).is_some())
    };
    let mut seed = sha2_seed(document);
    loop {
        let candidate = format!("routerpolicy-{seed:016x}");
        if !occurs(&candidate) {
            return candidate;
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    }
}

fn sha2_seed(document: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(document);
    u64::from_be_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multipart body from (headers, data) parts.
    fn body(boundary: &str, parts: &[(&str, &[u8])]) -> Bytes {
        let mut out = Vec::new();
        for (headers, data) in parts {
            out.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        Bytes::from(out)
    }

    fn run(body: Bytes, boundary: &str, document: &str) -> Result<Rewritten, RewriteError> {
        rewrite(&body, boundary, &Bytes::from(document.to_string()))
    }

    /// Parses a rewritten body back into (name, headers, data) with multer.
    fn parse(rewritten: &Rewritten) -> Vec<(String, String, Vec<u8>)> {
        let boundary = boundary_of(Some(&rewritten.content_type)).expect("boundary");
        let data = Bytes::from(rewritten.to_vec());
        futures::executor::block_on(async move {
            let mut m = multer::Multipart::new(
                futures::stream::once(async move { Ok::<_, std::io::Error>(data) }),
                boundary.to_string(),
            );
            let mut out = Vec::new();
            while let Some(field) = m.next_field().await.expect("well-formed") {
                let name = field.name().unwrap_or_default().to_string();
                let ct = field.content_type().map(|c| c.to_string()).unwrap_or_default();
                out.push((name, ct, field.bytes().await.expect("data").to_vec()));
            }
            out
        })
    }

    const DOC: &str = r#"{"retry":{"count":3,"on_codes":[429]}}"#;

    #[test]
    fn document_replaces_callers_orq_and_router_fields_are_removed() {
        let image: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let b = body(
            "XyZ",
            &[
                ("Content-Disposition: form-data; name=\"orq\"", br#"{"retry":{"count":0}}"#),
                (
                    "Content-Disposition: form-data; name=\"image\"; filename=\"cat.png\"\r\nContent-Type: image/png",
                    &image,
                ),
                ("Content-Disposition: form-data; name=\"model\"", b"openai/dall-e-2"),
                ("Content-Disposition: form-data; name=\"fallbacks\"", b"[]"),
                ("Content-Disposition: form-data; name=load_balancer", b"{}"),
                ("Content-Disposition: form-data; name=\"n\"", b"2"),
            ],
        );
        let out = run(b, "XyZ", DOC).expect("rewrites");
        assert_eq!(out.removed, ["orq", "fallbacks", "load_balancer"]);
        assert_eq!(out.kept, ["image", "model", "n"]);
        let parts = parse(&out);
        let names: Vec<_> = parts.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["orq", "image", "model", "n"]);
        assert_eq!(parts[0].2, DOC.as_bytes());
        assert_eq!(parts[1].1, "image/png");
        assert_eq!(parts[1].2, image, "image bytes pass unchanged");
        assert_eq!(parts[2].2, b"openai/dall-e-2");
        assert_eq!(out.len, out.to_vec().len() as u64);
    }

    #[test]
    fn part_headers_pass_verbatim() {
        let b = body(
            "b",
            &[(
                "Content-Disposition: form-data; name=\"image\"; filename=\"a b.png\"\r\nContent-Type: image/png\r\nX-Extra: 1",
                b"PNG",
            )],
        );
        let out = run(b, "b", DOC).expect("rewrites");
        let text = String::from_utf8_lossy(&out.to_vec()).to_string();
        assert!(text.contains("Content-Disposition: form-data; name=\"image\"; filename=\"a b.png\"\r\n"), "{text}");
        assert!(text.contains("Content-Type: image/png\r\nX-Extra: 1\r\n\r\nPNG\r\n"), "{text}");
    }

    #[test]
    fn router_fields_are_removed_in_any_spelling() {
        for spelling in ["ORQ", "Orq", "%6Frq", "Retry", "TIMEOUT", "name", "%6e%61%6d%65"] {
            assert!(is_router_field(spelling), "{spelling}");
        }
        for kept in ["image", "model", "orq2", "names", "user", "response_format", "%zz"] {
            assert!(!is_router_field(kept), "{kept}");
        }
    }

    #[test]
    fn ambiguous_dispositions_are_refused() {
        let cases = [
            "Content-Disposition: form-data; name*=UTF-8''orq",
            "Content-Disposition: form-data; name=\"image\"; NAME=\"orq\"",
            "Content-Disposition: attachment; name=\"orq\"",
            "Content-Disposition: form-data",
            "Content-Disposition: form-data; name=\"unterminated",
            "Content-Type: text/plain",
            "Content-Disposition: form-data; name=\"a\"\r\nContent-Disposition: form-data; name=\"orq\"",
            "Content-Disposition: form-data; name=\"a\"\r\ncontent-disposition: form-data; name=\"orq\"",
        ];
        for headers in cases {
            let b = body("b", &[(headers, b"x")]);
            let err = run(b, "b", DOC).expect_err(headers);
            assert!(matches!(err, RewriteError::AmbiguousPart { index: 0, .. }), "{headers}: {err:?}");
        }
    }

    #[test]
    fn a_router_field_hidden_where_a_lenient_reader_finds_it_is_refused() {
        for headers in [
            "Content-Disposition: form-data; filename=\"x; name=orq\"; name=\"image\"",
            "Content-Disposition: form-data; name=\"image\"; filename=\"a\"; xname=\"retry\"",
            "Content-Disposition: form-data; filename=\"orq\"; name=\"image\"",
        ] {
            let b = body("b", &[(headers, b"x")]);
            let err = run(b, "b", DOC).expect_err(headers);
            assert!(matches!(err, RewriteError::AmbiguousPart { .. }), "{headers}: {err:?}");
        }
        let fine = body("b", &[("Content-Disposition: form-data; name=\"image\"; filename=\"orq.png\"", b"x")]);
        assert!(run(fine, "b", DOC).is_ok());
    }

    #[test]
    fn disposition_parsing_accepts_the_common_forms() {
        assert_eq!(disposition_name(b"form-data; name=\"image\"; filename=\"x.png\"").as_deref(), Ok("image"));
        assert_eq!(disposition_name(b"Form-Data;Name=image").as_deref(), Ok("image"));
        assert_eq!(disposition_name(br#"form-data; name="a\"b""#).as_deref(), Ok("a\"b"));
        assert_eq!(disposition_name(b"form-data; filename=\"x\"; name=\"n\";").as_deref(), Ok("n"));
    }

    #[test]
    fn malformed_bodies_and_content_types_are_refused() {
        assert!(matches!(boundary_of(Some("application/json")), Err(RewriteError::NotMultipart(_))));
        assert!(matches!(boundary_of(None), Err(RewriteError::NotMultipart(_))));
        assert!(matches!(boundary_of(Some("multipart/form-data")), Err(RewriteError::NotMultipart(_))));
        assert_eq!(boundary_of(Some("Multipart/Form-Data; charset=utf-8; boundary=\"a b\"")), Ok("a b"));
        assert_eq!(
            boundary_of(Some("multipart/form-data; boundary=----WebKitFormBoundary7MA4")),
            Ok("----WebKitFormBoundary7MA4")
        );
        let long = format!("multipart/form-data; boundary={}", "x".repeat(71));
        assert!(boundary_of(Some(&long)).is_err());
        assert!(boundary_of(Some("multipart/mixed; boundary=a")).is_err());
        let err = run(Bytes::from_static(b"not multipart at all"), "b", DOC).expect_err("refused");
        assert!(matches!(err, RewriteError::Malformed(_)), "{err:?}");
        for broken in [
            &b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nxx"[..],
            b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\nxx\r\n--b--",
            b"--bX\r\n",
            b"--b--\r\n",
            b"--b\r\nBad Header\r\n\r\nx\r\n--b--",
        ] {
            let err = run(Bytes::copy_from_slice(broken), "b", DOC).expect_err("refused");
            assert!(matches!(err, RewriteError::Malformed(_)), "{}: {err:?}", String::from_utf8_lossy(broken));
        }
    }

    #[test]
    fn a_document_containing_the_boundary_gets_a_fresh_boundary() {
        let b = body("zz", &[("Content-Disposition: form-data; name=\"image\"", b"data")]);
        let doc = r#"{"name":"--zz"}"#;
        let out = run(b, "zz", doc).expect("rewrites");
        assert!(out.content_type.contains("routerpolicy-"), "{}", out.content_type);
        let parts = parse(&out);
        assert_eq!(parts[0].2, doc.as_bytes());
        assert_eq!(parts[1].2, b"data");
    }

    #[test]
    fn preamble_epilogue_and_transport_padding_are_understood() {
        let b = Bytes::from_static(
            b"preamble\r\n--b  \t\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nx\r\n-b--\r\n--b--\r\nepilogue",
        );
        let parts = parse(&run(b, "b", DOC).expect("rewrites"));
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].0, "image");
        assert_eq!(parts[1].2, b"x\r\n-b--", "a near-delimiter inside data is data");
    }

    #[test]
    fn image_data_is_a_slice_of_the_request_not_a_copy() {
        let b = body("b", &[("Content-Disposition: form-data; name=\"image\"", &[7u8; 4096])]);
        let out = run(b.clone(), "b", DOC).expect("rewrites");
        let data = out.chunks.iter().find(|c| c.len() == 4096).expect("image chunk");
        let inside = b.as_ptr() as usize..b.as_ptr() as usize + b.len();
        assert!(inside.contains(&(data.as_ptr() as usize)), "points into the request body");
    }

    #[test]
    fn a_header_block_written_as_forwarded_is_a_slice_and_any_other_is_rewritten() {
        let canonical = "Content-Disposition: form-data; name=\"image\"\r\nContent-Type: image/png";
        let b = body("b", &[(canonical, b"PNG")]);
        let out = run(b.clone(), "b", DOC).expect("rewrites");
        let head =
            out.chunks.iter().find(|c| c.starts_with(b"Content-Disposition: form-data; name=\"image\"")).expect("head");
        assert_eq!(&head[..], format!("{canonical}\r\n\r\n").as_bytes());
        let inside = b.as_ptr() as usize..b.as_ptr() as usize + b.len();
        assert!(inside.contains(&(head.as_ptr() as usize)), "the caller's block, not a copy");
        // Spacing the gateway does not write: the parsed lines are written out instead.
        let spaced =
            body("b", &[("Content-Disposition:   form-data; name=\"image\"\r\nContent-Type:image/png", b"PNG")]);
        let out = run(spaced.clone(), "b", DOC).expect("rewrites");
        let text = String::from_utf8_lossy(&out.to_vec()).to_string();
        assert!(
            text.contains("Content-Disposition: form-data; name=\"image\"\r\nContent-Type: image/png\r\n\r\nPNG"),
            "{text}"
        );
    }

    #[test]
    fn quoted_values_are_borrowed_unless_escaped_and_refused_when_broken() {
        assert!(matches!(quoted_value("image\"; x"), Ok((Cow::Borrowed("image"), 5))));
        assert!(matches!(quoted_value("a\\\"b\" rest"), Ok((Cow::Owned(v), 4)) if v == "a\"b"));
        assert!(matches!(quoted_value("\u{e9}t\u{e9}\""), Ok((Cow::Borrowed("\u{e9}t\u{e9}"), 5))));
        for broken in ["no end", "line\r\nbreak\"", "bare\nbreak\"", "escape at the end\\"] {
            assert!(quoted_value(broken).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn serialized_as_holds_only_for_the_exact_bytes() {
        let check = |raw: &[u8]| {
            let mut headers = [httparse::EMPTY_HEADER; 4];
            let Ok(httparse::Status::Complete((len, parsed))) = httparse::parse_headers(raw, &mut headers) else {
                panic!("parses")
            };
            serialized_as(raw, parsed, len)
        };
        assert!(check(b"A: 1\r\nB: two\r\n\r\ndata"));
        assert!(check(b"\r\ndata"));
        assert!(!check(b"A:1\r\n\r\n"));
        assert!(!check(b"A: 1 \r\n\r\n"));
        assert!(!check(b"A: 1\n\r\n"));
        assert!(!check(b"A: 1\r\n\n"));
    }

    #[test]
    fn only_router_fields_still_yields_the_document() {
        let b = body("q", &[("Content-Disposition: form-data; name=\"orq\"", b"{}")]);
        let parts = parse(&run(b, "q", DOC).expect("rewrites"));
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].2, DOC.as_bytes());
    }
}
