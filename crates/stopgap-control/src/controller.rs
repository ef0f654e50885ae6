//! [`Controller`]: the patch lifecycle. Owns the loaded patches and their states, builds each
//! new snapshot whole, persists the states, logs every change, and swaps the snapshot in.
//!
//! Order of a change: check the request → build the new snapshot → persist the states → write
//! the audit events (waiting for the disk) → swap. If any step fails nothing is swapped, the
//! old state file is kept (or restored), and the error is returned and logged. Changes are
//! serialised by one lock; the data plane never takes it (it only loads the `ArcSwap`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;
use stopgap_patch::{load_dir, Applied, Diagnostic, Patch, PatchSet};
use stopgap_proxy::audit::{control_event, rfc3339};
use stopgap_proxy::{AuditLog, ControlEvent, Metrics};
use tokio::sync::Mutex;

use crate::state::{self, PatchState, States};

/// Who asked for a change, for the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The admin token's name, `signal:SIGHUP`, `startup`, ….
    pub name: String,
    /// The client's address, for API calls.
    pub remote: Option<String>,
}

impl Actor {
    /// An actor without an address.
    #[must_use]
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            remote: None,
        }
    }
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Some ids are not patches of the directory; nothing was changed.
    #[error("unknown patch id(s): {}; nothing was changed", .0.join(", "))]
    UnknownPatches(Vec<String>),
    /// No ids were given.
    #[error("no patch ids given")]
    NoIds,
    /// This gateway does not own its state file (another gateway holds it).
    #[error("patch states are read-only in this gateway: {0}")]
    ReadOnly(String),
    /// The state file could not be written; nothing was changed.
    #[error("cannot write the patch state file {path}: {error}; nothing was changed")]
    Persist {
        /// The state file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The change could not be written to the audit log; nothing was changed.
    #[error("cannot write the audit log: {0}; nothing was changed")]
    Audit(std::io::Error),
}

/// The result of a reload that failed: the old snapshot stays in force.
#[derive(Debug, thiserror::Error)]
#[error("reload failed; the previous patches stay in force:\n{}", .errors.join("\n"))]
pub struct ReloadError {
    /// Every problem, rendered with file, line and caret.
    pub errors: Vec<String>,
}

/// One patch's change in a call.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PatchChange {
    /// Patch id.
    pub id: String,
    /// State before.
    pub old_state: PatchState,
    /// State after.
    pub new_state: PatchState,
    /// Whether the state actually changed.
    pub changed: bool,
}

/// What a successful change did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChangeReport {
    /// The generation in force after the call.
    pub generation: u64,
    /// Per patch.
    pub patches: Vec<PatchChange>,
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// The generation in force after the reload.
    pub generation: u64,
    /// Patches now in the directory.
    pub patches: usize,
    /// Ids that are new.
    pub added: Vec<String>,
    /// Ids that are gone.
    pub removed: Vec<String>,
}

/// The last reload, for `status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LastReload {
    /// When (RFC 3339).
    pub at: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Its errors, rendered with file, line and caret.
    pub errors: Vec<String>,
}

/// One patch as the API lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PatchInfo {
    /// Patch id.
    pub id: String,
    /// CVE ids.
    pub cve: Vec<String>,
    /// Title.
    pub title: String,
    /// Severity.
    pub severity: &'static str,
    /// `vendor:product`.
    pub product: String,
    /// Affected versions.
    pub versions: String,
    /// `applied`, `monitor` or `unapplied`.
    pub state: PatchState,
    /// The mode the patch's file asks for (its state when first seen).
    pub file_mode: &'static str,
    /// The patch's action.
    pub action: &'static str,
    /// Matches in enforce mode since the gateway started.
    pub hits_enforced: u64,
    /// Matches in monitor mode since the gateway started.
    pub hits_monitored: u64,
    /// Time of the last match (RFC 3339), if any.
    pub last_hit: Option<String>,
    /// The patch file.
    pub file: String,
}

/// The gateway's control-plane status.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    /// Generation of the snapshot in force.
    pub generation: u64,
    /// The patch directory.
    pub patches_dir: String,
    /// The state file.
    pub state_file: String,
    /// Whether changes are persisted (false when another gateway owns the state file).
    pub persisted: bool,
    /// Patches per state.
    pub applied: usize,
    /// Patches in monitor mode.
    pub monitor: usize,
    /// Patches not applied.
    pub unapplied: usize,
    /// The last reload.
    pub last_reload: Option<LastReload>,
}

