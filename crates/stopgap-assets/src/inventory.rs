//! `assets.toml`: what the operator states about the servers, by address or CIDR.
//!
//! ```toml
//! unknown_assets = "protect"        # or "skip": patches for servers of unknown product
//!
//! [[asset]]
//! address = "10.0.0.5:8080"         # or cidr = "10.0.0.0/24", or listener = "web"
//! product = "apache:http_server"
//! version = "2.4.49"                # optional
//! pin = ["SG-2021-41773"]           # optional: applied whatever the facts say ("*": all)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::Deserialize;
use stopgap_patch::Diagnostic;
use toml::Spanned;

use crate::{canonical_product, Fact, Source};

/// What to do with patches for a server whose product is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UnknownPolicy {
    /// Apply every patch (the default: better a needless refusal than an exposed server).
    #[default]
    Protect,
    /// Apply none until the product is known.
    Skip,
}

/// Which servers an entry speaks of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// One address and port.
    Address(SocketAddr),
    /// Any port of a network.
    Cidr(IpAddr, u8),
    /// The upstream of a listener of `stopgap.toml`, by name (resolved at start).
    Listener(String),
}

impl Matcher {
    fn matches(&self, server: SocketAddr) -> bool {
        match self {
            Self::Address(a) => *a == server,
            Self::Cidr(net, len) => match (net, server.ip()) {
                (IpAddr::V4(n), IpAddr::V4(s)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                    u32::from(*n) & mask == u32::from(s) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(s)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    u128::from(*n) & mask == u128::from(s) & mask
                }
                _ => false,
            },
            Self::Listener(_) => false,
        }
    }
}

/// One `[[asset]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryEntry {
    /// Which servers.
    pub matcher: Matcher,
    /// Canonical `vendor:product`.
    pub product: String,
    /// Version, when stated.
    pub version: Option<String>,
    /// Patches applied regardless (`*`: every patch).
    pub pin: Vec<String>,
    /// The file it comes from.
    pub file: String,
}

impl InventoryEntry {
    /// The entry as a fact.
    #[must_use]
    pub fn fact(&self) -> Fact {
        Fact {
            product: Some(self.product.clone()),
            version: self.version.clone(),
            source: Source::Inventory(self.file.clone()),
            raw: format!(
                "{} {}",
                self.product,
                self.version.as_deref().unwrap_or("(version not stated)")
            ),
            seen: 0,
        }
    }
}

/// The operator's statements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    /// Entries, first match wins (addresses before networks).
    pub entries: Vec<InventoryEntry>,
    /// The policy for unknown servers.
    pub unknown_assets: UnknownPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    unknown_assets: Option<Spanned<String>>,
    #[serde(default)]
    asset: Vec<RawAsset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsset {
    address: Option<Spanned<String>>,
    cidr: Option<Spanned<String>>,
    listener: Option<String>,
    product: Spanned<String>,
    version: Option<String>,
    #[serde(default)]
    pin: Vec<String>,
}

impl Inventory {
    /// Turns `listener = "name"` entries into the address of that listener's upstream.
    ///
    /// # Errors
    /// The names that are no listener of the configuration.
    pub fn resolve_listeners(
        &mut self,
        upstream_of: impl Fn(&str) -> Option<SocketAddr>,
    ) -> Result<(), Vec<String>> {
        let mut unknown = Vec::new();
        for e in &mut self.entries {
            if let Matcher::Listener(name) = &e.matcher {
                match upstream_of(name) {
                    Some(a) => e.matcher = Matcher::Address(a),
                    None => unknown.push(name.clone()),
                }
            }
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(unknown)
        }
    }

    /// The entry that speaks of `server`: an exact address first, else the longest network.
    #[must_use]
    pub fn entry_for(&self, server: SocketAddr) -> Option<&InventoryEntry> {
        self.entries
            .iter()
            .find(|e| matches!(e.matcher, Matcher::Address(a) if a == server))
            .or_else(|| {
                self.entries
                    .iter()
                    .filter(|e| e.matcher.matches(server))
                    .max_by_key(|e| match e.matcher {
                        Matcher::Cidr(_, len) => len,
                        Matcher::Address(_) | Matcher::Listener(_) => 255,
                    })
            })
    }

