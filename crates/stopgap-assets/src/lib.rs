//! stopgap asset awareness: what each upstream server runs, and which patches apply to it.
//!
//! What it does:
//! - keeps, per upstream address, facts about the server's product and version with their
//!   source and time: the operator's inventory (`assets.toml`), imports, and passive
//!   fingerprints of banners seen in traffic ([`fingerprint`]); precedence is explicit:
//!   inventory > import > banner, the latest fact of the strongest source wins;
//! - decides per patch and server: apply, skip (another product, or an unknown server under
//!   the `skip` policy) or retire (the server runs a version outside the patch's affected
//!   range), and builds per-server patch snapshots in which skipped and retired patches are
//!   still evaluated but only logged;
//! - reports retirements and re-engagements as the facts change, for the audit trail.
//!
//! What it does not do: active scanning, or I/O of its own (the proxy feeds it banners and
//! writes its events).
#![warn(missing_docs)]

pub mod fingerprint;
pub mod inventory;
pub mod nmap;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use stopgap_patch::version::Version;
use stopgap_patch::{Applied, Mode, Patch, PatchSet};

pub use fingerprint::{fingerprint, BannerKind, Fingerprint};
pub use inventory::{Inventory, InventoryEntry, UnknownPolicy};

/// Product names that mean the same software.
const ALIASES: &[(&str, &str)] = &[
    ("microsoft:iis", "microsoft:internet_information_services"),
    (
        "microsoft:internet_information_server",
        "microsoft:internet_information_services",
    ),
    ("nginx:nginx", "f5:nginx"),
    ("igor_sysoev:nginx", "f5:nginx"),
    ("apache:httpd", "apache:http_server"),
];

/// The canonical name of a `vendor:product`.
#[must_use]
pub fn canonical_product(product: &str) -> &str {
    let p = product.trim();
    ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(p))
        .map_or(p, |(_, canonical)| canonical)
}

/// Where a fact comes from; stronger sources win.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "lowercase")]
pub enum Source {
    /// A banner seen in traffic.
    Banner(String),
    /// An imported scan.
    Import(String),
    /// The operator's inventory file.
    Inventory(String),
}

impl Source {
    fn rank(&self) -> u8 {
        match self {
            Self::Banner(_) => 1,
            Self::Import(_) => 2,
            Self::Inventory(_) => 3,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Banner(k) => k.clone(),
            Self::Import(f) => format!("import {f}"),
            Self::Inventory(f) => format!("inventory {f}"),
        }
    }
}

/// One fact about a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Fact {
    /// Canonical `vendor:product`, or `None` for a banner of unknown format.
    pub product: Option<String>,
    /// The version, when known.
    pub version: Option<String>,
    /// Where it comes from.
    pub source: Source,
    /// The banner or line it was read from.
    pub raw: String,
    /// When it was last seen (seconds since the epoch).
    pub seen: u64,
}

/// What a patch does on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "reason", rename_all = "lowercase")]
pub enum Targeting {
    /// In force.
    Apply,
    /// Not for this server.
    Skip(String),
    /// The server runs a fixed version.
    Retire(String),
}

/// A patch changing between applied and retired on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The server.
    pub server: SocketAddr,
    /// The patch.
    pub patch: String,
    /// `true`: retired; `false`: re-engaged.
    pub retired: bool,
    /// Why, with the evidence (`vendor fix observed: …`).
    pub reason: String,
}

#[derive(Debug, Default)]
struct Asset {
    facts: Vec<Fact>,
}

impl Asset {
    fn effective(&self) -> Option<&Fact> {
        self.facts
            .iter()
            .filter(|f| f.product.is_some())
            .max_by_key(|f| (f.source.rank(), f.seen))
    }
}

