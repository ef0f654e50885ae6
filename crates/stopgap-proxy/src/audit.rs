//! The audit log: a thread that stamps events and writes them as JSON lines.
//!
//! Traffic events ([`AuditEvent`]) are queued without waiting: the data plane never blocks on
//! the disk, and a full queue drops the event (counted in `stopgap_audit_dropped_total`).
//! Control events ([`ControlEvent`]: patch state changes, reloads, refused admin calls) are
//! never dropped: [`AuditLog::record_control`] waits until the line is written and flushed and
//! reports a failure, so a change that cannot be logged is not made.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use stopgap_engine::AuditEvent;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Events queued for writing before new traffic events are dropped (and counted).
pub const QUEUE_DEPTH: usize = 65_536;

/// Recent events kept in memory for the admin API.
pub const RECENT: usize = 1_000;

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Append to this file.
    File(PathBuf),
    /// Standard error.
    Stderr,
}

/// Control-plane event names.
pub mod control_event {
    /// A patch changed state (applied, monitor, unapplied), or a call to change it failed.
    pub const PATCH_STATE: &str = "patch_state";
    /// The patch directory (and configuration) was reloaded, or a reload failed.
    pub const RELOAD: &str = "reload";
    /// An admin call was refused for a missing or wrong token.
    pub const ADMIN_UNAUTHORIZED: &str = "admin_unauthorized";
    /// The gateway started or stopped.
    pub const LIFECYCLE: &str = "lifecycle";
    /// A patch was retired for a server (its fixed version was observed) or re-engaged.
    pub const ASSET: &str = "asset";
    /// A source address was banned for repeated exploit attempts, or its ban ended.
    pub const ESCALATION: &str = "escalation";
}

/// One control-plane event: who changed what, from which state to which, and the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ControlEvent {
    /// One of [`control_event`].
    pub event: &'static str,
    /// Who: the admin token's name, `signal:SIGHUP`, or `startup`.
    pub actor: String,
    /// The admin client's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Patch id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// State before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_state: Option<String>,
    /// State requested / after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_state: Option<String>,
    /// Snapshot generation in force after the change (the old one when it failed).
    pub generation: u64,
    /// `ok`, `unchanged`, `denied` or `failed`.
    pub result: &'static str,
    /// Human-readable detail (the errors of a failed reload, the refused call, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ControlEvent {
    /// The event of a patch retired on, or re-engaged for, one server.
    #[must_use]
    pub fn asset_transition(
        t: &stopgap_assets::Transition,
        actor: &str,
        remote: Option<String>,
        generation: u64,
    ) -> Self {
        let (old, new) = if t.retired {
            ("applied", "retired")
        } else {
            ("retired", "applied")
        };
        Self {
            event: control_event::ASSET,
            actor: actor.to_string(),
            remote,
            patch: Some(t.patch.clone()),
            old_state: Some(old.into()),
            new_state: Some(new.into()),
            generation,
            result: "ok",
            detail: Some(format!("{}: {}", t.server, t.reason)),
        }
    }
}

enum Entry {
    Traffic(Box<AuditEvent>),
    Control(Box<ControlEvent>, oneshot::Sender<std::io::Result<()>>),
}

/// A handle to the audit-log writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Entry>,
    recent: Arc<Mutex<VecDeque<String>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Entry")
    }
}

