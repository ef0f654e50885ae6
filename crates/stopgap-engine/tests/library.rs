//! The shipped patch library and the public-corpus records, replayed through the engine.

use std::path::PathBuf;
use std::sync::Arc;

use stopgap_engine::replay::{judge_vector, replay, Replay};
use stopgap_engine::{FlowInspector, FlowMeta, InspectorConfig, Output, Side};
use stopgap_patch::{load_dir, PatchSet};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run_in_pieces(snapshot: &Arc<PatchSet>, request: &[u8], piece: Option<usize>) -> Replay {
    replay(snapshot, request, piece)
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
        let alone = Arc::new(PatchSet::from_patches(1, vec![p.clone()]));
        for (snapshot, is_alone) in [(&alone, true), (&all, false)] {
            for v in &p.vectors {
                if let Err(why) = judge_vector(p, v, snapshot, is_alone) {
                    let with = if is_alone {
                        "alone"
                    } else {
                        "with the library"
                    };
                    panic!("{} {} {} ({with}): {why}", p.id, v.kind, v.source);
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

#[test]
fn ftp_corpus_records_meet_their_expectation_with_the_whole_library() {
    let all = library();
    let records = corpus::records(&root(), "ftp");
    assert!(!records.is_empty());
    for r in records {
        let bytes = r.client_bytes();
        // The gateway's default command-line limit, as deployed.
        let out = stopgap_engine::replay::replay_ftp(&all, &bytes, 512);
        let refused = out.events.iter().any(|e| {
            (e.event == "patch_match" && e.outcome == "rejected") || e.event == "protocol_violation"
        });
        let ok = match r.expect.as_str() {
            "pass" => out.to_server == bytes && !refused,
            "neutralize" => refused && out.to_server != bytes,
            other => panic!("{}: unknown expect {other}", r.id),
        };
        assert!(
            ok,
            "{} ({}): expect {}, server got {:?}, client got {:?}",
            r.id,
            r.kind,
            r.expect,
            String::from_utf8_lossy(&out.to_server),
            String::from_utf8_lossy(&out.to_client)
        );
    }
}

#[test]
fn smtp_corpus_records_meet_their_expectation_with_the_whole_library() {
    let all = library();
    let records = corpus::records(&root(), "smtp");
    assert!(!records.is_empty());
    for r in records {
        let bytes = r.client_bytes();
        let out = stopgap_engine::replay::replay_smtp(&all, &bytes);
        let refused = out.events.iter().any(|e| {
            (e.event == "patch_match" && e.outcome == "rejected") || e.event == "protocol_violation"
        });
        let ok = match r.expect.as_str() {
            "pass" => out.to_server == bytes && !refused,
            "neutralize" => refused && out.to_server != bytes,
            other => panic!("{}: unknown expect {other}", r.id),
        };
        assert!(
            ok,
            "{} ({}): expect {}, server got {:?}, client got {:?}",
            r.id,
            r.kind,
            r.expect,
            String::from_utf8_lossy(&out.to_server),
            String::from_utf8_lossy(&out.to_client)
        );
    }
}

mod split_property {
    use super::*;
    use proptest::prelude::*;

    /// Benign requests: ordinary paths, queries, headers and bodies (framed by length or
    /// chunks), nothing any patch refuses.
    fn benign_request() -> impl Strategy<Value = Vec<u8>> {
        let word = "[a-z]{1,8}";
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "HEAD", "OPTIONS"]),
            prop::collection::vec(word, 1..4),
            prop::option::of((word, "[a-z0-9]{0,8}")),
            prop::collection::vec((word, "[A-Za-z0-9 ,;=/.-]{0,30}"), 0..6),
            prop::option::of("[a-zA-Z0-9 ]{0,200}"),
            any::<bool>(),
        )
            .prop_map(|(method, path, query, headers, body, chunked)| {
                let mut r = format!("{method} /{}", path.join("/"));
                if let Some((k, v)) = query {
                    r.push_str(&format!("?{k}={v}"));
                }
                r.push_str(" HTTP/1.1\r\nHost: example.test\r\n");
                for (k, v) in headers {
                    r.push_str(&format!("X-{k}: {}\r\n", v.trim()));
                }
                let mut bytes = r.into_bytes();
                match (body, method) {
                    (Some(b), "POST" | "PUT") if chunked => {
                        bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                        // An empty body is the last chunk alone.
                        if !b.is_empty() {
                            bytes.extend_from_slice(format!("{:x}\r\n{b}\r\n", b.len()).as_bytes());
                        }
                        bytes.extend_from_slice(b"0\r\n\r\n");
                    }
                    (Some(b), "POST" | "PUT") => {
                        bytes.extend_from_slice(
                            format!("Content-Length: {}\r\n\r\n{b}", b.len()).as_bytes(),
                        );
                    }
                    _ => bytes.extend_from_slice(b"\r\n"),
                }
                bytes
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn a_benign_request_split_anywhere_is_forwarded_byte_for_byte(
            req in benign_request(),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
        ) {
            static LIBRARY: std::sync::OnceLock<Arc<PatchSet>> = std::sync::OnceLock::new();
            let all = LIBRARY.get_or_init(library).clone();
            let (mut x, mut y) = (a.index(req.len()), b.index(req.len()));
            if x > y {
                std::mem::swap(&mut x, &mut y);
            }
            let mut insp = FlowInspector::new(InspectorConfig::default(), FlowMeta::default());
            let mut forwarded = Vec::new();
            let mut answered = Vec::new();
            for piece in [&req[..x], &req[x..y], &req[y..]] {
                insp.handle_data(Side::Client, piece, &all);
                while let Some(o) = insp.poll_output() {
                    match o {
                        Output::ToServer(bytes) => forwarded.extend_from_slice(&bytes),
                        Output::ToClient(bytes) => answered.extend_from_slice(&bytes),
                        _ => {}
                    }
                }
            }
            prop_assert_eq!(forwarded, req);
            prop_assert!(answered.is_empty() || answered == b"HTTP/1.1 100 Continue\r\n\r\n");
        }
    }
}