/// Decides what `patch` does on a server whose effective fact is `fact`.
#[must_use]
pub fn decide(
    patch: &Patch,
    fact: Option<&Fact>,
    pinned: bool,
    policy: UnknownPolicy,
) -> Targeting {
    if pinned {
        return Targeting::Apply;
    }
    let Some(fact) = fact else {
        return match policy {
            UnknownPolicy::Protect => Targeting::Apply,
            UnknownPolicy::Skip => Targeting::Skip("server product unknown (policy: skip)".into()),
        };
    };
    let product = fact.product.as_deref().unwrap_or_default();
    if canonical_product(&patch.product) != product {
        return Targeting::Skip(format!(
            "server runs {product}, the patch is for {}",
            canonical_product(&patch.product)
        ));
    }
    let (Some(version), Some(range)) = (fact.version.as_deref(), patch.range.as_ref()) else {
        return Targeting::Apply;
    };
    let Some(v) = Version::parse(version) else {
        return Targeting::Apply;
    };
    if range.contains(&v) {
        Targeting::Apply
    } else {
        Targeting::Retire(format!(
            "vendor fix observed: {product} {version} ({}), outside {}",
            fact.source.describe(),
            patch.versions
        ))
    }
}

/// A server and the unknown-assets policy its listener uses.
type CacheKey = (SocketAddr, Option<UnknownPolicy>);
/// A per-server snapshot with the base generation and table epoch it was built from.
type CachedSet = (u64, u64, Arc<PatchSet>);

#[derive(Default)]
struct Inner {
    assets: HashMap<SocketAddr, Asset>,
    epoch: u64,
    cache: HashMap<CacheKey, CachedSet>,
    inventory: Inventory,
}

/// The asset table of a gateway, shared by its connections.
#[derive(Default)]
pub struct Assets {
    inner: Mutex<Inner>,
    /// A copy of the table's epoch readable without the lock: connections keep the snapshot
    /// [`Assets::patches_for`] gave them until it or the patch generation moves.
    epoch: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Assets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Assets")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One server as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AssetReport {
    /// The server.
    pub server: String,
    /// The fact in force.
    pub product: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Every fact, strongest source first.
    pub facts: Vec<Fact>,
    /// Per patch: what it does here, and why.
    pub patches: Vec<(String, Targeting)>,
}

impl Assets {
    /// A table seeded from an inventory.
    #[must_use]
    pub fn new(inventory: Inventory) -> Self {
        let a = Self::default();
        a.inner.lock().unwrap_or_else(|p| p.into_inner()).inventory = inventory;
        a
    }

