//! Patch files: TOML → raw model → validated [`Patch`], every error located.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;
use toml::Spanned;

use crate::diag::{Diagnostic, Diagnostics};
use crate::expr::{self, Expr, FieldKind, Operand};
use crate::prefilter::{min_message_len, required_located, LocatedLiterals};

/// How bad the vulnerability is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// low
    Low,
    /// medium
    Medium,
    /// high
    High,
    /// critical
    Critical,
}

impl Severity {
    /// The name used in files and events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Whether a patch changes traffic or only reports what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply the action.
    Enforce,
    /// Log what would have happened; change nothing.
    Monitor,
    /// Not for this flow's server (another product, or an unknown one under the `skip`
    /// policy): evaluated and logged as `skipped_asset`, nothing changed.
    AssetSkipped,
    /// Retired for this flow's server (it runs a fixed version): evaluated and logged as
    /// `skipped_retired`, nothing changed.
    AssetRetired,
}

impl Mode {
    /// The name used in files and events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Monitor => "monitor",
            Self::AssetSkipped => "skipped_asset",
            Self::AssetRetired => "retired",
        }
    }

    /// The audit outcome of a match in a mode that changes nothing (`would_reject`,
    /// `skipped_asset`, `skipped_retired`); `None` in enforce mode.
    #[must_use]
    pub fn observed_outcome(self, action: &str) -> Option<String> {
        match self {
            Self::Enforce => None,
            Self::Monitor => Some(format!("would_{action}")),
            Self::AssetSkipped => Some("skipped_asset".into()),
            Self::AssetRetired => Some("skipped_retired".into()),
        }
    }
}

/// What an edit action works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every field line of this request header (name lower-case).
    RequestHeader(String),
    /// Every query argument of this name.
    RequestArg(String),
    /// The request body (must fit in the inspection window).
    RequestBody,
    /// Every field line of this response header.
    ResponseHeader(String),
    /// The argument of an FTP or SMTP command.
    CommandArg,
}

/// The protocol a patch inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 requests and responses.
    Http,
    /// FTP control commands.
    Ftp,
    /// SMTP commands and messages.
    Smtp,
}

impl Protocol {
    /// The name used in files.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Ftp => "ftp",
            Self::Smtp => "smtp",
        }
    }

    /// Parses a protocol name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Self::Http),
            "ftp" => Some(Self::Ftp),
            "smtp" => Some(Self::Smtp),
            _ => None,
        }
    }
}

/// What to do when the condition holds.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer with `status` and never forward the message (FTP/SMTP: the command, or the
    /// message for DATA patches).
    Reject {
        /// The status (HTTP) or reply code (FTP, SMTP) the patched server gives.
        status: u16,
        /// The reply text for FTP/SMTP (a default one when absent).
        message: Option<String>,
    },
    /// Remove the target (header lines or query arguments).
    Strip {
        /// What to remove.
        target: Target,
    },
    /// Cap the target's length.
    Truncate {
        /// What to cap.
        target: Target,
        /// Bytes kept.
        max_len: usize,
    },
    /// Replace every match of `pattern` in the target by `with`.
    Replace {
        /// Where.
        target: Target,
        /// What.
        pattern: Regex,
        /// By what.
        with: Vec<u8>,
    },
    /// Close both connections.
    Reset,
    /// Only record the match.
    Log,
}

impl Action {
    /// The name used in files and events.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Reject { .. } => "reject",
            Self::Strip { .. } => "strip",
            Self::Truncate { .. } => "truncate",
            Self::Replace { .. } => "replace",
            Self::Reset => "reset",
            Self::Log => "log",
        }
    }
}

/// Which message a patch inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The request (head, and the body when the condition reads it).
    Request,
    /// The response head.
    Response,
}

/// A test vector shipped with a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vector {
    /// `exploit`, `evasion` or `benign`.
    pub kind: String,
    /// The request bytes.
    pub request: Vec<u8>,
    /// `true` when the patch must act on it; `false` when it must pass untouched.
    pub expect_match: bool,
    /// Where the bytes come from.
    pub source: String,
}

