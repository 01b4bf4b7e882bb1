//! The rewrite as the body arrives, pure: the same rules as [`crate::gateway::rewrite`] (the
//! policy's document becomes the `orq` part; the caller's `orq` and router fields go; every
//! other part passes with its judged header lines and its bytes), fed one frame at a time,
//! giving the chunks to send upstream as soon as they are known.
//!
//! What it holds between frames is bounded by design, whatever the body's size: a header
//! block (at most [`MAX_HEAD_BYTES`]) or the last `delimiter − 1` bytes of a part's data (which
//! could be the start of the next delimiter). Everything else is handed on as slices of the
//! frames it came in — the image is never copied and never held whole.
//!
//! The output keeps the caller's boundary: a caller's part cannot contain it (it was delimited
//! by it), so only the document could, and then [`StreamRewrite::new`] declines and the caller
//! uses the buffered rewrite, which picks a fresh boundary. Where both accept a body, their
//! outputs hold the same parts (the fuzz target checks it on random bodies cut at random
//! points); where one refuses, so does the other.

use bytes::{Bytes, BytesMut};
use memchr::memmem;

use crate::gateway::rewrite::{RewriteError, is_router_field, orq_part, part_head};

/// The largest header block of one part (Content-Disposition, Content-Type, …).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The longest delimiter: CRLF, `--` and a boundary of at most 70 characters (RFC 2046).
const MAX_DELIMITER: usize = 4 + 70;

/// The end of a header block.
static BLANK_LINE: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\r\n\r\n"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter; `at_start` while nothing has been skipped.
    Preamble { at_start: bool },
    /// Right after a delimiter: the close `--`, or padding and CRLF.
    Delimiter { padded: bool },
    /// A part's header block.
    Head,
    /// A part's data, forwarded or dropped.
    Data { keep: bool },
    /// After the close delimiter (the epilogue is ignored).
    Done,
}

/// One request's rewrite in progress.
pub struct StreamRewrite {
    delimiter: Bytes,
    finder: memmem::Finder<'static>,
    line: Bytes,
    opening: Option<[Bytes; 4]>,
    carry: BytesMut,
    state: State,
    parts: usize,
    /// Names of the caller's fields removed so far.
    pub removed: Vec<String>,
}

impl StreamRewrite {
    /// A rewrite for a body with `boundary`, or `None` when the document contains
    /// `--boundary` (the buffered rewrite handles that). Its first output (the `orq` part)
    /// comes with the caller's first part, once that part's header block is judged: a body
    /// that is garbage from its first byte sends nothing anywhere.
    pub fn new(boundary: &str, document: &Bytes) -> Option<StreamRewrite> {
        // CRLF, `--boundary`, CRLF: the delimiter is all but the last CRLF, a line all but the
        // first (one allocation for the three).
        let text = Bytes::from(format!("\r\n--{boundary}\r\n"));
        let (delimiter, line) = (text.slice(..text.len() - 2), text.slice(2..));
        if memmem::find(document, &delimiter[2..]).is_some() {
            return None;
        }
        let finder = memmem::Finder::new(&delimiter[..]).into_owned();
        let rewrite = StreamRewrite {
            delimiter,
            finder,
            opening: Some(orq_part(line.clone(), document)),
            line,
            carry: BytesMut::new(),
            state: State::Preamble { at_start: true },
            parts: 0,
            removed: Vec::new(),
        };
        Some(rewrite)
    }

    /// The next frame of the body; appends what can be sent now to `out`.
    pub fn feed(&mut self, frame: Bytes, out: &mut Vec<Bytes>) -> Result<(), RewriteError> {
        let window = if self.carry.is_empty() {
            frame
        } else if let State::Data { keep } = self.state
            && self.carry_is_data(&frame)
        {
            // The usual case inside an image: the carried tail is data after all, and the
            // frame is used as it came (no copy). The tail is copied out, so the carry keeps
            // its buffer for the next frame's tail.
            if keep {
                out.push(Bytes::copy_from_slice(&self.carry));
            }
            self.carry.clear();
            frame
        } else {
            self.carry.extend_from_slice(&frame);
            self.carry.split().freeze()
        };
        let used = self.advance(&window, out)?;
        self.carry.extend_from_slice(&window[used..]);
        Ok(())
    }