impl AuditLog {
    /// Opens the target and starts the writer thread.
    ///
    /// # Errors
    /// The file cannot be opened for appending.
    pub fn start(target: AuditTarget, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let mut sink: Box<dyn Write + Send> = match &target {
            AuditTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            AuditTarget::Stderr => Box::new(std::io::stderr()),
        };
        let (tx, mut rx) = mpsc::channel::<Entry>(QUEUE_DEPTH);
        let recent: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let keep = recent.clone();
        std::thread::Builder::new()
            .name("stopgap-audit".into())
            .spawn(move || {
                while let Some(entry) = rx.blocking_recv() {
                    let now = SystemTime::now();
                    let (line, ack) = match entry {
                        Entry::Traffic(e) => (render(&*e, now), None),
                        Entry::Control(e, ack) => (render(&*e, now), Some(ack)),
                    };
                    let written = sink.write_all(line.as_bytes());
                    if written.is_err() {
                        tracing::error!("audit log write failed; events are being lost");
                    }
                    {
                        let mut recent = keep.lock().unwrap_or_else(|p| p.into_inner());
                        if recent.len() == RECENT {
                            recent.pop_front();
                        }
                        recent.push_back(line.trim_end().to_string());
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(written.and_then(|()| sink.flush()));
                    } else if rx.is_empty() {
                        let _ = sink.flush();
                    }
                }
                let _ = sink.flush();
            })?;
        Ok(Self {
            tx,
            recent,
            metrics,
        })
    }

    /// Counts and queues a traffic event; never blocks the data plane (a full queue drops the
    /// event, counted and logged).
    pub fn record(&self, event: AuditEvent) {
        self.metrics.count_event(&event);
        if self.tx.try_send(Entry::Traffic(Box::new(event))).is_err() {
            self.metrics.audit_dropped();
            tracing::warn!("audit queue full; event dropped");
        }
    }

    /// Writes a control event and waits until it is written and flushed.
    ///
    /// # Errors
    /// The writer is gone or the write failed.
    pub async fn record_control(&self, event: ControlEvent) -> std::io::Result<()> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Entry::Control(Box::new(event), ack))
            .await
            .map_err(|_| std::io::Error::other("the audit writer has stopped"))?;
        done.await
            .map_err(|_| std::io::Error::other("the audit writer has stopped"))?
    }

    /// The last `limit` events written (oldest first), as JSON lines.
    #[must_use]
    pub fn recent(&self, limit: usize) -> Vec<String> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let skip = recent.len().saturating_sub(limit);
        recent.iter().skip(skip).cloned().collect()
    }

    /// The metrics this log counts into.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// One JSON line: `ts` (RFC 3339 UTC, milliseconds) first, then the event's fields.
#[must_use]
pub fn render<E: Serialize>(event: &E, now: SystemTime) -> String {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    let mut line = format!("{{\"ts\":\"{}\"", rfc3339(now));
    if let Some(map) = value.as_object_mut() {
        for (k, v) in map.iter() {
            line.push_str(&format!(",{}:{}", serde_json::Value::from(k.as_str()), v));
        }
    }
    line.push_str("}\n");
    line
}

/// RFC 3339 UTC timestamp with milliseconds.
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
    }

    #[test]
    fn render_is_one_json_object_per_line() {
        let e = AuditEvent {
            event: "patch_match",
            outcome: "rejected".into(),
            patch: Some("SG-2015-1635".into()),
            ..AuditEvent::default()
        };
        let line = render(&e, UNIX_EPOCH);
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["patch"], "SG-2015-1635");
        assert_eq!(v["outcome"], "rejected");
    }

    #[test]
    fn control_events_are_written_before_the_call_returns() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let path = std::env::temp_dir().join(format!("stopgap-audit-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        rt.block_on(async {
            let log = AuditLog::start(AuditTarget::File(path.clone()), Arc::default()).unwrap();
            log.record_control(ControlEvent {
                event: control_event::PATCH_STATE,
                actor: "ops".into(),
                patch: Some("SG-1".into()),
                old_state: Some("applied".into()),
                new_state: Some("unapplied".into()),
                generation: 3,
                result: "ok",
                ..ControlEvent::default()
            })
            .await
            .unwrap();
            // No sleep: the line is on disk when the call returns.
            let text = std::fs::read_to_string(&path).unwrap();
            let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
            assert_eq!(v["actor"], "ops");
            assert_eq!(v["new_state"], "unapplied");
            assert_eq!(v["generation"], 3);
            assert_eq!(log.recent(10).len(), 1);
        });
        let _ = std::fs::remove_file(&path);
    }
}
