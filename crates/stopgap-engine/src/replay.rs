//! Replaying client bytes through a [`FlowInspector`] without any network: what `stopgap patch
//! test` and the library tests use to judge a patch's vectors.

use std::sync::Arc;

use stopgap_patch::{Action, Patch, PatchSet, Vector};

use crate::{AuditEvent, FlowInspector, FlowMeta, InspectorConfig, Output, Side};

/// What one replay produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Bytes forwarded to the upstream.
    pub to_server: Vec<u8>,
    /// Bytes answered to the client by the gateway itself.
    pub to_client: Vec<u8>,
    /// Whether the gateway closed the connection.
    pub closed: bool,
    /// Audit events, in order.
    pub events: Vec<AuditEvent>,
}

/// Feeds `client` to a fresh flow, `piece` bytes at a time (all at once when `None`).
#[must_use]
pub fn replay(snapshot: &Arc<PatchSet>, client: &[u8], piece: Option<usize>) -> Replay {
    let mut insp = FlowInspector::new(InspectorConfig::default(), FlowMeta::default());
    let mut r = Replay::default();
    for chunk in client.chunks(piece.unwrap_or(client.len()).max(1)) {
        insp.handle_data(Side::Client, chunk, snapshot);
        while let Some(o) = insp.poll_output() {
            match o {
                Output::ToServer(b) => r.to_server.extend_from_slice(&b),
                Output::ToClient(b) => r.to_client.extend_from_slice(&b),
                Output::Close => r.closed = true,
                Output::Audit(e) => r.events.push(*e),
            }
        }
    }
    r
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first request of a byte stream (head and framed body); the whole stream when it cannot
/// be framed.
#[must_use]
pub fn first_request(bytes: &[u8]) -> &[u8] {
    use stopgap_proto::http1::{parse_request_head, BodyDecoder, Limits};
    let limits = Limits::default();
    let Ok(Some(head)) = parse_request_head(bytes, &limits) else {
        return bytes;
    };
    let Ok(framing) = head.framing() else {
        return bytes;
    };
    let at = head.raw().len();
    match BodyDecoder::new(framing, &limits).decode(&bytes[at..], |_| {}) {
        Ok(p) if p.done => &bytes[..at + p.consumed],
        _ => bytes,
    }
}

/// Replays one vector of `patch` through `snapshot` and judges it: an exploit or evasion must
/// be acted on (its first request refused with the patch's own status when the patch is alone,
/// any 4xx otherwise, or edited), a benign vector must reach the upstream byte for byte with no
/// local answer. `Ok` describes what happened, `Err` what went wrong.
///
/// # Errors
/// The vector did not meet its expectation.
pub fn judge_vector(
    patch: &Patch,
    vector: &Vector,
    snapshot: &Arc<PatchSet>,
    alone: bool,
) -> Result<String, String> {
    let r = replay(snapshot, &vector.request, None);
    let status =
        |bytes: &[u8]| String::from_utf8_lossy(bytes.get(9..12).unwrap_or_default()).into_owned();
    if !vector.expect_match {
        if !r.to_client.is_empty() {
            return Err(format!("answered {} by the gateway", status(&r.to_client)));
        }
        if r.to_server != vector.request {
            return Err("altered on its way to the upstream".into());
        }
        return Ok("passed byte for byte".into());
    }
    let matched = r
        .events
        .iter()
        .any(|e| e.patch.as_deref() == Some(patch.id.as_str()));
    match &patch.action {
        Action::Reject { status: want, .. } => {
            if contains(&r.to_server, first_request(&vector.request)) {
                return Err("reached the upstream as sent".into());
            }
            let got = status(&r.to_client);
            if alone && got != want.to_string() {
                return Err(format!("answered {got}, the patch says {want}"));
            }
            if !got.starts_with('4') {
                return Err(format!("answered {got:?}"));
            }
            if alone && !matched {
                return Err("refused, but not by this patch".into());
            }
            Ok(format!("refused {got}"))
        }
        _ if matched => Ok(r
            .events
            .iter()
            .find(|e| e.patch.as_deref() == Some(patch.id.as_str()))
            .map_or_else(|| "matched".to_string(), |e| e.outcome.clone())),
        _ => Err("not matched".into()),
    }
}
