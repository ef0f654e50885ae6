//! Import of an nmap service scan (`nmap -sV -oX scan.xml`): one fact per open port whose
//! service nmap identified, product taken from its CPE (`cpe:/a:vendor:product:version`) when
//! there is one.

use std::net::{IpAddr, SocketAddr};

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::{canonical_product, Fact, Source};

/// Why a scan cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("not an nmap XML scan: {0}")]
pub struct ImportError(String);

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .map(|a| a.value.into_owned())
}

#[derive(Default)]
struct Port {
    port: u16,
    open: bool,
    product: Option<String>,
    version: Option<String>,
    cpe: Option<String>,
}

/// The facts of a scan; `source` names the file for the audit trail.
///
/// # Errors
/// The text is not XML, or has no `nmaprun` root.
pub fn parse(xml: &str, source: &str, seen: u64) -> Result<Vec<(SocketAddr, Fact)>, ImportError> {
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    let mut root = false;
    let mut host: Option<IpAddr> = None;
    let mut port: Option<Port> = None;
    let mut in_cpe = false;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| ImportError(e.to_string()))?;
        match ev {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                "nmaprun" => root = true,
                "host" => host = None,
                "address" => {
                    if matches!(attr(&e, "addrtype").as_deref(), Some("ipv4" | "ipv6")) {
                        host = attr(&e, "addr").and_then(|a| a.parse().ok());
                    }
                }
                "port" => {
                    port = Some(Port {
                        port: attr(&e, "portid").and_then(|p| p.parse().ok()).unwrap_or(0),
                        ..Port::default()
                    });
                }
                "state" => {
                    if let Some(p) = port.as_mut() {
                        p.open = attr(&e, "state").as_deref() == Some("open");
                    }
                }
                "service" => {
                    if let Some(p) = port.as_mut() {
                        p.product = attr(&e, "product");
                        p.version = attr(&e, "version");
                    }
                }
                "cpe" => in_cpe = true,
                _ => {}
            },
            Event::Text(t) if in_cpe => {
                if let Some(p) = port.as_mut() {
                    let text = t.into_inner();
                    if p.cpe.is_none() && text.starts_with("cpe:/a:") {
                        p.cpe = Some(text.into_owned());
                    }
                }
            }
            Event::End(e) => match e.name().as_ref() {
                "cpe" => in_cpe = false,
                "port" => {
                    if let (Some(p), Some(ip)) = (port.take(), host) {
                        if p.open && (p.product.is_some() || p.cpe.is_some()) {
                            out.push((SocketAddr::new(ip, p.port), fact(&p, source, seen)));
                        }
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !root {
        return Err(ImportError("no <nmaprun> element".into()));
    }
    Ok(out)
}

fn fact(p: &Port, source: &str, seen: u64) -> Fact {
    // cpe:/a:vendor:product:version
    let from_cpe = p.cpe.as_deref().and_then(|c| {
        let mut parts = c.trim_start_matches("cpe:/a:").split(':');
        let vendor = parts.next()?;
        let product = parts.next()?;
        let version = parts.next().map(str::to_string);
        Some((format!("{vendor}:{product}"), version))
    });
    let (product, version) = match from_cpe {
        Some((prod, v)) => (
            Some(canonical_product(&prod).to_string()),
            v.or(p.version.clone()),
        ),
        None => (None, p.version.clone()),
    };
    Fact {
        product,
        version,
        source: Source::Import(source.to_string()),
        raw: format!(
            "{} {}{}",
            p.product.as_deref().unwrap_or("?"),
            p.version.as_deref().unwrap_or(""),
            p.cpe
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        ),
        seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_with_cpe_become_facts() {
        let xml = r#"<?xml version="1.0"?><nmaprun scanner="nmap"><host><status state="up"/>
<address addr="127.0.0.1" addrtype="ipv4"/><ports>
<port protocol="tcp" portid="8081"><state state="open" reason="syn-ack"/><service name="http" product="nginx" version="1.22.1" method="probed" conf="10"><cpe>cpe:/a:igor_sysoev:nginx:1.22.1</cpe></service></port>
<port protocol="tcp" portid="21"><state state="open"/><service name="ftp" product="vsftpd" version="3.0.3"><cpe>cpe:/a:vsftpd_project:vsftpd:3.0.3</cpe></service></port>
<port protocol="tcp" portid="9"><state state="closed"/><service name="discard"/></port>
<port protocol="tcp" portid="7000"><state state="open"/><service name="afs3-fileserver" product="Odd thing"/></port>
</ports></host></nmaprun>"#;
        let facts = parse(xml, "scan.xml", 5).unwrap();
        assert_eq!(facts.len(), 3);
        assert_eq!(facts[0].0, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(facts[0].1.product.as_deref(), Some("f5:nginx"));
        assert_eq!(facts[0].1.version.as_deref(), Some("1.22.1"));
        assert_eq!(facts[1].1.product.as_deref(), Some("vsftpd_project:vsftpd"));
        assert_eq!(
            facts[2].1.product, None,
            "no CPE: kept verbatim, product unknown"
        );
        assert!(parse("<html/>", "x", 0).is_err());
        assert!(parse("<nmaprun><", "x", 0).is_err());
    }
}
