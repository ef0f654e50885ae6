//! Syntax tree of a compiled `when` expression.

use regex::bytes::Regex;

/// Byte range in the expression source.
pub type Span = std::ops::Range<usize>;

/// A boolean expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// Either side holds.
    Or(Box<Expr>, Box<Expr>),
    /// Both sides hold.
    And(Box<Expr>, Box<Expr>),
    /// The inner expression does not hold.
    Not(Box<Expr>),
    /// A comparison of an operand with a literal.
    Compare {
        /// Left side.
        lhs: Operand,
        /// The operator.
        op: CmpOp,
        /// Right side (a literal).
        rhs: Operand,
        /// Compiled regex for `~` / `!~`.
        regex: Option<Regex>,
    },
    /// An operand used as a condition: a field holds when it has a value, a number when non-zero.
    Truthy(Operand),
    /// A constant.
    Const(bool),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==` (bytes, or numbers when the right side is a number)
    Eq,
    /// `!=`
    Ne,
    /// `~` regex search
    Matches,
    /// `!~` regex does not match
    NotMatches,
    /// `contains`
    Contains,
    /// `starts_with`
    StartsWith,
    /// `ends_with`
    EndsWith,
    /// `in [..]`
    In,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// Functions: transforms (bytes → bytes), and `len`, `count`, `exists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// ASCII lower-case.
    Lower,
    /// ASCII upper-case.
    Upper,
    /// Percent-decoding, once (`+` is kept).
    UrlDecode,
    /// Percent-decoding including IIS `%uXXXX`, once.
    UrlDecodeUni,
    /// Resolve `.`/`..` segments and merge slashes (RFC 3986 §5.2.4).
    NormalizePath,
    /// Like `normalize_path`, with `\` as a separator too (IIS).
    NormalizePathWin,
    /// Decode `&lt;` `&#x41;` `&#65;` and friends.
    HtmlEntityDecode,
    /// Base64 (standard or URL-safe, padding optional); undecodable input is kept.
    Base64Decode,
    /// Collapse runs of whitespace into one space.
    CompressWs,
    /// Remove all whitespace.
    RemoveWs,
    /// Strip leading and trailing whitespace.
    Trim,
    /// Length in bytes (a number).
    Len,
    /// Number of values of a field (a number).
    Count,
    /// Whether a field has any value.
    Exists,
    /// Remove `;` path parameters in every segment (Tomcat, Jetty).
    StripPathParams,
    /// Decode overlong UTF-8 forms of ASCII as IIS 4/5 did.
    OverlongUtf8,
    /// Decode JSON string escapes (`\u0023` …).
    JsonUnescape,
    /// A request path as Tomcat/Jetty map it: `;` parameters removed, decoded once, dot
    /// segments resolved.
    TomcatPath,
    /// A request path as IIS maps it: `%uXXXX` and percent escapes decoded once, overlong
    /// UTF-8 decoded, `\` a separator, dot segments resolved.
    IisPath,
    /// A request path as Apache httpd maps it: decoded once, dot segments resolved.
    HttpdPath,
}

impl Func {
    /// All functions and their names.
    pub const ALL: &'static [(&'static str, Func)] = &[
        ("lower", Func::Lower),
        ("upper", Func::Upper),
        ("url_decode", Func::UrlDecode),
        ("url_decode_uni", Func::UrlDecodeUni),
        ("normalize_path", Func::NormalizePath),
        ("normalize_path_win", Func::NormalizePathWin),
        ("html_entity_decode", Func::HtmlEntityDecode),
        ("base64_decode", Func::Base64Decode),
        ("compress_ws", Func::CompressWs),
        ("remove_ws", Func::RemoveWs),
        ("trim", Func::Trim),
        ("len", Func::Len),
        ("count", Func::Count),
        ("exists", Func::Exists),
        ("strip_path_params", Func::StripPathParams),
        ("overlong_utf8", Func::OverlongUtf8),
        ("json_unescape", Func::JsonUnescape),
        ("tomcat_path", Func::TomcatPath),
        ("iis_path", Func::IisPath),
        ("httpd_path", Func::HttpdPath),
    ];

    /// Looks a function up by name.
    #[must_use]
    pub fn by_name(name: &str) -> Option<Func> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }
}

