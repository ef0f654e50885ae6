//! Controller tests: lifecycle, persistence, failures that keep everything as it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stopgap_proxy::audit::AuditTarget;
use stopgap_proxy::{AuditLog, Metrics};

use crate::controller::{Actor, ChangeError, Controller};
use crate::state::{self, PatchState};

struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("stopgap-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("patches")).unwrap();
        let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../patches");
        for f in [
            "SG-2015-1635-httpsys-range.toml",
            "SG-2021-44228-log4shell.toml",
        ] {
            std::fs::copy(lib.join(f), d.join("patches").join(f)).unwrap();
        }
        Self(d)
    }
    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.0.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(s: &Scratch, read_only: Option<String>) -> Controller {
    let audit = AuditLog::start(
        AuditTarget::File(s.0.join("audit.jsonl")),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    Controller::start(
        &s.0.join("patches"),
        &s.0.join("state.toml"),
        read_only,
        audit,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn applied_ids(c: &Controller) -> Vec<String> {
    let snap = c.snapshot().load_full();
    snap.request_patches()
        .iter()
        .chain(snap.response_patches())
        .map(|a| format!("{}:{}", a.patch.id, a.mode.as_str()))
        .collect()
}

#[test]
fn changes_swap_a_new_generation_persist_and_are_logged() {
    let s = Scratch::new("swap");
    rt().block_on(async {
        let c = start(&s, None);
        assert_eq!(c.snapshot().load().generation, 1);
        assert_eq!(applied_ids(&c).len(), 2, "files ask for enforce");
        let ops = Actor::named("ops");
        let r = c
            .set_state(&["SG-2015-1635".into()], PatchState::Unapplied, &ops)
            .await
            .unwrap();
        assert_eq!(r.generation, 2);
        assert_eq!(c.snapshot().load().generation, 2);
        assert_eq!(applied_ids(&c), ["SG-2021-44228:enforce"]);
        let r = c
            .set_state(
                &["SG-2015-1635".into(), "SG-2021-44228".into()],
                PatchState::Monitor,
                &ops,
            )
            .await
            .unwrap();
        assert_eq!(r.generation, 3);
        let mut ids = applied_ids(&c);
        ids.sort();
        assert_eq!(ids, ["SG-2015-1635:monitor", "SG-2021-44228:monitor"]);
        // The same call again changes nothing and keeps the generation.
        let r = c
            .set_state(&["SG-2015-1635".into()], PatchState::Monitor, &ops)
            .await
            .unwrap();
        assert_eq!((r.generation, r.patches[0].changed), (3, false));
        let on_disk = state::load(&s.0.join("state.toml")).unwrap().unwrap();
        assert_eq!(on_disk["SG-2015-1635"], PatchState::Monitor);
        let log = s.audit_lines();
        let changes: Vec<_> = log
            .iter()
            .filter(|e| e["event"] == "patch_state" && e["result"] == "ok")
            .collect();
        assert_eq!(changes.len(), 3, "{log:?}");
        assert_eq!(changes[0]["actor"], "ops");
        assert_eq!(changes[0]["old_state"], "applied");
        assert_eq!(changes[0]["new_state"], "unapplied");
        assert_eq!(changes[0]["generation"], 2);
    });
    // A restart reads the states back.
    rt().block_on(async {
        let c = start(&s, None);
        let mut ids = applied_ids(&c);
        ids.sort();
        assert_eq!(ids, ["SG-2015-1635:monitor", "SG-2021-44228:monitor"]);
    });
}

#[test]
fn unknown_ids_read_only_and_unwritable_state_change_nothing() {
    let s = Scratch::new("refuse");
    rt().block_on(async {
        let c = start(&s, None);
        let ops = Actor::named("ops");
        let e = c
            .set_state(
                &["SG-2015-1635".into(), "SG-0000-0000".into()],
                PatchState::Unapplied,
                &ops,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ChangeError::UnknownPatches(ref v) if v == &["SG-0000-0000"]));
        assert_eq!(c.snapshot().load().generation, 1);
        assert_eq!(
            applied_ids(&c).len(),
            2,
            "nothing changed, not even the known id"
        );
        // The state file cannot be replaced: a directory stands where it would go.
        std::fs::create_dir_all(s.0.join("state.toml").join("x")).unwrap();
        let e = c
            .set_state(&["SG-2015-1635".into()], PatchState::Unapplied, &ops)
            .await
            .unwrap_err();
        assert!(matches!(e, ChangeError::Persist { .. }), "{e}");
        assert_eq!(applied_ids(&c).len(), 2);
        let failed = s
            .audit_lines()
            .into_iter()
            .filter(|e| e["result"] == "failed")
            .count();
        assert_eq!(failed, 2, "failed calls are logged too");
    });
    let s = Scratch::new("ro");
    rt().block_on(async {
        let c = start(&s, Some("another gateway owns it".into()));
        let e = c
            .set_state(
                &["SG-2015-1635".into()],
                PatchState::Unapplied,
                &Actor::named("x"),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ChangeError::ReadOnly(_)));
        assert!(!s.0.join("state.toml").exists());
    });
}

#[test]
fn a_broken_reload_keeps_the_old_snapshot_and_reports_located_errors() {
    let s = Scratch::new("reload");
    rt().block_on(async {
        let c = start(&s, None);
        let ops = Actor::named("ops");
        c.set_state(&["SG-2021-44228".into()], PatchState::Unapplied, &ops)
            .await
            .unwrap();
        let good = c.snapshot().load_full();
        std::fs::write(
            s.0.join("patches/SG-2099-0001.toml"),
            "id = \"SG-2099-0001\"\ntitle = \"x\"\nbogus = 1\n",
        )
        .unwrap();
        let e = c.reload(&ops).await.unwrap_err();
        assert!(
            e.errors.iter().any(|m| m.contains("SG-2099-0001.toml:")),
            "{e}"
        );
        assert!(Arc::ptr_eq(&good, &c.snapshot().load_full()));
        let st = c.status().await;
        assert!(!st.last_reload.as_ref().unwrap().ok);
        std::fs::remove_file(s.0.join("patches/SG-2099-0001.toml")).unwrap();
        std::fs::remove_file(s.0.join("patches/SG-2015-1635-httpsys-range.toml")).unwrap();
        let r = c.reload(&ops).await.unwrap();
        assert_eq!(
            (r.generation, r.removed.clone()),
            (3, vec!["SG-2015-1635".to_string()])
        );
        assert!(
            applied_ids(&c).is_empty(),
            "the remaining patch stays unapplied"
        );
        assert!(c.status().await.last_reload.unwrap().ok);
    });
}

#[test]
fn a_broken_state_file_stops_the_start_with_its_location() {
    let s = Scratch::new("broken");
    std::fs::write(
        s.0.join("state.toml"),
        "version = 1\n[patches]\nSG-2015-1635 = \"off\"\n",
    )
    .unwrap();
    rt().block_on(async {
        let audit = AuditLog::start(AuditTarget::Stderr, Arc::default()).unwrap();
        let e = Controller::start(&s.0.join("patches"), &s.0.join("state.toml"), None, audit)
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("state.toml:3:"), "{text}");
        assert!(text.contains("`off` is not a patch state"), "{text}");
    });
}
