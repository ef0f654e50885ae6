//! The HTTP engine with the whole shipped library on arbitrary client and server bytes
//! (interleaved as the input says): no panic, and nothing after a close.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use stopgap_engine::{FlowInspector, FlowMeta, InspectorConfig, Output, Side};
use stopgap_patch::PatchSet;

fn library() -> Arc<PatchSet> {
    static SET: OnceLock<Arc<PatchSet>> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../patches");
        Arc::new(PatchSet::from_patches(
            1,
            stopgap_patch::load_dir(&dir).expect("library"),
        ))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let set = library();
    let mut insp = FlowInspector::new(InspectorConfig::default(), FlowMeta::default());
    let mut closed = false;
    // Each chunk: one control byte (side and length), then the bytes.
    let mut rest = data;
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = usize::from(ctl & 0x7f).min(tail.len());
        let side = if ctl & 0x80 == 0 {
            Side::Client
        } else {
            Side::Server
        };
        insp.handle_data(side, &tail[..len], &set);
        rest = &tail[len..];
        while let Some(o) = insp.poll_output() {
            match o {
                Output::Close => closed = true,
                Output::ToClient(_) | Output::ToServer(_) => assert!(!closed, "output after close"),
                _ => {}
            }
        }
    }
    insp.handle_eof(Side::Server);
    while insp.poll_output().is_some() {}
});
