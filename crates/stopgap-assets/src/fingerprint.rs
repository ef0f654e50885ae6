//! Passive fingerprints: what server software a banner names.
//!
//! The table maps known banner formats (HTTP `Server`, `X-Powered-By`, `X-AspNet-Version`; the
//! FTP and SMTP `220` greetings) to a `vendor:product` and, where the banner says it, a version.
//! Unknown banners are kept verbatim by the caller.

use std::sync::OnceLock;

use regex::Regex;

/// Where a banner was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BannerKind {
    /// HTTP `Server` response header.
    HttpServer,
    /// HTTP `X-Powered-By` response header.
    HttpPoweredBy,
    /// HTTP `X-AspNet-Version` response header.
    HttpAspNet,
    /// FTP `220` greeting.
    FtpGreeting,
    /// SMTP `220` greeting.
    SmtpGreeting,
}

impl BannerKind {
    /// A short name for events and the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpServer => "http server header",
            Self::HttpPoweredBy => "http x-powered-by header",
            Self::HttpAspNet => "http x-aspnet-version header",
            Self::FtpGreeting => "ftp greeting",
            Self::SmtpGreeting => "smtp greeting",
        }
    }
}

/// A product (and maybe its version) named by a banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Canonical `vendor:product`.
    pub product: &'static str,
    /// The version, when the banner gives it.
    pub version: Option<String>,
}

struct Rule {
    kinds: &'static [BannerKind],
    pattern: &'static str,
    product: &'static str,
}

const HTTP: &[BannerKind] = &[BannerKind::HttpServer];
const POWERED: &[BannerKind] = &[BannerKind::HttpPoweredBy];
const FTP: &[BannerKind] = &[BannerKind::FtpGreeting];
const SMTP: &[BannerKind] = &[BannerKind::SmtpGreeting];

/// Known banner formats; the `v` group is the version. The first match wins.
const RULES: &[Rule] = &[
    Rule {
        kinds: HTTP,
        pattern: r"(?i)^Apache-Coyote/",
        product: "apache:tomcat",
    },
    Rule {
        kinds: HTTP,
        pattern: r"(?i)^Apache(?:/(?P<v>[0-9][0-9A-Za-z.]*))?",
        product: "apache:http_server",
    },
    Rule {
        kinds: HTTP,
        pattern: r"(?i)^nginx(?:/(?P<v>[0-9][0-9.]*))?",
        product: "f5:nginx",
    },
    Rule {
        kinds: HTTP,
        pattern: r"(?i)^Microsoft-IIS(?:/(?P<v>[0-9][0-9.]*))?",
        product: "microsoft:internet_information_services",
    },
    Rule {
        kinds: HTTP,
        pattern: r"(?i)^Microsoft-HTTPAPI(?:/(?P<v>[0-9][0-9.]*))?",
        product: "microsoft:windows",
    },
    Rule {
        kinds: HTTP,
        pattern: r"(?i)^Jetty\((?P<v>[0-9][0-9A-Za-z.\-]*)\)",
        product: "eclipse:jetty",
    },
    Rule {
        kinds: HTTP,
        pattern: r"(?i)^lighttpd(?:/(?P<v>[0-9][0-9.]*))?",
        product: "lighttpd:lighttpd",
    },
    Rule {
        kinds: HTTP,
        pattern: r"(?i)^openresty(?:/(?P<v>[0-9][0-9.]*))?",
        product: "openresty:openresty",
    },
    Rule {
        kinds: HTTP,
        pattern: r"(?i)^BigIP",
        product: "f5:big-ip",
    },
    Rule {
        kinds: POWERED,
        pattern: r"(?i)^PHP/(?P<v>[0-9][0-9A-Za-z.\-]*)",
        product: "php:php",
    },
    Rule {
        kinds: POWERED,
        pattern: r"(?i)^Servlet/[0-9.]+ JSP/[0-9.]+ \(Apache Tomcat/(?P<v>[0-9][0-9A-Za-z.\-]*)",
        product: "apache:tomcat",
    },
    Rule {
        kinds: POWERED,
        pattern: r"(?i)^ASP\.NET",
        product: "microsoft:asp.net",
    },
    Rule {
        kinds: &[BannerKind::HttpAspNet],
        pattern: r"^(?P<v>[0-9][0-9.]*)",
        product: "microsoft:asp.net",
    },
    Rule {
        kinds: FTP,
        pattern: r"\(vsFTPd (?P<v>[0-9][0-9A-Za-z.]*)\)",
        product: "vsftpd_project:vsftpd",
    },
    Rule {
        kinds: FTP,
        pattern: r"ProFTPD (?P<v>[0-9][0-9A-Za-z.]*)",
        product: "proftpd:proftpd",
    },
    Rule {
        kinds: FTP,
        pattern: r"Pure-FTPd",
        product: "pureftpd:pure-ftpd",
    },
    Rule {
        kinds: FTP,
        pattern: r"FileZilla Server(?: version)? (?P<v>[0-9][0-9A-Za-z.]*)",
        product: "filezilla-project:filezilla_server",
    },
    Rule {
        kinds: FTP,
        pattern: r"WAR-FTPD (?P<v>[0-9][0-9.]*)",
        product: "jgaa:war_ftpd",
    },
    Rule {
        kinds: FTP,
        pattern: r"FreeFloat Ftp Server \(Version (?P<v>[0-9][0-9.]*)\)",
        product: "freefloat:freefloat_ftp_server",
    },
    Rule {
        kinds: FTP,
        pattern: r"PCMan's FTP Server (?P<v>[0-9][0-9.]*)",
        product: "pcman:pcman_ftp_server",
    },
    Rule {
        kinds: SMTP,
        pattern: r"ESMTP Exim (?P<v>[0-9][0-9.]*)",
        product: "exim:exim",
    },
    Rule {
        kinds: SMTP,
        pattern: r"ESMTP Postfix",
        product: "postfix:postfix",
    },
    Rule {
        kinds: SMTP,
        pattern: r"ESMTP OpenSMTPD",
        product: "openbsd:opensmtpd",
    },
    Rule {
        kinds: SMTP,
        pattern: r"Sendmail (?P<v>[0-9][0-9.]*)",
        product: "sendmail:sendmail",
    },
    Rule {
        kinds: SMTP,
        pattern: r"Microsoft ESMTP MAIL Service",
        product: "microsoft:exchange_server",
    },
];