/// A validated, compiled patch.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The protocol it inspects.
    pub protocol: Protocol,
    /// `SG-YEAR-NUMBER`.
    pub id: String,
    /// One line.
    pub title: String,
    /// CVE ids answered.
    pub cve: Vec<String>,
    /// How bad.
    pub severity: Severity,
    /// Advisories and write-ups.
    pub references: Vec<String>,
    /// `vendor:product` as in CPE.
    pub product: String,
    /// Affected versions, as the vendor states them.
    pub versions: String,
    /// The affected versions as a range (`[applies] range`, else `versions` when it parses);
    /// `None`: every version of the product.
    pub range: Option<crate::version::Range>,
    /// First fixed version or vendor bulletin.
    pub fixed_in: Option<String>,
    /// The condition.
    pub when: Expr,
    /// The condition as written.
    pub when_source: String,
    /// The remedy.
    pub action: Action,
    /// Enforce or monitor, as the file states.
    pub mode: Mode,
    /// Request or response.
    pub phase: Phase,
    /// Whether the condition reads the request body.
    pub needs_body: bool,
    /// The prefilter's literals for the condition, with where each can occur (see
    /// [`crate::prefilter::required_located`]), worked out once when the file is loaded.
    pub literals: Option<LocatedLiterals>,
    /// The shortest message the condition can hold for (see
    /// [`crate::prefilter::min_message_len`]).
    pub min_message_len: usize,
    /// Test vectors.
    pub vectors: Vec<Vector>,
    /// The file it came from.
    pub file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPatch {
    id: Spanned<String>,
    title: String,
    #[serde(default)]
    cve: Vec<Spanned<String>>,
    severity: Spanned<String>,
    #[serde(default)]
    references: Vec<Spanned<String>>,
    protocol: Spanned<String>,
    applies: RawApplies,
    rule: RawRule,
    #[serde(default)]
    vector: Vec<RawVector>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplies {
    product: Spanned<String>,
    versions: String,
    range: Option<Spanned<String>>,
    fixed_in: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    when: Spanned<String>,
    action: Spanned<String>,
    status: Option<Spanned<i64>>,
    message: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
    max_len: Option<Spanned<i64>>,
    pattern: Option<Spanned<String>>,
    with: Option<String>,
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVector {
    kind: Spanned<String>,
    request: Option<String>,
    request_b64: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    source: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

struct Ctx<'a> {
    file: &'a Path,
    source: &'a str,
    errors: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, offset: usize, message: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::at(self.file, self.source, offset, message).with_hint(hint);
        self.errors.push(d);
    }

    /// Offset of the first content byte of a TOML string value spanning `span`.
    fn string_content_start(&self, span: std::ops::Range<usize>) -> usize {
        let text = &self.source[span.start..];
        if text.starts_with("'''") || text.starts_with("\"\"\"") {
            let after = span.start + 3;
            match self.source.as_bytes().get(after) {
                Some(b'\n') => after + 1,
                Some(b'\r') => after + 2,
                _ => after,
            }
        } else {
            span.start + 1
        }
    }

    /// Parses an expression held in a TOML string, locating its errors in the file.
    fn expression(&mut self, value: &Spanned<String>) -> Option<Expr> {
        match expr::parse(value.get_ref()) {
            Ok(e) => Some(e),
            Err(e) => {
                let at = self.string_content_start(value.span()) + e.span.start;
                self.err(at, e.message, e.hint);
                None
            }
        }
    }
}

/// Whether `s` looks like `PREFIX-YYYY-NNNN…`.
fn is_year_id(s: &str, prefix: &str) -> bool {
    let Some(rest) = s.strip_prefix(prefix) else {
        return false;
    };
    let mut parts = rest.splitn(2, '-');
    let year = parts.next().unwrap_or_default();
    let num = parts.next().unwrap_or_default();
    year.len() == 4
        && year.bytes().all(|b| b.is_ascii_digit())
        && num.len() >= 4
        && num.bytes().all(|b| b.is_ascii_digit())
}

/// Parses one patch file's text.
///
/// # Errors
/// Every problem found, located.
pub fn parse_patch(file: &Path, source: &str) -> Result<Patch, Vec<Diagnostic>> {
    let raw: RawPatch = match toml::from_str(source) {
        Ok(r) => r,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let message = e.message().trim().to_string();
            let d = Diagnostic::at(file, source, offset, message).with_hint(
                "patch files are TOML: id, title, cve, severity, references, protocol, [applies], [rule], [[vector]]",
            );
            return Err(vec![d]);
        }
    };
    let mut cx = Ctx {
        file,
        source,
        errors: Vec::new(),
    };
    if !is_year_id(raw.id.get_ref(), "SG-") {
        cx.err(
            raw.id.span().start,
            format!("invalid patch id `{}`", raw.id.get_ref()),
            "patch ids look like SG-2021-41773 (SG-YEAR-NUMBER, after the CVE they answer)",
        );
    }
    for cve in &raw.cve {
        if !is_year_id(cve.get_ref(), "CVE-") {
            cx.err(
                cve.span().start,
                format!("invalid CVE id `{}`", cve.get_ref()),
                "CVE ids look like CVE-2021-44228",
            );
        }
    }
    for r in &raw.references {
        if !(r.get_ref().starts_with("https://") || r.get_ref().starts_with("http://")) {
            cx.err(
                r.span().start,
                "a reference must be an http(s) URL",
                "references = [\"https://nvd.nist.gov/vuln/detail/CVE-…\"]",
            );
        }
    }
    let severity = match raw.severity.get_ref().as_str() {
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        other => {
            cx.err(
                raw.severity.span().start,
                format!("unknown severity `{other}`"),
                "severity is one of low, medium, high, critical",
            );
            Severity::Low
        }
    };
    let protocol = Protocol::parse(raw.protocol.get_ref()).unwrap_or_else(|| {
        cx.err(
            raw.protocol.span().start,
            format!("unknown protocol `{}`", raw.protocol.get_ref()),
            "protocol is `http`, `ftp` or `smtp`",
        );
        Protocol::Http
    });
    let product = raw.applies.product.get_ref();
    if product.split(':').count() != 2 || product.split(':').any(str::is_empty) {
        cx.err(
            raw.applies.product.span().start,
            format!("product `{product}` is not `vendor:product`"),
            "name the product as in CPE: apache:http_server, microsoft:iis",
        );
    }

    let range = match &raw.applies.range {
        Some(r) => match crate::version::Range::parse(r.get_ref()) {
            Ok(range) => Some(range),
            Err(e) => {
                cx.err(
                    cx.string_content_start(r.span()),
                    format!("range: {e}"),
                    "range = \">=2.4.49, <=2.4.50\" or \"7.0.0 - 7.0.81, 8.x < 8.5.23\"",
                );
                None
            }
        },
        None => crate::version::Range::parse(&raw.applies.versions).ok(),
    };
    let when = cx.expression(&raw.rule.when);
    let (phase, needs_body) = match &when {
        Some(w) => classify(&mut cx, w, &raw.rule.when, protocol),
        None => (Phase::Request, false),
    };
    let mode = match raw
        .rule
        .mode
        .as_ref()
        .map(|m| (m.get_ref().as_str(), m.span()))
    {
        None | Some(("enforce", _)) => Mode::Enforce,
        Some(("monitor", _)) => Mode::Monitor,
        Some((other, span)) => {
            cx.err(
                span.start,
                format!("unknown mode `{other}`"),
                "mode is `enforce` or `monitor`",
            );
            Mode::Enforce
        }
    };
    let action = action(&mut cx, &raw.rule, phase);
    let edits_body = matches!(
        &action,
        Some(
            Action::Truncate {
                target: Target::RequestBody,
                ..
            } | Action::Replace {
                target: Target::RequestBody,
                ..
            }
        )
    );
    let vectors = vectors(&mut cx, &raw.vector);

    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }
    let when = when.unwrap_or(Expr::Const(false));
    Ok(Patch {
        protocol,
        id: raw.id.into_inner(),
        title: raw.title,
        cve: raw.cve.into_iter().map(Spanned::into_inner).collect(),
        severity,
        references: raw
            .references
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        product: raw.applies.product.into_inner(),
        versions: raw.applies.versions,
        range,
        fixed_in: raw.applies.fixed_in,
        literals: required_located(&when),
        min_message_len: min_message_len(&when),
        when,
        when_source: raw.rule.when.into_inner(),
        action: action.unwrap_or(Action::Log),
        mode,
        phase,
        needs_body: needs_body || edits_body,
        vectors,
        file: file.to_path_buf(),
    })
}