/// Which protocol field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// `http.request.method`
    Method,
    /// `http.request.uri`: the request target as sent.
    Uri,
    /// `http.request.raw_path`: the target before `?`, as sent.
    RawPath,
    /// `http.request.path`: `raw_path` percent-decoded once, dot segments resolved, slashes merged.
    Path,
    /// `http.request.query`: the target after `?`, as sent.
    Query,
    /// `http.request.version`: `HTTP/1.0` or `HTTP/1.1`.
    Version,
    /// `http.request.header("name")`: every value of that header.
    Header(String),
    /// `http.request.headers`: every header value.
    Headers,
    /// `http.request.header_names`: every header name, as sent.
    HeaderNames,
    /// `http.request.arg("name")`: query argument values, percent- and `+`-decoded.
    Arg(String),
    /// `http.request.args`: every query argument value, decoded.
    Args,
    /// `http.request.arg_names`: every query argument name, decoded.
    ArgNames,
    /// `http.request.body`: the body within the inspection window, transfer coding removed.
    Body,
    /// `http.request.cookie("name")`: values of that cookie, as sent.
    Cookie(String),
    /// `http.request.cookies`: every cookie value.
    Cookies,
    /// `http.request.cookie_names`: every cookie name.
    CookieNames,
    /// `http.request.form("name")`: body field values (urlencoded or multipart), decoded.
    Form(String),
    /// `http.request.forms`: every body field value.
    Forms,
    /// `http.request.form_names`: every body field name, decoded.
    FormNames,
    /// `http.request.param("name")`: query arguments and body fields together, decoded.
    Param(String),
    /// `http.request.params`: every query argument and body field value.
    Params,
    /// `http.request.param_names`: every query argument and body field name.
    ParamNames,
    /// `http.request.json`: every key and string value of a JSON body, escapes decoded.
    Json,
    /// `ftp.command`: the FTP verb, upper-cased.
    FtpCommand,
    /// `ftp.arg`: the FTP command's argument.
    FtpArg,
    /// `ftp.user`: the user named by the last `USER` (absent before one).
    FtpUser,
    /// `ftp.authenticated`: 1 after the server accepted a login, else 0.
    FtpAuthenticated,
    /// `smtp.command`: the SMTP verb, upper-cased.
    SmtpCommand,
    /// `smtp.arg`: the SMTP command's argument.
    SmtpArg,
    /// `smtp.helo`: the `HELO`/`EHLO` argument of the session.
    SmtpHelo,
    /// `smtp.mail_from`: the reverse path of the current transaction.
    SmtpMailFrom,
    /// `smtp.rcpt_to`: every forward path of the current transaction.
    SmtpRcptTo,
    /// `smtp.data`: the message (headers and a bounded body window), dot-stuffing removed.
    SmtpData,
    /// `http.response.status`
    Status,
    /// `http.response.header("name")`
    ResponseHeader(String),
    /// `http.response.headers`
    ResponseHeaders,
}

/// A field reference with its source name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Which field.
    pub kind: FieldKind,
    /// As written, for evidence (`http.request.header("range")`).
    pub name: String,
}

impl Field {
    /// Whether this field reads the response.
    #[must_use]
    pub fn is_response(&self) -> bool {
        matches!(
            self.kind,
            FieldKind::Status | FieldKind::ResponseHeader(_) | FieldKind::ResponseHeaders
        )
    }
    /// The protocol the field belongs to.
    #[must_use]
    pub fn protocol(&self) -> &'static str {
        match self.kind {
            FieldKind::FtpCommand
            | FieldKind::FtpArg
            | FieldKind::FtpUser
            | FieldKind::FtpAuthenticated => "ftp",
            FieldKind::SmtpCommand
            | FieldKind::SmtpArg
            | FieldKind::SmtpHelo
            | FieldKind::SmtpMailFrom
            | FieldKind::SmtpRcptTo
            | FieldKind::SmtpData => "smtp",
            _ => "http",
        }
    }

    /// Whether the value comes from the request body (the patch then waits for it).
    #[must_use]
    pub fn reads_body(&self) -> bool {
        matches!(
            self.kind,
            FieldKind::Body
                | FieldKind::Form(_)
                | FieldKind::Forms
                | FieldKind::FormNames
                | FieldKind::Param(_)
                | FieldKind::Params
                | FieldKind::ParamNames
                | FieldKind::Json
                | FieldKind::SmtpData
        )
    }

    /// Whether the value is taken from the raw bytes unchanged (so a literal found in it
    /// must appear in the raw message).
    #[must_use]
    pub fn is_raw(&self) -> bool {
        matches!(
            self.kind,
            FieldKind::FtpCommand
                | FieldKind::FtpArg
                | FieldKind::SmtpCommand
                | FieldKind::SmtpArg
                | FieldKind::Method
                | FieldKind::Uri
                | FieldKind::RawPath
                | FieldKind::Query
                | FieldKind::Header(_)
                | FieldKind::Headers
                | FieldKind::HeaderNames
                | FieldKind::Body
                | FieldKind::ResponseHeader(_)
                | FieldKind::ResponseHeaders
        )
    }
}

/// A value-producing operand.
#[derive(Debug, Clone)]
pub enum Operand {
    /// A protocol field.
    Field(Field),
    /// A function applied to an operand.
    Call(Func, Box<Operand>),
    /// A string literal.
    Str(Vec<u8>),
    /// An integer literal.
    Num(i64),
    /// A boolean literal.
    Bool(bool),
    /// A list of literals (for `in`).
    List(Vec<Operand>),
}

impl Operand {
    /// The field this operand reads, through any functions.
    #[must_use]
    pub fn field(&self) -> Option<&Field> {
        match self {
            Operand::Field(f) => Some(f),
            Operand::Call(_, inner) => inner.field(),
            _ => None,
        }
    }
}

impl Expr {
    /// Calls `f` on every field the expression reads.
    pub fn for_each_field(&self, f: &mut impl FnMut(&Field)) {
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => {
                a.for_each_field(f);
                b.for_each_field(f);
            }
            Expr::Not(a) => a.for_each_field(f),
            Expr::Compare { lhs, .. } | Expr::Truthy(lhs) => {
                if let Some(field) = lhs.field() {
                    f(field);
                }
            }
            Expr::Const(_) => {}
        }
    }
}
