//! Gateway metrics (Prometheus text format) and per-patch hit counts.
//!
//! Every metric is named `stopgap_*` and documented in docs/metrics.md. The data plane holds
//! pre-created handles ([`ListenerMetrics`]) so counting on the hot path is an atomic add, not
//! a label lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use stopgap_engine::audit::event;
use stopgap_engine::AuditEvent;

/// Buckets of the added-latency histogram, in seconds (10 µs … ~80 ms).
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.02,
    0.04, 0.08, 0.16,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    listener: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    patch: String,
    action: &'static str,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnomalyLabel {
    anomaly: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Matches of one patch since the gateway started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatchHits {
    /// Matches in enforce mode (the action was taken).
    pub enforced: u64,
    /// Matches in monitor mode (only logged).
    pub monitored: u64,
    /// When the last match happened.
    pub last_hit: Option<SystemTime>,
}

/// All gateway metrics; one per process, shared by reference.
pub struct Metrics {
    registry: Registry,
    requests: Family<ListenerLabel, Counter>,
    connections: Family<ListenerLabel, Counter>,
    active: Family<ListenerLabel, Gauge>,
    bytes: Family<BytesLabels, Counter>,
    latency: Family<ListenerLabel, Histogram>,
    verdicts: Family<VerdictLabels, Counter>,
    violations: Family<AnomalyLabel, Counter>,
    upstream_errors: Counter,
    generation: Gauge,
    patches: Family<StateLabel, Gauge>,
    reloads: Family<ResultLabel, Counter>,
    reload_failures: Counter,
    changes: Family<ResultLabel, Counter>,
    admin_denied: Counter,
    audit_dropped: Counter,
    hits: Mutex<HashMap<String, PatchHits>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Handles for one listener, created once.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    /// Requests seen (parsed heads, refused ones included).
    pub requests: Counter,
    /// Connections accepted.
    pub connections: Counter,
    /// Connections open now.
    pub active: Gauge,
    /// Bytes read from clients.
    pub bytes_from_client: Counter,
    /// Bytes read from the upstream.
    pub bytes_from_server: Counter,
    /// Time from reading client bytes that completed a request head to having forwarded them.
    pub added_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<ListenerLabel, Counter>::default();
        let connections = Family::<ListenerLabel, Counter>::default();
        let active = Family::<ListenerLabel, Gauge>::default();
        let bytes = Family::<BytesLabels, Counter>::default();
        let latency = Family::<ListenerLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        let verdicts = Family::<VerdictLabels, Counter>::default();
        let violations = Family::<AnomalyLabel, Counter>::default();
        let upstream_errors = Counter::default();
        let generation = Gauge::default();
        let patches = Family::<StateLabel, Gauge>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let reload_failures = Counter::default();
        let changes = Family::<ResultLabel, Counter>::default();
        let admin_denied = Counter::default();
        let audit_dropped = Counter::default();
        registry.register(
            "stopgap_requests",
            "HTTP requests seen per listener",
            requests.clone(),
        );
        registry.register(
            "stopgap_connections",
            "Client connections accepted per listener",
            connections.clone(),
        );
        registry.register(
            "stopgap_connections_active",
            "Client connections open now per listener",
            active.clone(),
        );
        registry.register(
            "stopgap_bytes",
            "Bytes read per listener and direction (from_client, from_server)",
            bytes.clone(),
        );
        registry.register(
            "stopgap_added_latency_seconds",
            "Time the gateway held a request head: from reading it to having forwarded it",
            latency.clone(),
        );
        registry.register(
            "stopgap_verdicts",
            "Patch matches per patch, action and outcome",
            verdicts.clone(),
        );
        registry.register(
            "stopgap_protocol_violations",
            "Messages refused for breaking the protocol, per anomaly",
            violations.clone(),
        );
        registry.register(
            "stopgap_upstream_errors",
            "Upstream connect failures and misbehaviour answered with 502",
            upstream_errors.clone(),
        );
        registry.register(
            "stopgap_patch_generation",
            "Generation number of the patch snapshot in force",
            generation.clone(),
        );
        registry.register(
            "stopgap_patches",
            "Patches in the patch directory per state (applied, monitor, unapplied)",
            patches.clone(),
        );
        registry.register(
            "stopgap_reloads",
            "Reloads of the patch directory per result (ok, failed)",
            reloads.clone(),
        );
        registry.register(
            "stopgap_reload_failures",
            "Reloads that failed and kept the previous snapshot",
            reload_failures.clone(),
        );
        registry.register(
            "stopgap_patch_changes",
            "Apply/unapply/monitor calls per result (ok, denied, failed)",
            changes.clone(),
        );
        registry.register(
            "stopgap_admin_unauthorized",
            "Admin API calls refused for a missing or wrong token",
            admin_denied.clone(),
        );
        registry.register(
            "stopgap_audit_dropped",
            "Traffic audit events dropped because the writer queue was full",
            audit_dropped.clone(),
        );
        Self {
            registry,
            requests,
            connections,
            active,
            bytes,
            latency,
            verdicts,
            violations,
            upstream_errors,
            generation,
            patches,
            reloads,
            reload_failures,
            changes,
            admin_denied,
            audit_dropped,
            hits: Mutex::default(),
        }
    }

    /// Handles for a listener (created on first use, shared afterwards).
    #[must_use]
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        let l = ListenerLabel {
            listener: name.to_string(),
        };
        let bytes = |direction| {
            self.bytes.get_or_create_owned(&BytesLabels {
                listener: name.to_string(),
                direction,
            })
        };
        ListenerMetrics {
            requests: self.requests.get_or_create_owned(&l),
            connections: self.connections.get_or_create_owned(&l),
            active: self.active.get_or_create_owned(&l),
            bytes_from_client: bytes("from_client"),
            bytes_from_server: bytes("from_server"),
            added_latency: self.latency.get_or_create_owned(&l),
        }
    }

    /// Counts what a traffic audit event says (verdicts, violations, patch hits).
    pub fn count_event(&self, e: &AuditEvent) {
        match e.event {
            event::PATCH_MATCH => {
                let Some(patch) = &e.patch else { return };
                self.verdicts
                    .get_or_create(&VerdictLabels {
                        patch: patch.clone(),
                        action: e.action.unwrap_or("none"),
                        outcome: e.outcome.clone(),
                    })
                    .inc();
                let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
                let h = hits.entry(patch.clone()).or_default();
                if e.mode == Some("monitor") {
                    h.monitored += 1;
                } else {
                    h.enforced += 1;
                }
                h.last_hit = Some(SystemTime::now());
            }
            event::PROTOCOL_VIOLATION => {
                self.violations
                    .get_or_create(&AnomalyLabel {
                        anomaly: e.anomaly.unwrap_or("other"),
                    })
                    .inc();
            }
            event::UPSTREAM_ERROR => {
                self.upstream_errors.inc();
            }
            _ => {}
        }
    }

    /// Hit counts of one patch.
    #[must_use]
    pub fn hits(&self, patch: &str) -> PatchHits {
        self.hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(patch)
            .copied()
            .unwrap_or_default()
    }

    /// Records the generation in force and how many patches are in each state.
    pub fn set_snapshot(&self, generation: u64, applied: usize, monitor: usize, unapplied: usize) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        for (state, n) in [
            ("applied", applied),
            ("monitor", monitor),
            ("unapplied", unapplied),
        ] {
            self.patches
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Counts a reload.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        if !ok {
            self.reload_failures.inc();
        }
    }

    /// Counts a state-change call by result (`ok`, `denied`, `failed`).
    pub fn change(&self, result: &'static str) {
        self.changes.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts an admin call refused for its token.
    pub fn unauthorized(&self) {
        self.admin_denied.inc();
    }

    /// Counts a dropped traffic audit event.
    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_count_as_verdicts_and_hits() {
        let m = Metrics::new();
        let l = m.listener("web");
        l.requests.inc();
        l.bytes_from_client.inc_by(10);
        m.count_event(&AuditEvent {
            event: event::PATCH_MATCH,
            patch: Some("SG-1".into()),
            action: Some("reject"),
            mode: Some("enforce"),
            outcome: "rejected".into(),
            ..AuditEvent::default()
        });
        m.count_event(&AuditEvent {
            event: event::PATCH_MATCH,
            patch: Some("SG-1".into()),
            action: Some("reject"),
            mode: Some("monitor"),
            outcome: "would_reject".into(),
            ..AuditEvent::default()
        });
        let h = m.hits("SG-1");
        assert_eq!((h.enforced, h.monitored), (1, 1));
        assert!(h.last_hit.is_some());
        assert_eq!(m.hits("SG-2"), PatchHits::default());
        m.set_snapshot(7, 1, 2, 3);
        m.reload(false);
        let text = m.encode();
        for line in [
            "stopgap_requests_total{listener=\"web\"} 1",
            "stopgap_bytes_total{listener=\"web\",direction=\"from_client\"} 10",
            "stopgap_verdicts_total{patch=\"SG-1\",action=\"reject\",outcome=\"rejected\"} 1",
            "stopgap_patch_generation 7",
            "stopgap_patches{state=\"unapplied\"} 3",
            "stopgap_reload_failures_total 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