fn compiled() -> &'static [(Regex, &'static Rule)] {
    static TABLE: OnceLock<Vec<(Regex, &'static Rule)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        RULES
            .iter()
            .map(|r| {
                (
                    Regex::new(r.pattern).expect("fingerprint patterns are valid"),
                    r,
                )
            })
            .collect()
    })
}

/// The product a banner names, if it is a known format.
#[must_use]
pub fn fingerprint(kind: BannerKind, banner: &str) -> Option<Fingerprint> {
    let banner = banner.trim();
    // FTP/SMTP greetings: the text after the reply code.
    let text = match kind {
        BannerKind::FtpGreeting | BannerKind::SmtpGreeting => banner.get(4..).unwrap_or(banner),
        _ => banner,
    };
    compiled()
        .iter()
        .filter(|(_, r)| r.kinds.contains(&kind))
        .find_map(|(re, r)| {
            re.captures(text).map(|c| Fingerprint {
                product: r.product,
                version: c.name("v").map(|m| m.as_str().to_string()),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(kind: BannerKind, s: &str) -> Option<(&'static str, Option<String>)> {
        fingerprint(kind, s).map(|f| (f.product, f.version))
    }

    #[test]
    fn real_banners() {
        use BannerKind::*;
        let cases: &[(BannerKind, &str, &str, Option<&str>)] = &[
            (
                HttpServer,
                "Apache/2.4.49 (Unix)",
                "apache:http_server",
                Some("2.4.49"),
            ),
            (
                HttpServer,
                "Apache/2.4.57 (Debian)",
                "apache:http_server",
                Some("2.4.57"),
            ),
            (HttpServer, "Apache", "apache:http_server", None),
            (HttpServer, "nginx/1.22.1", "f5:nginx", Some("1.22.1")),
            (HttpServer, "nginx", "f5:nginx", None),
            (
                HttpServer,
                "Microsoft-IIS/10.0",
                "microsoft:internet_information_services",
                Some("10.0"),
            ),
            (
                HttpServer,
                "Microsoft-HTTPAPI/2.0",
                "microsoft:windows",
                Some("2.0"),
            ),
            (
                HttpServer,
                "Jetty(9.4.51.v20230217)",
                "eclipse:jetty",
                Some("9.4.51.v20230217"),
            ),
            (HttpServer, "Apache-Coyote/1.1", "apache:tomcat", None),
            (
                HttpPoweredBy,
                "PHP/8.1.2-1ubuntu2.14",
                "php:php",
                Some("8.1.2-1ubuntu2.14"),
            ),
            (
                HttpPoweredBy,
                "Servlet/3.0 JSP/2.2 (Apache Tomcat/7.0.79 Java/Oracle)",
                "apache:tomcat",
                Some("7.0.79"),
            ),
            (
                HttpAspNet,
                "4.0.30319",
                "microsoft:asp.net",
                Some("4.0.30319"),
            ),
            (
                FtpGreeting,
                "220 (vsFTPd 3.0.3)",
                "vsftpd_project:vsftpd",
                Some("3.0.3"),
            ),
            (
                FtpGreeting,
                "220 ProFTPD 1.3.5 Server (Debian) [10.0.0.5]",
                "proftpd:proftpd",
                Some("1.3.5"),
            ),
            (
                FtpGreeting,
                "220 ProFTPD 1.3.3c Server (ProFTPD Default Installation)",
                "proftpd:proftpd",
                Some("1.3.3c"),
            ),
            (
                FtpGreeting,
                "220---------- Welcome to Pure-FTPd [privsep] [TLS] ----------",
                "pureftpd:pure-ftpd",
                None,
            ),
            (
                FtpGreeting,
                "220-FileZilla Server 1.7.0",
                "filezilla-project:filezilla_server",
                Some("1.7.0"),
            ),
            (
                SmtpGreeting,
                "220 mail.target.example ESMTP Exim 4.91 #1 Wed, 05 Jun 2019",
                "exim:exim",
                Some("4.91"),
            ),
            (
                SmtpGreeting,
                "220 mx.example ESMTP Postfix (Debian/GNU)",
                "postfix:postfix",
                None,
            ),
            (
                SmtpGreeting,
                "220 mail.target.example ESMTP OpenSMTPD",
                "openbsd:opensmtpd",
                None,
            ),
        ];
        for (kind, banner, product, version) in cases {
            assert_eq!(
                fp(*kind, banner),
                Some((*product, version.map(str::to_string))),
                "{banner}"
            );
        }
        assert_eq!(fp(HttpServer, "cloudflare"), None);
        assert_eq!(
            fp(HttpServer, "(vsFTPd 3.0.3)"),
            None,
            "an FTP format on an HTTP header"
        );
    }
}
