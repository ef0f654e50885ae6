//! The public-corpus records copied into `tests/corpus/`, shared by the test crates
//! (included with `#[path]`, so each test crate compiles its own copy of one source).

use std::path::Path;

use base64::Engine as _;

/// One record of `tests/corpus/*.jsonl` (the fields the tests read).
#[derive(serde::Deserialize)]
pub struct Record {
    pub id: String,
    pub kind: String,
    pub expect: String,
    pub notes: String,
    pub dialogue: Vec<Step>,
}

/// One direction's bytes, base64.
#[derive(serde::Deserialize)]
pub struct Step {
    pub dir: String,
    pub b64: String,
}

impl Record {
    /// Every client-to-server byte, in order.
    pub fn client_bytes(&self) -> Vec<u8> {
        self.dialogue
            .iter()
            .filter(|s| s.dir == "c2s")
            .flat_map(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(&s.b64)
                    .expect("corpus record is base64")
            })
            .collect()
    }
}

/// The first request of a client byte stream: the attack step of a record.
pub fn first_request(bytes: &[u8]) -> &[u8] {
    stopgap_engine::replay::first_request(bytes)
}

/// Whether `haystack` contains `needle` (an empty needle is contained everywhere).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads the HTTP records of the repository at `repo`.
pub fn http_records(repo: &Path) -> Vec<Record> {
    records(repo, "http")
}

/// Reads the records of one protocol (`http`, `ftp`, `smtp`) of the repository at `repo`.
pub fn records(repo: &Path, protocol: &str) -> Vec<Record> {
    let file = repo.join(format!("tests/corpus/{protocol}.jsonl"));
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("corpus record is JSON"))
        .collect()
}
