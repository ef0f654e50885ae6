//! Recursive-descent parser with precedence `or` < `and` < `not` < comparison.

use regex::bytes::{Regex, RegexBuilder};

use super::ast::{CmpOp, Expr, Field, FieldKind, Func, Operand, Span};
use super::lexer::{lex, Tok};

/// Largest compiled regex (bytes); bigger patterns are refused at load time.
pub const MAX_REGEX_SIZE: usize = 1 << 20;
/// Deepest nesting of parentheses and functions.
pub const MAX_DEPTH: usize = 64;

/// A syntax or type error in an expression, located by byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where in the expression.
    pub span: Span,
    /// What is wrong / what was expected.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl ParseError {
    pub(super) fn new(span: Span, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
            hint: hint.into(),
        }
    }
}

const OPERATORS_HINT: &str =
    "operators are ==, !=, ~, !~, <, <=, >, >=, contains, starts_with, ends_with, in";

/// Parses and type-checks an expression.
///
/// # Errors
/// The first syntax or type error, with its span.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let expr = p.expr()?;
    let (tok, span) = p.peek();
    if *tok != Tok::Eof {
        return Err(ParseError::new(
            span.clone(),
            format!("expected `and`, `or` or the end, found {}", tok.describe()),
            OPERATORS_HINT,
        ));
    }
    Ok(expr)
}

