//! The FTP command and reply readers and the SMTP DATA reader on arbitrary bytes, whole and
//! split at a point chosen by the input: the same result either way, and no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stopgap_proto::ftp::{CommandReader, ReplyReader};
use stopgap_proto::smtp::DataReader;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let at = usize::from(data[0]) % data.len();
    let commands = |pieces: &[&[u8]]| {
        let mut r = CommandReader::new(64);
        let mut out = Vec::new();
        for p in pieces {
            r.push(p, &mut out);
        }
        out
    };
    assert_eq!(commands(&[data]), commands(&[&data[..at], &data[at..]]));
    let replies = |pieces: &[&[u8]]| {
        let mut r = ReplyReader::default();
        let mut out = Vec::new();
        let mut err = None;
        for p in pieces {
            if let Err(e) = r.push(p, &mut out) {
                err = Some(e);
                break;
            }
        }
        (out, err)
    };
    assert_eq!(replies(&[data]), replies(&[&data[..at], &data[at..]]));
    let message = |pieces: &[&[u8]]| {
        let mut r = DataReader::new(256);
        let mut used = 0;
        for p in pieces {
            used += r.push(p);
            if r.is_done() {
                break;
            }
        }
        (
            used,
            r.content().to_vec(),
            r.bare_lf(),
            r.bare_cr(),
            r.is_done(),
        )
    };
    assert_eq!(message(&[data]), message(&[&data[..at], &data[at..]]));
});