fn classify(
    cx: &mut Ctx<'_>,
    when: &Expr,
    src: &Spanned<String>,
    protocol: Protocol,
) -> (Phase, bool) {
    let (mut request, mut response, mut body) = (false, false, false);
    let mut foreign = None;
    when.for_each_field(&mut |f| {
        if f.protocol() != protocol.as_str() && foreign.is_none() {
            foreign = Some(f.name.clone());
        }
        if f.is_response() {
            response = true;
        } else {
            request = true;
        }
        body |= f.reads_body();
    });
    if let Some(name) = foreign {
        cx.err(
            cx.string_content_start(src.span()),
            format!("`{name}` is not a field of a `{}` patch", protocol.as_str()),
            "a patch reads the fields of its own protocol (http.*, ftp.* or smtp.*)",
        );
    }
    if request && response {
        cx.err(
            cx.string_content_start(src.span()),
            "a rule reads either the request or the response, not both",
            "split it into two patches",
        );
    }
    if !request && !response {
        cx.err(
            cx.string_content_start(src.span()),
            "the condition reads no field",
            "compare a field: http.request.path starts_with \"/admin\"",
        );
    }
    let phase = if response {
        Phase::Response
    } else {
        Phase::Request
    };
    (phase, body)
}

fn target(
    cx: &mut Ctx<'_>,
    raw: Option<&Spanned<String>>,
    action: &str,
    at: usize,
) -> Option<Target> {
    let Some(raw) = raw else {
        cx.err(
            at,
            format!("action `{action}` needs a `target`"),
            "target = 'http.request.header(\"x-forwarded-host\")'",
        );
        return None;
    };
    let expr = cx.expression(raw)?;
    let t = match expr {
        Expr::Truthy(Operand::Field(f)) => match f.kind {
            FieldKind::Header(n) => Some(Target::RequestHeader(n)),
            FieldKind::Arg(n) if action == "strip" => Some(Target::RequestArg(n)),
            FieldKind::Body if action != "strip" => Some(Target::RequestBody),
            FieldKind::ResponseHeader(n) => Some(Target::ResponseHeader(n)),
            FieldKind::FtpArg | FieldKind::SmtpArg if action == "truncate" => {
                Some(Target::CommandArg)
            }
            _ => None,
        },
        _ => None,
    };
    if t.is_none() {
        cx.err(
            cx.string_content_start(raw.span()),
            format!("`{}` cannot be the target of `{action}`", raw.get_ref()),
            "targets: http.request.header(\"n\"), http.request.arg(\"n\") (strip), http.request.body (truncate, replace), http.response.header(\"n\"), ftp.arg / smtp.arg (truncate)",
        );
    }
    t
}