struct Inner {
    dir: PathBuf,
    patches: Vec<Arc<Patch>>,
    states: States,
    generation: u64,
    last_reload: Option<LastReload>,
}

impl Inner {
    fn state_of(&self, p: &Patch) -> PatchState {
        self.states
            .get(&p.id)
            .copied()
            .unwrap_or_else(|| PatchState::from_mode(p.mode))
    }

    fn build(&self, generation: u64, states: &States) -> PatchSet {
        let applied = self
            .patches
            .iter()
            .filter_map(|p| {
                let state = states
                    .get(&p.id)
                    .copied()
                    .unwrap_or_else(|| PatchState::from_mode(p.mode));
                state.mode().map(|mode| Applied {
                    patch: p.clone(),
                    mode,
                })
            })
            .collect();
        PatchSet::new(generation, applied)
    }

    fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for p in &self.patches {
            match self.state_of(p) {
                PatchState::Applied => c.0 += 1,
                PatchState::Monitor => c.1 += 1,
                PatchState::Unapplied => c.2 += 1,
            }
        }
        c
    }
}

/// A re-read, validated configuration waiting for the patches to load too.
pub struct PendingConfig {
    /// The patch directory to load (`None` keeps the current one).
    pub patches_dir: Option<PathBuf>,
    /// Puts the rest of the configuration in force; called only when the reload succeeds.
    pub commit: Box<dyn FnOnce() + Send>,
}

/// Re-reads the gateway configuration at the start of a reload; `Err` lists located errors
/// (the reload is then refused as a whole and nothing changes).
pub type ConfigReload = Box<dyn Fn() -> Result<PendingConfig, Vec<String>> + Send + Sync>;

/// The patch lifecycle of one gateway.
pub struct Controller {
    config_reload: std::sync::Mutex<Option<ConfigReload>>,
    inner: Mutex<Inner>,
    current: Arc<ArcSwap<PatchSet>>,
    state_path: PathBuf,
    read_only: Option<String>,
    audit: AuditLog,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("state_path", &self.state_path)
            .finish_non_exhaustive()
    }
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The patch directory has errors.
    #[error("{0}")]
    Patches(stopgap_patch::Diagnostics),
    /// The state file is broken.
    #[error("{0}")]
    State(Diagnostic),
}

