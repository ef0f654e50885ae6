//! Attacker escalation: a source address that makes `strikes` neutralised exploit attempts
//! within `window` is refused for `ban` (HTTP `403`, FTP `421`, SMTP `554`). Off, monitor (log
//! what would be refused) or enforce; an allow-list exempts addresses. Every ban and expiry is
//! an audit event.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Whether escalation acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscalationMode {
    /// Strikes are not counted.
    #[default]
    Off,
    /// Bans are recorded (`would_ban`) but nobody is refused.
    Monitor,
    /// Banned sources are refused.
    Enforce,
}

/// Escalation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationConfig {
    /// Off, monitor or enforce.
    pub mode: EscalationMode,
    /// Neutralised attempts that trigger a ban.
    pub strikes: u32,
    /// Within this long.
    pub window: Duration,
    /// How long a ban lasts.
    pub ban: Duration,
    /// Networks never banned: (address, prefix length).
    pub allow: Vec<(IpAddr, u8)>,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        Self {
            mode: EscalationMode::Off,
            strikes: 5,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
            allow: Vec::new(),
        }
    }
}

fn in_net(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// A ban, as the API lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ban {
    /// The source address.
    pub source: String,
    /// Seconds left.
    pub remaining_s: u64,
    /// Strikes that caused it.
    pub strikes: u32,
    /// Whether it is enforced (monitor mode only records it).
    pub enforced: bool,
}

/// What a strike or a check changed, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `source` is now banned (or would be, in monitor mode).
    Banned {
        /// The source.
        source: IpAddr,
        /// Strikes within the window.
        strikes: u32,
        /// Whether refusals are enforced.
        enforced: bool,
    },
    /// `source`'s ban ended.
    Expired {
        /// The source.
        source: IpAddr,
    },
}

#[derive(Default)]
struct State {
    strikes: HashMap<IpAddr, VecDeque<Instant>>,
    bans: HashMap<IpAddr, (Instant, u32)>,
}

/// The escalation state of a gateway.
#[derive(Default)]
pub struct Escalation {
    config: EscalationConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for Escalation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escalation")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Escalation {
    /// Escalation with these settings.
    #[must_use]
    pub fn new(config: EscalationConfig) -> Self {
        Self {
            config,
            state: Mutex::default(),
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &EscalationConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a neutralised attempt from `source` at `now`; returns the ban it triggers.
    pub fn strike(&self, source: IpAddr, now: Instant) -> Option<Change> {
        if self.config.mode == EscalationMode::Off
            || self.config.allow.iter().any(|n| in_net(source, *n))
        {
            return None;
        }
        let mut st = self.lock();
        if st.bans.contains_key(&source) {
            return None;
        }
        let window = self.config.window;
        let q = st.strikes.entry(source).or_default();
        q.push_back(now);
        while q.front().is_some_and(|t| now.duration_since(*t) > window) {
            q.pop_front();
        }
        let n = u32::try_from(q.len()).unwrap_or(u32::MAX);
        if n < self.config.strikes {
            return None;
        }
        st.strikes.remove(&source);
        st.bans.insert(source, (now + self.config.ban, n));
        Some(Change::Banned {
            source,
            strikes: n,
            enforced: self.config.mode == EscalationMode::Enforce,
        })
    }

    /// Whether `source` is refused at `now` (enforce mode only); also reports an expired ban.
    pub fn check(&self, source: IpAddr, now: Instant) -> (bool, Option<Change>) {
        if self.config.mode == EscalationMode::Off {
            return (false, None);
        }
        let mut st = self.lock();
        match st.bans.get(&source) {
            Some((until, _)) if *until <= now => {
                st.bans.remove(&source);
                (false, Some(Change::Expired { source }))
            }
            Some(_) => (self.config.mode == EscalationMode::Enforce, None),
            None => (false, None),
        }
    }

    /// The bans in force at `now`.
    #[must_use]
    pub fn bans(&self, now: Instant) -> Vec<Ban> {
        let st = self.lock();
        let mut out: Vec<Ban> = st
            .bans
            .iter()
            .filter(|(_, (until, _))| *until > now)
            .map(|(ip, (until, n))| Ban {
                source: ip.to_string(),
                remaining_s: until.duration_since(now).as_secs(),
                strikes: *n,
                enforced: self.config.mode == EscalationMode::Enforce,
            })
            .collect();
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_within_the_window_ban_then_expire() {
        let e = Escalation::new(EscalationConfig {
            mode: EscalationMode::Enforce,
            strikes: 3,
            window: Duration::from_secs(10),
            ban: Duration::from_secs(30),
            allow: vec![("10.0.0.0".parse().unwrap(), 8)],
        });
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(e.strike(ip, t0), None);
        // The first strike leaves the window before the third.
        assert_eq!(e.strike(ip, t0 + Duration::from_secs(11)), None);
        assert_eq!(e.strike(ip, t0 + Duration::from_secs(12)), None);
        let ban = e.strike(ip, t0 + Duration::from_secs(13));
        assert_eq!(
            ban,
            Some(Change::Banned {
                source: ip,
                strikes: 3,
                enforced: true
            })
        );
        assert_eq!(e.check(ip, t0 + Duration::from_secs(20)), (true, None));
        assert_eq!(e.bans(t0 + Duration::from_secs(20))[0].remaining_s, 23);
        assert_eq!(
            e.check(ip, t0 + Duration::from_secs(44)),
            (false, Some(Change::Expired { source: ip }))
        );
        let allowed: IpAddr = "10.1.2.3".parse().unwrap();
        for i in 0..10 {
            assert_eq!(e.strike(allowed, t0 + Duration::from_secs(i)), None);
        }
        let monitor = Escalation::new(EscalationConfig {
            mode: EscalationMode::Monitor,
            strikes: 1,
            ..EscalationConfig::default()
        });
        assert!(matches!(
            monitor.strike(ip, t0),
            Some(Change::Banned {
                enforced: false,
                ..
            })
        ));
        assert!(!monitor.check(ip, t0).0, "monitor refuses nobody");
    }
}