fn action(cx: &mut Ctx<'_>, rule: &RawRule, phase: Phase) -> Option<Action> {
    let name = rule.action.get_ref().as_str();
    let at = rule.action.span().start;
    let action = match name {
        "reject" => {
            let status = match &rule.status {
                None => 403,
                Some(s) if (400..=599).contains(s.get_ref()) => *s.get_ref() as u16,
                Some(s) => {
                    cx.err(
                        s.span().start,
                        format!("status {} is not an error status", s.get_ref()),
                        "reject with a 4xx or 5xx status, the one the patched server gives",
                    );
                    403
                }
            };
            let message = rule.message.as_ref().map(|m| m.get_ref().clone());
            if let Some(m) = &rule.message {
                if m.get_ref().contains(['\r', '\n']) {
                    cx.err(
                        m.span().start,
                        "message must be one line",
                        "message = \"Command line too long\"",
                    );
                }
            }
            Action::Reject { status, message }
        }
        "strip" => Action::Strip {
            target: target(cx, rule.target.as_ref(), name, at)?,
        },
        "truncate" => {
            let target = target(cx, rule.target.as_ref(), name, at)?;
            let max_len = match &rule.max_len {
                Some(n) if *n.get_ref() >= 0 => *n.get_ref() as usize,
                Some(n) => {
                    cx.err(n.span().start, "max_len must be 0 or more", "max_len = 256");
                    return None;
                }
                None => {
                    cx.err(at, "action `truncate` needs `max_len`", "max_len = 256");
                    return None;
                }
            };
            Action::Truncate { target, max_len }
        }
        "replace" => {
            let target = target(cx, rule.target.as_ref(), name, at)?;
            let Some(pattern) = &rule.pattern else {
                cx.err(
                    at,
                    "action `replace` needs `pattern`",
                    "pattern = '\\$\\{jndi:', with = ''",
                );
                return None;
            };
            let compiled = RegexBuilder::new(pattern.get_ref())
                .unicode(false)
                .size_limit(expr::MAX_REGEX_SIZE)
                .build();
            match compiled {
                Ok(re) => Action::Replace {
                    target,
                    pattern: re,
                    with: rule.with.clone().unwrap_or_default().into_bytes(),
                },
                Err(e) => {
                    let msg = e.to_string();
                    let last = msg
                        .lines()
                        .last()
                        .unwrap_or("invalid regex")
                        .trim()
                        .to_string();
                    cx.err(
                        cx.string_content_start(pattern.span()),
                        format!("invalid regex: {last}"),
                        "regex syntax is Rust's `regex` crate",
                    );
                    return None;
                }
            }
        }
        "reset" => Action::Reset,
        "log" => Action::Log,
        other => {
            cx.err(
                at,
                format!("unknown action `{other}`"),
                "action is one of reject, strip, truncate, replace, reset, log",
            );
            return None;
        }
    };
    if let Action::Strip { target }
    | Action::Truncate { target, .. }
    | Action::Replace { target, .. } = &action
    {
        let response_target = matches!(target, Target::ResponseHeader(_));
        if response_target != (phase == Phase::Response) {
            cx.err(
                at,
                "the target is on the other side of the exchange from the condition",
                "a request condition edits the request; a response condition edits the response",
            );
        }
    }
    Some(action)
}