    /// Bytes held between frames (bounded: a header block, or a delimiter's length).
    pub fn held(&self) -> usize {
        self.carry.len()
    }

    /// Whether no delimiter starts in the carried bytes, given the next frame.
    fn carry_is_data(&self, frame: &Bytes) -> bool {
        let k = self.delimiter.len() - 1;
        if frame.len() < k {
            return false;
        }
        // In a part's data the carry is under a delimiter's length, so the joint fits on the
        // stack (a boundary is at most 70 characters); a longer carry takes the heap.
        let mut stack = [0u8; 2 * MAX_DELIMITER];
        let mut heap = Vec::new();
        let joint: &mut [u8] = match stack.get_mut(..self.carry.len() + k) {
            Some(joint) => joint,
            None => {
                heap.resize(self.carry.len() + k, 0);
                &mut heap
            }
        };
        joint[..self.carry.len()].copy_from_slice(&self.carry);
        joint[self.carry.len()..].copy_from_slice(&frame[..k]);
        self.finder.find(joint).is_none()
    }

    /// The end of the body; appends the close delimiter to `out`, or says what is missing.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), RewriteError> {
        match self.state {
            State::Done => {
                let close = self.line.slice(..self.line.len() - 2);
                out.extend([close, Bytes::from_static(b"--\r\n")]);
                Ok(())
            }
            State::Preamble { .. } => Err(malformed("no boundary delimiter")),
            _ => Err(malformed("no close delimiter (body truncated?)")),
        }
    }

    /// Consumes what it can of `w`; returns how many bytes were used (the rest is carried).
    /// Every `Used` step consumed bytes or moved to a new state, so the loop ends: at the end
    /// of `w` every state waits.
    fn advance(&mut self, w: &Bytes, out: &mut Vec<Bytes>) -> Result<usize, RewriteError> {
        let mut pos = 0;
        loop {
            let step = match self.state {
                State::Done => return Ok(w.len()),
                State::Preamble { at_start } => self.preamble(&w[pos..], at_start),
                State::Delimiter { padded } => self.after_delimiter(&w[pos..], padded)?,
                State::Head => self.head(w, pos, out)?,
                State::Data { keep } => self.data(w, pos, keep, out),
            };
            match step {
                Step::Used(n) => pos += n,
                Step::Wait(n) => return Ok(pos + n),
            }
        }
    }

    fn preamble(&mut self, rest: &[u8], at_start: bool) -> Step {
        let dash = &self.delimiter[2..];
        if at_start {
            if rest.len() < dash.len() && dash.starts_with(rest) {
                return Step::Wait(0);
            }
            if rest.starts_with(dash) {
                self.state = State::Delimiter { padded: false };
                return Step::Used(dash.len());
            }
            self.state = State::Preamble { at_start: false };
            return Step::Used(0);
        }
        match self.finder.find(rest) {
            Some(i) => {
                self.state = State::Delimiter { padded: false };
                Step::Used(i + self.delimiter.len())
            }
            None => Step::Wait(rest.len().saturating_sub(self.delimiter.len() - 1)),
        }
    }

    fn after_delimiter(&mut self, rest: &[u8], padded: bool) -> Result<Step, RewriteError> {
        if !padded {
            if rest.len() < 2 {
                return Ok(Step::Wait(0));
            }
            if rest.starts_with(b"--") {
                if self.parts == 0 {
                    return Err(malformed("no parts"));
                }
                self.state = State::Done;
                return Ok(Step::Used(2));
            }
        }
        let padding = rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
        if padding > 0 && !padded {
            self.state = State::Delimiter { padded: true };
            return Ok(Step::Used(padding));
        }
        let rest = &rest[padding..];
        if rest.len() < 2 {
            return Ok(Step::Wait(padding));
        }
        if !rest.starts_with(b"\r\n") {
            return Err(malformed("boundary delimiter not followed by CRLF"));
        }
        self.state = State::Head;
        Ok(Step::Used(padding + 2))
    }

    fn head(&mut self, w: &Bytes, pos: usize, out: &mut Vec<Bytes>) -> Result<Step, RewriteError> {
        let rest = &w[pos..];
        let index = self.parts;
        // A delimiter matters only where it could cut the header block: up to the block's
        // first blank line and a delimiter's length past it. Looking no further keeps the
        // part's data (an image) from being scanned twice.
        let scope = match BLANK_LINE.find(rest) {
            Some(end) => rest.len().min(end + 4 + self.delimiter.len()),
            None => rest.len(),
        };
        let next = self.finder.find(&rest[..scope]);
        let Some(head) = part_head(w, pos, pos + next.unwrap_or(scope), index)? else {
            if next.is_some() {
                return Err(malformed(&format!("part {index}: header block not terminated")));
            }
            if rest.len() > MAX_HEAD_BYTES {
                return Err(malformed(&format!("part {index}: header block over {MAX_HEAD_BYTES} bytes")));
            }
            return Ok(Step::Wait(0));
        };
        // The block's last CRLF could still begin a delimiter: wait until that is ruled out.
        if next.is_none() && rest.len() < head.len - 2 + self.delimiter.len() {
            return Ok(Step::Wait(0));
        }
        self.parts += 1;
        if let Some(opening) = self.opening.take() {
            out.extend(opening);
        }
        let keep = !is_router_field(&head.name);
        if keep {
            out.extend([self.line.clone(), head.head]);
        } else {
            self.removed.push(head.name.into_owned());
        }
        self.state = State::Data { keep };
        Ok(Step::Used(head.len))
    }

    fn data(&mut self, w: &Bytes, pos: usize, keep: bool, out: &mut Vec<Bytes>) -> Step {
        let rest = &w[pos..];
        match self.finder.find(rest) {
            Some(end) => {
                if keep {
                    if end > 0 {
                        out.push(w.slice(pos..pos + end));
                    }
                    out.push(Bytes::from_static(b"\r\n"));
                }
                self.state = State::Delimiter { padded: false };
                Step::Used(end + self.delimiter.len())
            }
            None => {
                let safe = rest.len().saturating_sub(self.delimiter.len() - 1);
                if keep && safe > 0 {
                    out.push(w.slice(pos..pos + safe));
                }
                Step::Wait(safe)
            }
        }
    }
}

