//! The audit log: a task that stamps events and writes them as JSON lines.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use stopgap_engine::AuditEvent;
use tokio::sync::mpsc;

/// Events queued for writing before new ones are dropped (and counted).
pub const QUEUE_DEPTH: usize = 65_536;

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Append to this file.
    File(PathBuf),
    /// Standard error.
    Stderr,
}

/// A handle to the audit-log writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditEvent>,
}

impl AuditLog {
    /// Opens the target and starts the writer task.
    ///
    /// # Errors
    /// The file cannot be opened for appending.
    pub fn start(target: AuditTarget) -> std::io::Result<Self> {
        let mut sink: Box<dyn Write + Send> = match &target {
            AuditTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            AuditTarget::Stderr => Box::new(std::io::stderr()),
        };
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(QUEUE_DEPTH);
        tokio::task::spawn_blocking(move || {
            while let Some(event) = rx.blocking_recv() {
                let line = render(&event, SystemTime::now());
                if sink.write_all(line.as_bytes()).is_err() {
                    tracing::error!("audit log write failed; events are being lost");
                }
                if rx.is_empty() {
                    let _ = sink.flush();
                }
            }
        });
        Ok(Self { tx })
    }

    /// Queues an event; never blocks the data plane (a full queue drops the event with a log).
    pub fn record(&self, event: AuditEvent) {
        if self.tx.try_send(event).is_err() {
            tracing::warn!("audit queue full; event dropped");
        }
    }
}

/// One JSON line: `ts` (RFC 3339 UTC, milliseconds) first, then the event's fields.
#[must_use]
pub fn render(event: &AuditEvent, now: SystemTime) -> String {
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
}
