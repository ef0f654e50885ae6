//! The shipped patch library and the public-corpus records, replayed through the engine.

use std::path::PathBuf;
use std::sync::Arc;

use stopgap_engine::{FlowInspector, FlowMeta, InspectorConfig, Output, Side};
use stopgap_patch::{load_dir, Action, PatchSet};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Run {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    closed: bool,
}

/// Feeds `request` in pieces of `piece` bytes (all at once when `None`), collecting outputs.
fn run_in_pieces(snapshot: &Arc<PatchSet>, request: &[u8], piece: Option<usize>) -> Run {
    let mut insp = FlowInspector::new(InspectorConfig::default(), FlowMeta::default());
    let mut r = Run {
        to_server: Vec::new(),
        to_client: Vec::new(),
        closed: false,
    };
    for chunk in request.chunks(piece.unwrap_or(request.len()).max(1)) {
        insp.handle_data(Side::Client, chunk, snapshot);
        while let Some(o) = insp.poll_output() {
            match o {
                Output::ToServer(b) => r.to_server.extend_from_slice(&b),
                Output::ToClient(b) => r.to_client.extend_from_slice(&b),
                Output::Close => r.closed = true,
                Output::Audit(_) => {}
            }
        }
    }
    r
}

fn run(snapshot: &Arc<PatchSet>, request: &[u8]) -> Run {
    run_in_pieces(snapshot, request, None)
}

fn library() -> Arc<PatchSet> {
    let patches = load_dir(&root().join("patches")).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(PatchSet::from_patches(1, patches))
}

#[test]
fn every_patch_vector_alone_and_with_the_whole_library() {
    let patches = load_dir(&root().join("patches")).unwrap_or_else(|e| panic!("{e}"));
    assert!(patches.len() >= 6);
    let all = library();
    for p in &patches {
        assert!(
            p.vectors.iter().any(|v| v.expect_match),
            "{} has no exploit vector",
            p.id
        );
        assert!(
            p.vectors.iter().any(|v| !v.expect_match),
            "{} has no benign vector",
            p.id
        );
        let refusal = match &p.action {
            Action::Reject { status } => format!("HTTP/1.1 {status} "),
            other => panic!("{}: the library's patches reject, not {other:?}", p.id),
        };
        let alone = Arc::new(PatchSet::from_patches(1, vec![p.clone()]));
        for snapshot in [&alone, &all] {
            for v in &p.vectors {
                let r = run(snapshot, &v.request);
                if v.expect_match {
                    // A vector's first request carries the attack; a follow-up step may pass.
                    assert!(
                        !corpus::contains(&r.to_server, corpus::first_request(&v.request)),
                        "{} {}: reached upstream",
                        p.id,
                        v.source
                    );
                    // Alone, the patch's own answer; with the library, whichever patch refuses
                    // first answers, always a 4xx.
                    let expected = if Arc::ptr_eq(snapshot, &alone) {
                        refusal.as_bytes()
                    } else {
                        b"HTTP/1.1 4".as_slice()
                    };
                    assert!(
                        r.to_client.starts_with(expected),
                        "{} {}: answered {:?}",
                        p.id,
                        v.source,
                        String::from_utf8_lossy(&r.to_client)
                    );
                } else {
                    assert_eq!(
                        r.to_server, v.request,
                        "{} {}: not byte-exact",
                        p.id, v.source
                    );
                    assert!(
                        r.to_client.is_empty(),
                        "{} {}: answered locally",
                        p.id,
                        v.source
                    );
                }
            }
        }
    }
}

#[path = "../../../tests/support/corpus.rs"]
mod corpus;

#[test]
fn corpus_records_meet_their_expectation_with_the_whole_library() {
    let all = library();
    let mut counts = std::collections::BTreeMap::<String, (u32, u32)>::new();
    for r in corpus::http_records(&root()) {
        let bytes = r.client_bytes();
        // Whole, and byte by byte: the verdict must not depend on how bytes arrive.
        for chunked in [false, true] {
            let out = run_in_pieces(&all, &bytes, chunked.then_some(1));
            let ok = match r.expect.as_str() {
                // A gateway that needs the body answers `Expect: 100-continue` itself when
                // the body has not been sent yet (byte-by-byte replay); nothing else.
                "pass" => {
                    out.to_server == bytes
                        && (out.to_client.is_empty()
                            || (chunked && out.to_client == b"HTTP/1.1 100 Continue\r\n\r\n"))
                }
                // The attack step (the first request) never reaches the upstream as sent, and
                // the client gets a 4xx for it; later benign steps may pass.
                "neutralize" => {
                    !corpus::contains(&out.to_server, corpus::first_request(&bytes))
                        && out.to_client.starts_with(b"HTTP/1.1 4")
                }
                "reject" => {
                    let status_ok = out.to_client.starts_with(b"HTTP/1.1 400 ")
                        || (r.notes.contains("501") && out.to_client.starts_with(b"HTTP/1.1 501 "));
                    // Nothing past the offending point may reach the upstream: at most the head
                    // of the first request (its body is where the ambiguity lies).
                    let head_end = bytes
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(0, |i| i + 4);
                    status_ok && out.closed && out.to_server.len() <= head_end
                }
                other => panic!("{}: unknown expect {other}", r.id),
            };
            assert!(
                ok,
                "{} ({}, chunked={chunked}): expect {}, upstream got {:?}, client got {:?}",
                r.id,
                r.kind,
                r.expect,
                String::from_utf8_lossy(&out.to_server),
                String::from_utf8_lossy(&out.to_client)
            );
            let c = counts.entry(r.kind.clone()).or_default();
            c.0 += u32::from(ok);
            c.1 += 1;
        }
    }
    for (kind, (ok, total)) in counts {
        println!("{kind:10} {ok}/{total}");
    }
}