fn vectors(cx: &mut Ctx<'_>, raw: &[RawVector]) -> Vec<Vector> {
    let mut out = Vec::new();
    for v in raw {
        let kind = v.kind.get_ref().clone();
        let default_match = match kind.as_str() {
            "exploit" | "evasion" => true,
            "benign" => false,
            other => {
                cx.err(
                    v.kind.span().start,
                    format!("unknown vector kind `{other}`"),
                    "kind is exploit, evasion or benign",
                );
                continue;
            }
        };
        let expect_match = match v.expect.as_ref().map(|e| (e.get_ref().as_str(), e.span())) {
            None => default_match,
            Some(("match", _)) => true,
            Some(("pass", _)) => false,
            Some((other, span)) => {
                cx.err(
                    span.start,
                    format!("unknown expectation `{other}`"),
                    "expect is `match` or `pass`",
                );
                continue;
            }
        };
        let request = match (&v.request, &v.request_b64) {
            (Some(r), None) => r.clone().into_bytes(),
            (None, Some(b)) => {
                match base64::engine::general_purpose::STANDARD.decode(b.get_ref()) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        cx.err(
                            b.span().start,
                            format!("invalid base64: {e}"),
                            "request_b64 is standard base64",
                        );
                        continue;
                    }
                }
            }
            _ => {
                cx.err(
                    v.kind.span().start,
                    "a vector needs exactly one of `request` and `request_b64`",
                    "request = \"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\"",
                );
                continue;
            }
        };
        out.push(Vector {
            kind,
            request,
            expect_match,
            source: v.source.clone().unwrap_or_default(),
        });
    }
    out
}

/// Reads and parses one patch file.
///
/// # Errors
/// The file cannot be read, or has problems (all of them).
pub fn load_file(path: &Path) -> Result<Patch, Vec<Diagnostic>> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::at(
            path,
            "",
            0,
            format!("cannot read patch file: {e}"),
        )]
    })?;
    parse_patch(path, &source)
}

/// Loads every `*.toml` patch in `dir` (sorted by name), reporting all problems at once.
///
/// # Errors
/// Every problem of every file, and duplicate ids.
pub fn load_dir(dir: &Path) -> Result<Vec<Patch>, Diagnostics> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Diagnostics(vec![Diagnostic::at(
            dir,
            "",
            0,
            format!("cannot read patch directory: {e}"),
        )
        .with_hint("pass the folder that holds the *.toml patch files")])
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    let mut patches: Vec<Patch> = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load_file(&file) {
            Ok(p) => {
                if let Some(first) = patches.iter().find(|q| q.id == p.id) {
                    let source = std::fs::read_to_string(&file).unwrap_or_default();
                    let at = source.find(&p.id).unwrap_or(0);
                    errors.push(
                        Diagnostic::at(
                            &file,
                            &source,
                            at,
                            format!("duplicate patch id `{}`", p.id),
                        )
                        .with_hint(format!("already defined in {}", first.file.display())),
                    );
                } else {
                    patches.push(p);
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(patches)
    } else {
        Err(Diagnostics(errors))
    }
}
