//! Inspection cost per request, without any network: a benign keep-alive GET replayed through
//! one FlowInspector with the whole shipped library applied. A measurement, not a test:
//! `cargo run --release -p stopgap-engine --example inspect_rate [requests] [--per-patch]
//! [--post]` (`--post`: a 16 KiB urlencoded form POST instead of the GET).

use std::sync::Arc;
use std::time::Instant;

use stopgap_engine::{FlowInspector, FlowMeta, InspectorConfig, Output, Side};
use stopgap_patch::{load_dir, PatchSet};

fn time(set: &Arc<PatchSet>, request: &[u8], response: &[u8], n: u32) -> f64 {
    let mut insp = FlowInspector::new(InspectorConfig::default(), FlowMeta::default());
    let start = Instant::now();
    for _ in 0..n {
        insp.handle_data(Side::Client, request, set);
        while insp.poll_output().is_some() {}
        insp.handle_data(Side::Server, response, set);
        while insp.poll_output().is_some() {}
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../patches");
    let patches = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let count = patches.len();
    let get: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";
    let mut post = b"POST /post HTTP/1.1\r\nHost: bench.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 16384\r\n\r\ndata=".to_vec();
    post.resize(post.len() + 16379, b'a');
    let request: &[u8] = if std::env::args().any(|a| a == "--post") {
        &post
    } else {
        get
    };
    let response: &[u8] =
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 17\r\n\r\nhello, benchmark\n";
    if std::env::args().any(|a| a == "--per-patch") {
        let base = time(&Arc::new(PatchSet::empty()), request, response, n / 10);
        let mut costs: Vec<(f64, String)> = patches
            .iter()
            .map(|p| {
                let set = Arc::new(PatchSet::from_patches(1, vec![p.clone()]));
                let t = time(&set, request, response, n / 10);
                (t - base, p.id.clone())
            })
            .collect();
        costs.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (ns, id) in costs.iter().take(12) {
            println!("{id:<16} +{ns:.0} ns");
        }
        return;
    }
    for (label, set) in [
        ("no patches", PatchSet::empty()),
        ("whole library", PatchSet::from_patches(1, patches)),
    ] {
        let set = Arc::new(set);
        let mut insp = FlowInspector::new(InspectorConfig::default(), FlowMeta::default());
        let response =
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 17\r\n\r\nhello, benchmark\n";
        let start = Instant::now();
        for _ in 0..n {
            insp.handle_data(Side::Client, request, &set);
            while let Some(o) = insp.poll_output() {
                std::hint::black_box(&o);
                if matches!(o, Output::Close) {
                    panic!("closed");
                }
            }
            insp.handle_data(Side::Server, response, &set);
            while insp.poll_output().is_some() {}
        }
        let per = start.elapsed() / n;
        println!(
            "{label:<14} ({:>2} patches): {per:?} per request/response",
            if label == "no patches" { 0 } else { count }
        );
    }
}