/// What a step did with the bytes in front of it.
enum Step {
    /// Used this many (or none, with a new state): go on.
    Used(usize),
    /// Used this many and needs more bytes.
    Wait(usize),
}

fn malformed(message: &str) -> RewriteError {
    RewriteError::Malformed(message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gateway::rewrite::rewrite;

    const DOC: &[u8] = br#"{"retry":{"count":2}}"#;

    /// Runs the streaming rewrite on `body` cut into pieces of `step` bytes.
    fn streamed(body: &[u8], boundary: &str, step: usize) -> Result<Vec<u8>, RewriteError> {
        let mut rewrite = StreamRewrite::new(boundary, &Bytes::from_static(DOC)).expect("streamable");
        let mut out = Vec::new();
        for piece in body.chunks(step.max(1)) {
            rewrite.feed(Bytes::copy_from_slice(piece), &mut out)?;
            assert!(rewrite.held() <= MAX_HEAD_BYTES + 64, "held {}", rewrite.held());
        }
        rewrite.finish(&mut out)?;
        Ok(out.concat())
    }

    fn buffered(body: &[u8], boundary: &str) -> Result<Vec<u8>, RewriteError> {
        rewrite(&Bytes::copy_from_slice(body), boundary, &Bytes::from_static(DOC)).map(|r| r.to_vec())
    }

    fn body(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"preamble\r\n".to_vec();
        for (headers, data) in parts {
            out.extend_from_slice(format!("--XyZ \t\r\n{headers}\r\n\r\n").as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\nepilogue");
        out
    }

    #[test]
    fn at_every_cut_the_stream_gives_the_bytes_the_buffered_rewrite_gives() {
        let image: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let near_miss = b"\r\n-XyZ\r\n--Xy z\r\n--X\r\n-";
        let input = body(&[
            ("Content-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png", &image),
            ("Content-Disposition: form-data; name=\"orq\"", br#"{"retry":{"count":5}}"#),
            ("Content-Disposition: form-data; name=\"note\"", near_miss),
            ("Content-Disposition: form-data; name=\"retry\"", b"9"),
            ("Content-Disposition: form-data; name=\"empty\"", b""),
        ]);
        let expected = buffered(&input, "XyZ").expect("buffered");
        for step in (1..40).chain([97, 1000, 4096, input.len()]) {
            assert_eq!(streamed(&input, "XyZ", step).expect("streamed"), expected, "cut every {step} bytes");
        }
    }

    #[test]
    fn what_the_buffered_rewrite_refuses_the_stream_refuses_at_every_cut() {
        let refused = [
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno close".to_vec(),
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n--XyZ--\r\n".to_vec(),
            b"--XyZ\r\nContent-Disposition: form-data; name*=UTF-8''orq\r\n\r\nx\r\n--XyZ--".to_vec(),
            b"--XyZ\r\nContent-Disposition: form-data; filename=\"x; name=orq\"; name=a\r\n\r\nx\r\n--XyZ--".to_vec(),
            b"--XyZ--\r\n".to_vec(),
            b"--XyZx\r\n".to_vec(),
            b"no delimiter at all".to_vec(),
            b"--XyZ  --\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--XyZ--".to_vec(),
        ];
        for input in refused {
            assert!(buffered(&input, "XyZ").is_err(), "{:?}", String::from_utf8_lossy(&input));
            for step in [1, 2, 3, 5, 8, input.len()] {
                assert!(
                    streamed(&input, "XyZ", step).is_err(),
                    "{:?} cut every {step}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn nothing_is_given_before_the_callers_first_part_is_judged() {
        let mut rewrite = StreamRewrite::new("XyZ", &Bytes::from_static(DOC)).expect("streamable");
        let mut out = Vec::new();
        rewrite.feed(Bytes::from_static(b"preamble\r\n--XyZ\r\nContent-Disposition: form-da"), &mut out).expect("ok");
        assert!(out.is_empty());
        rewrite.feed(Bytes::from_static(b"ta; name=\"image\"\r\n\r\nPNG-bytes"), &mut out).expect("ok");
        let expected: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"orq\"\r\n\r\n{\"retry\":{\"count\":2}}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n";
        assert!(out.concat().starts_with(expected), "the orq part, then the first part as judged");
    }

    #[test]
    fn a_document_holding_the_boundary_is_left_to_the_buffered_rewrite() {
        assert!(StreamRewrite::new("XyZ", &Bytes::from_static(b"{\"a\":\"--XyZ\"}")).is_none());
    }

    #[test]
    fn a_header_block_that_never_ends_is_refused_past_its_bound() {
        let mut rewrite = StreamRewrite::new("XyZ", &Bytes::from_static(DOC)).expect("streamable");
        let mut out = Vec::new();
        rewrite
            .feed(Bytes::from_static(b"--XyZ\r\nContent-Disposition: form-data; name=a\r\nX: "), &mut out)
            .expect("ok");
        let filler = Bytes::from(vec![b'a'; 8192]);
        let mut refused = None;
        for _ in 0..16 {
            if let Err(e) = rewrite.feed(filler.clone(), &mut out) {
                refused = Some(e);
                break;
            }
        }
        assert!(refused.is_some_and(|e| e.to_string().contains("header block over")));
    }

    #[test]
    fn image_bytes_are_slices_of_the_frames_they_came_in() {
        let image = vec![7u8; 100_000];
        let input = body(&[("Content-Disposition: form-data; name=\"image\"", &image)]);
        let mut rewrite = StreamRewrite::new("XyZ", &Bytes::from_static(DOC)).expect("streamable");
        let mut out = Vec::new();
        let frame = Bytes::from(input);
        rewrite.feed(frame.clone(), &mut out).expect("feed");
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let big = out.iter().find(|c| c.len() >= 90_000).expect("the image in one chunk");
        assert!(range.contains(&(big.as_ptr() as usize)), "the image chunk points into the frame (no copy)");
    }
}