struct Parser {
    toks: Vec<(Tok, Span)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &(Tok, Span) {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }
    fn next(&mut self) -> (Tok, Span) {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }
    fn is_keyword(&self, kw: &str) -> bool {
        matches!(&self.peek().0, Tok::Ident(s) if s == kw)
    }
    fn expect(&mut self, want: &Tok, hint: &str) -> Result<Span, ParseError> {
        let (tok, span) = self.next();
        if &tok == want {
            Ok(span)
        } else {
            Err(ParseError::new(
                span,
                format!("expected {}, found {}", want.describe(), tok.describe()),
                hint,
            ))
        }
    }
    fn enter(&mut self, span: &Span) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::new(
                span.clone(),
                "expression nested too deeply",
                format!("at most {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.and()?;
        while self.is_keyword("or") {
            self.next();
            let rhs = self.and()?;
            lhs = Expr::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.unary()?;
        while self.is_keyword("and") {
            self.next();
            let rhs = self.unary()?;
            lhs = Expr::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.is_keyword("not") {
            let span = self.next().1;
            self.enter(&span)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, ParseError> {
        // A parenthesised boolean expression.
        if self.peek().0 == Tok::LParen {
            let span = self.next().1;
            self.enter(&span)?;
            let inner = self.expr()?;
            self.expect(&Tok::RParen, "close the parenthesis")?;
            self.depth -= 1;
            return Ok(inner);
        }
        let lhs_span = self.peek().1.clone();
        let lhs = self.operand()?;
        let op = match &self.peek().0 {
            Tok::EqEq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Tilde => CmpOp::Matches,
            Tok::NotTilde => CmpOp::NotMatches,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            Tok::Ident(s) if s == "contains" => CmpOp::Contains,
            Tok::Ident(s) if s == "starts_with" => CmpOp::StartsWith,
            Tok::Ident(s) if s == "ends_with" => CmpOp::EndsWith,
            Tok::Ident(s) if s == "in" => CmpOp::In,
            Tok::Ident(s) if s != "and" && s != "or" => {
                return Err(ParseError::new(
                    self.peek().1.clone(),
                    format!("expected an operator, found `{s}`"),
                    OPERATORS_HINT,
                ))
            }
            _ => {
                return match lhs {
                    Operand::Str(_) | Operand::List(_) => Err(ParseError::new(
                        lhs_span,
                        "a literal is not a condition",
                        "compare a field with it: http.request.path contains \"...\"",
                    )),
                    other => Ok(Expr::Truthy(other)),
                };
            }
        };
        let op_span = self.next().1;
        let rhs_span = self.peek().1.clone();
        let rhs = self.operand()?;
        self.check_compare(&lhs, op, &rhs, &op_span, &rhs_span)
    }

    fn check_compare(
        &self,
        lhs: &Operand,
        op: CmpOp,
        rhs: &Operand,
        op_span: &Span,
        rhs_span: &Span,
    ) -> Result<Expr, ParseError> {
        if lhs.field().is_none() {
            return Err(ParseError::new(
                op_span.clone(),
                "the left side of a comparison must read a field",
                "write the field first: http.request.path == \"/x\"",
            ));
        }
        let literal_err = |what: &str| {
            ParseError::new(
                rhs_span.clone(),
                format!("expected {what} on the right of the operator"),
                "the right side is a literal; fields are compared with literals",
            )
        };
        let mut regex = None;
        match (op, rhs) {
            (CmpOp::Matches | CmpOp::NotMatches, Operand::Str(s)) => {
                regex = Some(compile_regex(s, rhs_span)?);
            }
            (CmpOp::Matches | CmpOp::NotMatches, _) => return Err(literal_err("a regex string")),
            (CmpOp::In, Operand::List(items)) if !items.is_empty() => {}
            (CmpOp::In, _) => return Err(literal_err("a non-empty list [\"a\", \"b\"]")),
            (CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge, Operand::Num(_)) => {}
            (CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge, _) => {
                return Err(literal_err("a number"))
            }
            (CmpOp::Contains | CmpOp::StartsWith | CmpOp::EndsWith, Operand::Str(_)) => {}
            (CmpOp::Contains | CmpOp::StartsWith | CmpOp::EndsWith, _) => {
                return Err(literal_err("a string"))
            }
            (CmpOp::Eq | CmpOp::Ne, Operand::Str(_) | Operand::Num(_) | Operand::Bool(_)) => {}
            (CmpOp::Eq | CmpOp::Ne, _) => return Err(literal_err("a string or number")),
        }
        Ok(Expr::Compare {
            lhs: lhs.clone(),
            op,
            rhs: rhs.clone(),
            regex,
        })
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        let (tok, span) = self.next();
        match tok {
            Tok::Str(s) => Ok(Operand::Str(s)),
            Tok::Num(n) => Ok(Operand::Num(n)),
            Tok::LBracket => {
                let mut items = Vec::new();
                loop {
                    if self.peek().0 == Tok::RBracket {
                        self.next();
                        break;
                    }
                    let item_span = self.peek().1.clone();
                    match self.operand()? {
                        lit @ (Operand::Str(_) | Operand::Num(_)) => items.push(lit),
                        _ => {
                            return Err(ParseError::new(
                                item_span,
                                "expected a string or number in the list",
                                "lists hold literals: [\"GET\", \"HEAD\"]",
                            ))
                        }
                    }
                    match self.next() {
                        (Tok::Comma, _) => {}
                        (Tok::RBracket, _) => break,
                        (t, s) => {
                            return Err(ParseError::new(
                                s,
                                format!("expected `,` or `]`, found {}", t.describe()),
                                "separate list items with commas",
                            ))
                        }
                    }
                }
                Ok(Operand::List(items))
            }
            Tok::Ident(name) if name == "true" || name == "false" => {
                Ok(Operand::Bool(name == "true"))
            }
            Tok::Ident(name) if name == "http" || name == "ftp" || name == "smtp" => {
                self.field(name, span)
            }
            Tok::Ident(name) => {
                let Some(func) = Func::by_name(&name) else {
                    let names: Vec<&str> = Func::ALL.iter().map(|(n, _)| *n).collect();
                    return Err(ParseError::new(
                        span,
                        format!("unknown name `{name}`: expected a field or a function"),
                        format!(
                            "fields start with `http.request.` or `http.response.`; functions are {}",
                            names.join(", ")
                        ),
                    ));
                };
                self.expect(
                    &Tok::LParen,
                    "functions take one argument: lower(http.request.path)",
                )?;
                self.enter(&span)?;
                let arg_span = self.peek().1.clone();
                let arg = self.operand()?;
                self.depth -= 1;
                if arg.field().is_none() {
                    return Err(ParseError::new(
                        arg_span,
                        format!("`{name}` needs a field (or a function of one) as its argument"),
                        "apply functions to fields: url_decode(http.request.query)",
                    ));
                }
                if let Operand::Call(inner @ (Func::Len | Func::Count | Func::Exists), _) = &arg {
                    return Err(ParseError::new(
                        arg_span,
                        format!("`{name}` cannot take the result of {inner:?} (not bytes)"),
                        "len, count and exists come last",
                    ));
                }
                if matches!(func, Func::Count | Func::Exists) && !matches!(arg, Operand::Field(_)) {
                    return Err(ParseError::new(
                        arg_span,
                        format!("`{name}` takes a field directly"),
                        "count(http.request.header(\"host\"))",
                    ));
                }
                self.expect(&Tok::RParen, "functions take exactly one argument")?;
                Ok(Operand::Call(func, Box::new(arg)))
            }
            other => Err(ParseError::new(
                span,
                format!(
                    "expected a field, function or literal, found {}",
                    other.describe()
                ),
                "a condition looks like: http.request.header(\"range\") ~ r\"\\d{20,}\"",
            )),
        }
    }

    fn field(&mut self, root: String, start: Span) -> Result<Operand, ParseError> {
        let mut parts = vec![root];
        let mut end = start.end;
        while self.peek().0 == Tok::Dot {
            self.next();
            match self.next() {
                (Tok::Ident(s), span) => {
                    parts.push(s);
                    end = span.end;
                }
                (t, span) => {
                    return Err(ParseError::new(
                        span,
                        format!("expected a field name after `.`, found {}", t.describe()),
                        FIELDS_HINT,
                    ))
                }
            }
        }
        let path = parts.join(".");
        let mut arg = None;
        if self.peek().0 == Tok::LParen {
            self.next();
            match self.next() {
                (Tok::Str(s), _) => arg = Some(String::from_utf8_lossy(&s).to_ascii_lowercase()),
                (t, span) => {
                    return Err(ParseError::new(
                        span,
                        format!("expected a name in quotes, found {}", t.describe()),
                        "http.request.header(\"user-agent\")",
                    ))
                }
            }
            end = self.expect(&Tok::RParen, "close the field's argument")?.end;
        }
        let span = start.start..end;
        let kind = match (path.as_str(), arg.clone()) {
            ("http.request.method", None) => FieldKind::Method,
            ("http.request.uri", None) => FieldKind::Uri,
            ("http.request.raw_path", None) => FieldKind::RawPath,
            ("http.request.path", None) => FieldKind::Path,
            ("http.request.query", None) => FieldKind::Query,
            ("http.request.version", None) => FieldKind::Version,
            ("http.request.header", Some(n)) => FieldKind::Header(n),
            ("http.request.headers", None) => FieldKind::Headers,
            ("http.request.header_names", None) => FieldKind::HeaderNames,
            ("http.request.arg", Some(n)) => FieldKind::Arg(n),
            ("http.request.args", None) => FieldKind::Args,
            ("http.request.arg_names", None) => FieldKind::ArgNames,
            ("http.request.body", None) => FieldKind::Body,
            ("http.request.cookie", Some(n)) => FieldKind::Cookie(n),
            ("http.request.cookies", None) => FieldKind::Cookies,
            ("http.request.cookie_names", None) => FieldKind::CookieNames,
            ("http.request.form", Some(n)) => FieldKind::Form(n),
            ("http.request.forms", None) => FieldKind::Forms,
            ("http.request.form_names", None) => FieldKind::FormNames,
            ("http.request.param", Some(n)) => FieldKind::Param(n),
            ("http.request.params", None) => FieldKind::Params,
            ("http.request.param_names", None) => FieldKind::ParamNames,
            ("http.request.json", None) => FieldKind::Json,
            ("ftp.command", None) => FieldKind::FtpCommand,
            ("ftp.arg", None) => FieldKind::FtpArg,
            ("ftp.user", None) => FieldKind::FtpUser,
            ("ftp.authenticated", None) => FieldKind::FtpAuthenticated,
            ("smtp.command", None) => FieldKind::SmtpCommand,
            ("smtp.arg", None) => FieldKind::SmtpArg,
            ("smtp.helo", None) => FieldKind::SmtpHelo,
            ("smtp.mail_from", None) => FieldKind::SmtpMailFrom,
            ("smtp.rcpt_to", None) => FieldKind::SmtpRcptTo,
            ("smtp.data", None) => FieldKind::SmtpData,
            ("http.response.status", None) => FieldKind::Status,
            ("http.response.header", Some(n)) => FieldKind::ResponseHeader(n),
            ("http.response.headers", None) => FieldKind::ResponseHeaders,
            (
                "http.request.header"
                | "http.request.arg"
                | "http.request.cookie"
                | "http.request.form"
                | "http.request.param"
                | "http.response.header",
                None,
            ) => {
                return Err(ParseError::new(
                    span,
                    format!("`{path}` needs a name"),
                    format!("{path}(\"name\")"),
                ))
            }
            (_, Some(_)) => {
                return Err(ParseError::new(
                    span,
                    format!("`{path}` takes no argument"),
                    FIELDS_HINT,
                ))
            }
            _ => {
                return Err(ParseError::new(
                    span,
                    format!("unknown field `{path}`"),
                    FIELDS_HINT,
                ))
            }
        };
        let name = match arg {
            Some(a) => format!("{path}(\"{a}\")"),
            None => path,
        };
        Ok(Operand::Field(Field { kind, name }))
    }
}

const FIELDS_HINT: &str = "fields: http.request.{method, uri, raw_path, path, query, version, header(\"n\"), headers, header_names, arg(\"n\"), args, arg_names, cookie(\"n\"), cookies, cookie_names, form(\"n\"), forms, form_names, param(\"n\"), params, param_names, body, json}, http.response.{status, header(\"n\"), headers}, ftp.{command, arg, user, authenticated}, smtp.{command, arg, helo, mail_from, rcpt_to, data}";

fn compile_regex(pattern: &[u8], span: &Span) -> Result<Regex, ParseError> {
    let text = std::str::from_utf8(pattern).map_err(|_| {
        ParseError::new(
            span.clone(),
            "regex is not valid UTF-8",
            "use \\xHH for bytes",
        )
    })?;
    RegexBuilder::new(text)
        .unicode(false)
        .size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| {
            let detail = e.to_string();
            let last = detail
                .lines()
                .last()
                .unwrap_or("invalid regex")
                .trim()
                .to_string();
            ParseError::new(
                span.clone(),
                format!("invalid regex: {last}"),
                "regex syntax is Rust's `regex` crate (no look-around, no back-references)",
            )
        })
}