    /// The table's epoch: it moves whenever a fact changes, so that a snapshot from
    /// [`Assets::patches_for`] taken at the same epoch and generation is still current.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn effective_fact(inner: &Inner, server: SocketAddr) -> Option<Fact> {
        let mut candidates: Vec<Fact> = inner
            .assets
            .get(&server)
            .map(|a| a.facts.clone())
            .unwrap_or_default();
        if let Some(e) = inner.inventory.entry_for(server) {
            candidates.push(e.fact());
        }
        let asset = Asset { facts: candidates };
        asset.effective().cloned()
    }

    fn decisions(
        inner: &Inner,
        server: SocketAddr,
        base: &PatchSet,
        policy: Option<UnknownPolicy>,
    ) -> Vec<(Applied, Targeting)> {
        let fact = Self::effective_fact(inner, server);
        let entry = inner.inventory.entry_for(server);
        let policy = policy.unwrap_or(inner.inventory.unknown_assets);
        base.all()
            .map(|a| {
                let pinned =
                    entry.is_some_and(|e| e.pin.iter().any(|p| p == &a.patch.id || p == "*"));
                (a.clone(), decide(&a.patch, fact.as_ref(), pinned, policy))
            })
            .collect()
    }

    /// The patch snapshot for connections to `server`: `base` with patches that do not apply
    /// to it turned into logged-only ones. `policy` overrides the inventory's policy for
    /// servers of unknown product (a listener's own setting). Cached per base generation and
    /// table epoch.
    pub fn patches_for(
        &self,
        server: SocketAddr,
        base: &Arc<PatchSet>,
        policy: Option<UnknownPolicy>,
    ) -> Arc<PatchSet> {
        let mut inner = self.lock();
        let epoch = inner.epoch;
        if let Some((generation, e, set)) = inner.cache.get(&(server, policy)) {
            if *generation == base.generation && *e == epoch {
                return set.clone();
            }
        }
        let applied: Vec<Applied> = Self::decisions(&inner, server, base, policy)
            .into_iter()
            .map(|(mut a, t)| {
                match t {
                    Targeting::Apply => {}
                    Targeting::Skip(_) => a.mode = Mode::AssetSkipped,
                    Targeting::Retire(_) => a.mode = Mode::AssetRetired,
                }
                a
            })
            .collect();
        let set = Arc::new(PatchSet::new(base.generation, applied));
        inner
            .cache
            .insert((server, policy), (base.generation, epoch, set.clone()));
        set
    }

    /// Records a banner seen from `server`; returns the patches it retires or re-engages.
    pub fn observe(
        &self,
        server: SocketAddr,
        kind: BannerKind,
        banner: &str,
        base: &PatchSet,
    ) -> Vec<Transition> {
        let fp = fingerprint(kind, banner);
        let fact = Fact {
            product: fp.as_ref().map(|f| f.product.to_string()),
            version: fp.and_then(|f| f.version),
            source: Source::Banner(kind.as_str().to_string()),
            raw: banner.chars().take(200).collect(),
            seen: now(),
        };
        self.record(server, fact, base)
    }

    /// Records an imported fact about `server`; returns the transitions it causes.
    pub fn import(&self, server: SocketAddr, fact: Fact, base: &PatchSet) -> Vec<Transition> {
        self.record(server, fact, base)
    }

    fn record(&self, server: SocketAddr, fact: Fact, base: &PatchSet) -> Vec<Transition> {
        let mut inner = self.lock();
        let before = Self::decisions(&inner, server, base, None);
        let asset = inner.assets.entry(server).or_default();
        // One fact per kind of source: the newest replaces the previous one (a new scan
        // replaces the previous scan's word on that server).
        let same_kind = |a: &Source, b: &Source| {
            std::mem::discriminant(a) == std::mem::discriminant(b)
                && (matches!(a, Source::Import(_)) || a == b)
        };
        if let Some(old) = asset
            .facts
            .iter_mut()
            .find(|f| same_kind(&f.source, &fact.source))
        {
            if old.product == fact.product && old.version == fact.version && old.raw == fact.raw {
                old.seen = fact.seen;
                return Vec::new();
            }
            *old = fact;
        } else {
            asset.facts.push(fact);
        }
        inner.epoch += 1;
        self.epoch
            .store(inner.epoch, std::sync::atomic::Ordering::Release);
        let after = Self::decisions(&inner, server, base, None);
        before
            .into_iter()
            .zip(after)
            .filter_map(|((a, old), (_, new))| match (old, new) {
                (Targeting::Apply, Targeting::Retire(reason)) => Some(Transition {
                    server,
                    patch: a.patch.id.clone(),
                    retired: true,
                    reason,
                }),
                (Targeting::Retire(_), Targeting::Apply) => Some(Transition {
                    server,
                    patch: a.patch.id.clone(),
                    retired: false,
                    reason: "vulnerable version observed again: patch re-engaged".into(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The imported facts, to persist them.
    #[must_use]
    pub fn imported(&self) -> Vec<(SocketAddr, Fact)> {
        let inner = self.lock();
        let mut out: Vec<(SocketAddr, Fact)> = inner
            .assets
            .iter()
            .flat_map(|(addr, a)| {
                a.facts
                    .iter()
                    .filter(|f| matches!(f.source, Source::Import(_)))
                    .map(|f| (*addr, f.clone()))
            })
            .collect();
        out.sort_by_key(|(a, _)| *a);
        out
    }

    /// Every known server (seen in traffic, imported, or in the inventory by address), with
    /// its facts and what each patch does there.
    #[must_use]
    pub fn report(&self, base: &PatchSet) -> Vec<AssetReport> {
        let inner = self.lock();
        let mut servers: Vec<SocketAddr> = inner.assets.keys().copied().collect();
        servers.extend(inner.inventory.addresses());
        servers.sort();
        servers.dedup();
        servers
            .into_iter()
            .map(|server| {
                let mut facts = inner
                    .assets
                    .get(&server)
                    .map(|a| a.facts.clone())
                    .unwrap_or_default();
                if let Some(e) = inner.inventory.entry_for(server) {
                    facts.push(e.fact());
                }
                facts.sort_by_key(|f| std::cmp::Reverse((f.source.rank(), f.seen)));
                let effective = Self::effective_fact(&inner, server);
                AssetReport {
                    server: server.to_string(),
                    product: effective.as_ref().and_then(|f| f.product.clone()),
                    version: effective.and_then(|f| f.version),
                    facts,
                    patches: Self::decisions(&inner, server, base, None)
                        .into_iter()
                        .map(|(a, t)| (a.patch.id.clone(), t))
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn library() -> Arc<PatchSet> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../patches");
        Arc::new(PatchSet::from_patches(
            7,
            stopgap_patch::load_dir(&dir).unwrap_or_else(|e| panic!("{e}")),
        ))
    }

    fn mode_of(set: &PatchSet, id: &str) -> Mode {
        set.all().find(|a| a.patch.id == id).unwrap().mode
    }

    #[test]
    fn banners_target_retire_and_reengage() {
        let base = library();
        let assets = Assets::default();
        let server: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        // Unknown server, policy protect: everything applies.
        let set = assets.patches_for(server, &base, None);
        assert_eq!(mode_of(&set, "SG-2021-41773"), Mode::Enforce);
        assert_eq!(set.generation, 7);

        // nginx: the Apache patches are skipped.
        let t = assets.observe(server, BannerKind::HttpServer, "nginx/1.22.1", &base);
        assert!(t.is_empty());
        let set = assets.patches_for(server, &base, None);
        assert_eq!(mode_of(&set, "SG-2021-41773"), Mode::AssetSkipped);

        // Apache 2.4.49: in range. Then 2.4.51: retired, with evidence. Then back: re-engaged.
        assets.observe(
            server,
            BannerKind::HttpServer,
            "Apache/2.4.49 (Unix)",
            &base,
        );
        assert_eq!(
            mode_of(&assets.patches_for(server, &base, None), "SG-2021-41773"),
            Mode::Enforce
        );
        let t = assets.observe(
            server,
            BannerKind::HttpServer,
            "Apache/2.4.51 (Unix)",
            &base,
        );
        let ids: Vec<&str> = t.iter().map(|t| t.patch.as_str()).collect();
        assert!(
            ids.contains(&"SG-2021-41773") && ids.contains(&"SG-2021-42013"),
            "{ids:?}"
        );
        assert!(t.iter().all(|t| t.retired
            && t.reason.starts_with(
                "vendor fix observed: apache:http_server 2.4.51 (http server header)"
            )));
        assert_eq!(
            mode_of(&assets.patches_for(server, &base, None), "SG-2021-41773"),
            Mode::AssetRetired
        );
        assert_eq!(
            mode_of(&assets.patches_for(server, &base, None), "SG-2021-40438"),
            Mode::AssetRetired,
            "<=2.4.48 is retired too"
        );
        let t = assets.observe(
            server,
            BannerKind::HttpServer,
            "Apache/2.4.50 (Unix)",
            &base,
        );
        let back: Vec<&str> = t
            .iter()
            .filter(|t| !t.retired)
            .map(|t| t.patch.as_str())
            .collect();
        assert_eq!(
            back,
            ["SG-2021-42013"],
            "2.4.50 is vulnerable to 42013 only"
        );
        // Retirement is per server.
        let other: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(
            mode_of(&assets.patches_for(other, &base, None), "SG-2021-41773"),
            Mode::Enforce
        );
    }

    #[test]
    fn the_inventory_beats_a_banner_and_pins_hold() {
        let base = library();
        let inv = Inventory::parse(
            Path::new("assets.toml"),
            "[[asset]]\naddress = \"127.0.0.1:8081\"\nproduct = \"apache:http_server\"\nversion = \"2.4.49\"\npin = [\"SG-2015-1635\"]\n",
        )
        .unwrap();
        let assets = Assets::new(inv);
        let server: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        assets.observe(server, BannerKind::HttpServer, "nginx/1.25.3", &base);
        let set = assets.patches_for(server, &base, None);
        assert_eq!(
            mode_of(&set, "SG-2021-41773"),
            Mode::Enforce,
            "the operator's word wins"
        );
        assert_eq!(
            mode_of(&set, "SG-2015-1635"),
            Mode::Enforce,
            "pinned although IIS"
        );
        assert_eq!(mode_of(&set, "SG-2019-10149"), Mode::AssetSkipped);
        let report = assets.report(&base);
        assert_eq!(report[0].product.as_deref(), Some("apache:http_server"));
        assert_eq!(report[0].facts.len(), 2);
    }
}
