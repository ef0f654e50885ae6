//! The HTTP/1.1 codec, both directions, on arbitrary bytes fed whole and split at a point chosen
//! by the input: the same heads, ends and errors either way, and no panic.
//!
//! Input layout: one control byte (low bit: 0 = client requests, 1 = server responses; the
//! other bits pick the split point), then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stopgap_proto::http1::{parse_request_head, parse_response_head, BodyDecoder, Framing, Limits};

/// Parses one head from `buf`: `Ok(None)` when incomplete, else its length and framing.
type HeadStep = fn(&[u8], &Limits) -> Result<Option<(usize, Framing)>, String>;

fn request_head(buf: &[u8], limits: &Limits) -> Result<Option<(usize, Framing)>, String> {
    match parse_request_head(buf, limits).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(h) => Ok(Some((
            h.raw().len(),
            h.framing().map_err(|e| e.to_string())?,
        ))),
    }
}

fn response_head(buf: &[u8], limits: &Limits) -> Result<Option<(usize, Framing)>, String> {
    match parse_response_head(buf, limits).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(h) => Ok(Some((
            h.raw().len(),
            h.framing(false).map_err(|e| e.to_string())?,
        ))),
    }
}

fn events(step: HeadStep, pieces: &[&[u8]]) -> Vec<String> {
    let limits = Limits::default();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut body: Option<BodyDecoder> = None;
    for p in pieces {
        buf.extend_from_slice(p);
        loop {
            if let Some(d) = body.as_mut() {
                match d.decode(&buf, |b| out.push(format!("data {}", b.len()))) {
                    Ok(pr) => {
                        buf.drain(..pr.consumed);
                        if !pr.done {
                            break;
                        }
                        out.push("end".into());
                        body = None;
                    }
                    Err(e) => {
                        out.push(format!("error {e}"));
                        return out;
                    }
                }
            }
            match step(&buf, &limits) {
                Ok(None) => break,
                Ok(Some((len, framing))) => {
                    out.push(format!("head {framing:?}"));
                    buf.drain(..len);
                    body = Some(BodyDecoder::new(framing, &limits));
                }
                Err(e) => {
                    out.push(format!("error {e}"));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let step: HeadStep = if ctl & 1 == 0 {
        request_head
    } else {
        response_head
    };
    let whole = events(step, &[stream]);
    if stream.len() > 1 {
        let at = usize::from(ctl >> 1) % stream.len();
        let split = events(step, &[&stream[..at], &stream[at..]]);
        // Data events may be cut differently; heads, ends and errors must agree.
        let keep = |v: &[String]| {
            v.iter()
                .filter(|e| !e.starts_with("data"))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(keep(&whole), keep(&split));
    }
});