impl Controller {
    /// Loads the patch directory and the state file and builds generation 1.
    ///
    /// `read_only` is the reason changes cannot be persisted (another gateway owns the state
    /// file), or `None`.
    ///
    /// # Errors
    /// The patch directory or the state file is broken; nothing is served then.
    pub fn start(
        dir: &Path,
        state_path: &Path,
        read_only: Option<String>,
        audit: AuditLog,
    ) -> Result<Self, StartError> {
        let patches = load_dir(dir).map_err(StartError::Patches)?;
        let states = state::load(state_path)
            .map_err(StartError::State)?
            .unwrap_or_default();
        let inner = Inner {
            dir: dir.to_path_buf(),
            patches: patches.into_iter().map(Arc::new).collect(),
            states,
            generation: 1,
            last_reload: None,
        };
        let unknown: Vec<&str> = inner
            .states
            .keys()
            .filter(|id| !inner.patches.iter().any(|p| &p.id == *id))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(
                "the state file {} names patches not in {}: {} (kept, in case they return)",
                state_path.display(),
                dir.display(),
                unknown.join(", ")
            );
        }
        let set = inner.build(1, &inner.states);
        let metrics = audit.metrics().clone();
        let (a, m, u) = inner.counts();
        metrics.set_snapshot(1, a, m, u);
        Ok(Self {
            config_reload: std::sync::Mutex::new(None),
            inner: Mutex::new(inner),
            current: Arc::new(ArcSwap::from_pointee(set)),
            state_path: state_path.to_path_buf(),
            read_only,
            audit,
            metrics,
        })
    }

    /// The snapshot the data plane reads.
    #[must_use]
    pub fn snapshot(&self) -> Arc<ArcSwap<PatchSet>> {
        self.current.clone()
    }

    /// Sets the state of one or more patches, all at once (one new snapshot).
    ///
    /// # Errors
    /// See [`ChangeError`]; every failure is logged and leaves everything as it was.
    pub async fn set_state(
        &self,
        ids: &[String],
        new_state: PatchState,
        actor: &Actor,
    ) -> Result<ChangeReport, ChangeError> {
        let mut inner = self.inner.lock().await;
        let result = self
            .set_state_locked(&mut inner, ids, new_state, actor)
            .await;
        match &result {
            Ok(_) => self.metrics.change("ok"),
            Err(e) => {
                self.metrics.change("failed");
                // The failure itself is part of the trail. If even this cannot be written the
                // error already says the audit log is broken.
                let _ = self
                    .audit
                    .record_control(ControlEvent {
                        event: control_event::PATCH_STATE,
                        actor: actor.name.clone(),
                        remote: actor.remote.clone(),
                        patch: (!ids.is_empty()).then(|| ids.join(",")),
                        new_state: Some(new_state.to_string()),
                        generation: inner.generation,
                        result: "failed",
                        detail: Some(e.to_string()),
                        ..ControlEvent::default()
                    })
                    .await;
            }
        }
        result
    }

    async fn set_state_locked(
        &self,
        inner: &mut Inner,
        ids: &[String],
        new_state: PatchState,
        actor: &Actor,
    ) -> Result<ChangeReport, ChangeError> {
        if ids.is_empty() {
            return Err(ChangeError::NoIds);
        }
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| !inner.patches.iter().any(|p| &p.id == *id))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ChangeError::UnknownPatches(unknown));
        }
        if let Some(why) = &self.read_only {
            return Err(ChangeError::ReadOnly(why.clone()));
        }
        let unique: BTreeSet<&String> = ids.iter().collect();
        let changes: Vec<PatchChange> = unique
            .into_iter()
            .map(|id| {
                let p = inner.patches.iter().find(|p| &p.id == id).expect("checked");
                let old_state = inner.state_of(p);
                PatchChange {
                    id: id.clone(),
                    old_state,
                    new_state,
                    changed: old_state != new_state,
                }
            })
            .collect();
        if !changes.iter().any(|c| c.changed) {
            for c in &changes {
                self.log_change(actor, c, inner.generation, "unchanged")
                    .await
                    .map_err(ChangeError::Audit)?;
            }
            return Ok(ChangeReport {
                generation: inner.generation,
                patches: changes,
            });
        }
        let mut states = inner.states.clone();
        for c in &changes {
            states.insert(c.id.clone(), new_state);
        }
        let generation = inner.generation + 1;
        let set = inner.build(generation, &states);
        state::save(&self.state_path, &states).map_err(|error| ChangeError::Persist {
            path: self.state_path.clone(),
            error,
        })?;
        for c in &changes {
            let result = if c.changed { "ok" } else { "unchanged" };
            if let Err(e) = self.log_change(actor, c, generation, result).await {
                // Not logged means not made: put the old states back on disk.
                if let Err(restore) = state::save(&self.state_path, &inner.states) {
                    tracing::error!(
                        "cannot restore {} after an audit failure: {restore}",
                        self.state_path.display()
                    );
                }
                return Err(ChangeError::Audit(e));
            }
        }
        self.current.store(Arc::new(set));
        inner.states = states;
        inner.generation = generation;
        let (a, m, u) = inner.counts();
        self.metrics.set_snapshot(generation, a, m, u);
        Ok(ChangeReport {
            generation,
            patches: changes,
        })
    }

    async fn log_change(
        &self,
        actor: &Actor,
        c: &PatchChange,
        generation: u64,
        result: &'static str,
    ) -> std::io::Result<()> {
        self.audit
            .record_control(ControlEvent {
                event: control_event::PATCH_STATE,
                actor: actor.name.clone(),
                remote: actor.remote.clone(),
                patch: Some(c.id.clone()),
                old_state: Some(c.old_state.to_string()),
                new_state: Some(c.new_state.to_string()),
                generation,
                result,
                detail: None,
            })
            .await
    }

    /// Runs `hook` at the start of every reload (the gateway re-reads its configuration).
    pub fn set_config_reload(&self, hook: ConfigReload) {
        *self.config_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Re-reads the configuration (see [`Controller::set_config_reload`]) and the patch
    /// directory, and swaps in a new snapshot with every patch in its recorded state. Any
    /// error keeps the old snapshot.
    ///
    /// # Errors
    /// The configuration or the directory has errors; they are also kept for
    /// [`Controller::status`] and logged.
    pub async fn reload(&self, actor: &Actor) -> Result<ReloadReport, ReloadError> {
        let mut inner = self.inner.lock().await;
        let at = rfc3339(SystemTime::now());
        let configured = match self
            .config_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(hook) => hook(),
            None => Ok(PendingConfig {
                patches_dir: None,
                commit: Box::new(|| {}),
            }),
        };
        let loaded = configured.and_then(|pending| {
            let dir = pending
                .patches_dir
                .clone()
                .unwrap_or_else(|| inner.dir.clone());
            load_dir(&dir)
                .map(|p| (dir, p, pending.commit))
                .map_err(|d| d.0.iter().map(ToString::to_string).collect())
        });
        let (dir, loaded, commit) = match loaded {
            Ok(p) => p,
            Err(errors) => {
                self.metrics.reload(false);
                inner.last_reload = Some(LastReload {
                    at,
                    ok: false,
                    errors: errors.clone(),
                });
                let _ = self
                    .audit
                    .record_control(ControlEvent {
                        event: control_event::RELOAD,
                        actor: actor.name.clone(),
                        remote: actor.remote.clone(),
                        generation: inner.generation,
                        result: "failed",
                        detail: Some(errors.join("\n")),
                        ..ControlEvent::default()
                    })
                    .await;
                return Err(ReloadError { errors });
            }
        };
        let old: BTreeSet<String> = inner.patches.iter().map(|p| p.id.clone()).collect();
        let new: BTreeSet<String> = loaded.iter().map(|p| p.id.clone()).collect();
        let report = ReloadReport {
            generation: inner.generation + 1,
            patches: loaded.len(),
            added: new.difference(&old).cloned().collect(),
            removed: old.difference(&new).cloned().collect(),
        };
        commit();
        inner.patches = loaded.into_iter().map(Arc::new).collect();
        inner.dir = dir;
        inner.generation += 1;
        let set = inner.build(inner.generation, &inner.states);
        self.current.store(Arc::new(set));
        let (a, m, u) = inner.counts();
        self.metrics.set_snapshot(inner.generation, a, m, u);
        self.metrics.reload(true);
        inner.last_reload = Some(LastReload {
            at,
            ok: true,
            errors: Vec::new(),
        });
        let detail = format!(
            "{} patches from {}; added: [{}]; removed: [{}]",
            report.patches,
            inner.dir.display(),
            report.added.join(", "),
            report.removed.join(", ")
        );
        if let Err(e) = self
            .audit
            .record_control(ControlEvent {
                event: control_event::RELOAD,
                actor: actor.name.clone(),
                remote: actor.remote.clone(),
                generation: inner.generation,
                result: "ok",
                detail: Some(detail),
                ..ControlEvent::default()
            })
            .await
        {
            // A reload re-reads files the operator changed; it changes no recorded state, so
            // it stays in force, but the gap in the trail is reported loudly.
            tracing::error!("reload applied but not written to the audit log: {e}");
        }
        Ok(report)
    }

    /// Every patch with its state and hit counts, by id.
    pub async fn list(&self) -> Vec<PatchInfo> {
        let inner = self.inner.lock().await;
        let mut out: Vec<PatchInfo> = inner
            .patches
            .iter()
            .map(|p| {
                let hits = self.metrics.hits(&p.id);
                PatchInfo {
                    id: p.id.clone(),
                    cve: p.cve.clone(),
                    title: p.title.clone(),
                    severity: p.severity.as_str(),
                    product: p.product.clone(),
                    versions: p.versions.clone(),
                    state: inner.state_of(p),
                    file_mode: p.mode.as_str(),
                    action: p.action.name(),
                    hits_enforced: hits.enforced,
                    hits_monitored: hits.monitored,
                    last_hit: hits.last_hit.map(rfc3339),
                    file: p.file.display().to_string(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The control-plane status.
    pub async fn status(&self) -> Status {
        let inner = self.inner.lock().await;
        let (applied, monitor, unapplied) = inner.counts();
        Status {
            generation: inner.generation,
            patches_dir: inner.dir.display().to_string(),
            state_file: self.state_path.display().to_string(),
            persisted: self.read_only.is_none(),
            applied,
            monitor,
            unapplied,
            last_reload: inner.last_reload.clone(),
        }
    }

    /// The audit log changes are written to.
    #[must_use]
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The gateway's metrics.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