    /// The exact addresses it names.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.entries.iter().filter_map(|e| match e.matcher {
            Matcher::Address(a) => Some(a),
            Matcher::Cidr(..) | Matcher::Listener(_) => None,
        })
    }

    /// Reads and validates an inventory file.
    ///
    /// # Errors
    /// Every problem, located.
    pub fn load(path: &Path) -> Result<Self, Vec<Diagnostic>> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            vec![Diagnostic::at(
                path,
                "",
                0,
                format!("cannot read the asset inventory: {e}"),
            )]
        })?;
        Self::parse(path, &source)
    }

    /// Parses inventory text.
    ///
    /// # Errors
    /// Every problem, located.
    pub fn parse(path: &Path, source: &str) -> Result<Self, Vec<Diagnostic>> {
        let raw: RawInventory = toml::from_str(source).map_err(|e| {
            vec![Diagnostic::at(
                path,
                source,
                e.span().map_or(0, |s| s.start),
                e.message().trim().to_string(),
            )
            .with_hint("see docs/assets.md for the keys of assets.toml")]
        })?;
        let mut errors = Vec::new();
        let unknown_assets = match raw
            .unknown_assets
            .as_ref()
            .map(|s| (s.get_ref().as_str(), s.span()))
        {
            None | Some(("protect", _)) => UnknownPolicy::Protect,
            Some(("skip", _)) => UnknownPolicy::Skip,
            Some((other, span)) => {
                errors.push(
                    Diagnostic::at(
                        path,
                        source,
                        span.start,
                        format!("unknown policy `{other}`"),
                    )
                    .with_hint("unknown_assets is \"protect\" or \"skip\""),
                );
                UnknownPolicy::Protect
            }
        };
        let mut entries = Vec::new();
        for a in raw.asset {
            let matcher = match (&a.address, &a.cidr, &a.listener) {
                (None, None, Some(name)) => Some(Matcher::Listener(name.clone())),
                (Some(addr), None, None) => match addr.get_ref().parse::<SocketAddr>() {
                    Ok(s) => Some(Matcher::Address(s)),
                    Err(_) => {
                        errors.push(
                            Diagnostic::at(
                                path,
                                source,
                                addr.span().start,
                                format!("`{}` is not an IP:port address", addr.get_ref()),
                            )
                            .with_hint("address = \"10.0.0.5:8080\""),
                        );
                        None
                    }
                },
                (None, Some(cidr), None) => {
                    let parsed = cidr.get_ref().split_once('/').and_then(|(ip, len)| {
                        let ip: IpAddr = ip.parse().ok()?;
                        let len: u8 = len.parse().ok()?;
                        let max = if ip.is_ipv4() { 32 } else { 128 };
                        (len <= max).then_some(Matcher::Cidr(ip, len))
                    });
                    if parsed.is_none() {
                        errors.push(
                            Diagnostic::at(
                                path,
                                source,
                                cidr.span().start,
                                format!("`{}` is not a network", cidr.get_ref()),
                            )
                            .with_hint("cidr = \"10.0.0.0/24\""),
                        );
                    }
                    parsed
                }
                _ => {
                    errors.push(
                        Diagnostic::at(
                            path,
                            source,
                            a.product.span().start,
                            "an asset needs exactly one of `address` or `cidr`",
                        )
                        .with_hint("address = \"10.0.0.5:8080\" or cidr = \"10.0.0.0/24\""),
                    );
                    None
                }
            };
            let product = a.product.get_ref();
            if product.split(':').count() != 2 || product.split(':').any(str::is_empty) {
                errors.push(
                    Diagnostic::at(
                        path,
                        source,
                        a.product.span().start,
                        format!("product `{product}` is not `vendor:product`"),
                    )
                    .with_hint("product = \"apache:http_server\""),
                );
                continue;
            }
            if let Some(matcher) = matcher {
                entries.push(InventoryEntry {
                    matcher,
                    product: canonical_product(product).to_string(),
                    version: a.version,
                    pin: a.pin,
                    file: path.display().to_string(),
                });
            }
        }
        if errors.is_empty() {
            Ok(Self {
                entries,
                unknown_assets,
            })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_by_address_and_network_with_located_errors() {
        let src = "unknown_assets = \"skip\"\n[[asset]]\naddress = \"10.0.0.5:8080\"\nproduct = \"microsoft:iis\"\nversion = \"8.5\"\n[[asset]]\ncidr = \"10.0.0.0/24\"\nproduct = \"apache:http_server\"\n[[asset]]\ncidr = \"10.0.0.0/16\"\nproduct = \"f5:nginx\"\n";
        let inv = Inventory::parse(Path::new("assets.toml"), src).unwrap();
        assert_eq!(inv.unknown_assets, UnknownPolicy::Skip);
        let e = inv.entry_for("10.0.0.5:8080".parse().unwrap()).unwrap();
        assert_eq!(
            e.product, "microsoft:internet_information_services",
            "aliases are canonical"
        );
        let e = inv.entry_for("10.0.0.9:80".parse().unwrap()).unwrap();
        assert_eq!(e.product, "apache:http_server", "the longest network wins");
        let e = inv.entry_for("10.0.7.9:80".parse().unwrap()).unwrap();
        assert_eq!(e.product, "f5:nginx");
        assert!(inv.entry_for("192.0.2.1:80".parse().unwrap()).is_none());

        let mut by_name = Inventory::parse(
            Path::new("assets.toml"),
            "[[asset]]\nlistener = \"web\"\nproduct = \"apache:http_server\"\n",
        )
        .unwrap();
        assert_eq!(
            by_name.clone().resolve_listeners(|_| None),
            Err(vec!["web".to_string()])
        );
        by_name
            .resolve_listeners(|n| (n == "web").then(|| "10.1.1.1:80".parse().unwrap()))
            .unwrap();
        assert!(by_name.entry_for("10.1.1.1:80".parse().unwrap()).is_some());

        let bad =
            "[[asset]]\naddress = \"nowhere\"\nproduct = \"iis\"\n[[asset]]\nproduct = \"a:b\"\n";
        let errors = Inventory::parse(Path::new("assets.toml"), bad).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|d| d.line).collect();
        assert_eq!(lines, [2, 3, 5], "{errors:?}");
    }
}
