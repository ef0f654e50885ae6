//! Literal extraction and the Aho-Corasick prefilter.
//!
//! For each patch we extract a set of literals such that, if the patch's condition holds, at
//! least one of them occurs (ASCII case-insensitively) in the raw message bytes. One automaton
//! over all patches' literals is run once per message; only patches whose literal hit, plus the
//! patches for which no such set exists ("unfiltered"), have their full condition evaluated.
//! The cost of a message that no patch is interested in is one automaton pass, however many
//! patches are applied.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::expr::{CmpOp, Expr, FieldKind, Func, Operand};

/// Shortest literal worth filtering on; shorter ones hit almost every message.
pub const MIN_LITERAL_LEN: usize = 2;

/// A set of literals, at least one of which must occur for the condition to hold.
pub type Literals = Vec<Vec<u8>>;

/// Extracts a required literal set from `expr`, or `None` when no such set is known.
#[must_use]
pub fn required_literals(expr: &Expr) -> Option<Literals> {
    let lits = match expr {
        Expr::Or(a, b) => {
            let mut l = required_literals(a)?;
            l.extend(required_literals(b)?);
            Some(l)
        }
        Expr::And(a, b) => match (required_literals(a), required_literals(b)) {
            (Some(x), Some(y)) => Some(if quality(&x) >= quality(&y) { x } else { y }),
            (x, y) => x.or(y),
        },
        Expr::Not(_) | Expr::Const(_) => None,
        Expr::Truthy(op) => header_name_literal(op),
        Expr::Compare {
            lhs,
            op,
            rhs,
            regex,
        } => {
            let value = if let Some(triggers) = escape_triggers(lhs) {
                let literals = match (op, rhs) {
                    (
                        CmpOp::Eq | CmpOp::Contains | CmpOp::StartsWith | CmpOp::EndsWith,
                        Operand::Str(s),
                    ) => Some(vec![s.clone()]),
                    (CmpOp::In, Operand::List(items)) => items
                        .iter()
                        .map(|i| match i {
                            Operand::Str(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect(),
                    (CmpOp::Matches, _) => regex.as_ref().and_then(|r| regex_literals(r.as_str())),
                    _ => None,
                };
                literals
                    .filter(|l| l.iter().all(|s| s.len() >= MIN_LITERAL_LEN))
                    .map(|mut l| {
                        l.extend(triggers);
                        l
                    })
            } else {
                None
            };
            let positive = !matches!(op, CmpOp::Ne | CmpOp::NotMatches);
            value.or_else(|| positive.then(|| header_name_literal(lhs)).flatten())
        }
    }?;
    (!lits.is_empty() && lits.iter().all(|s| !s.is_empty())).then_some(lits)
}

/// Higher is better: the shortest literal of the set, discounted by the set's size.
fn quality(l: &Literals) -> usize {
    let shortest = l.iter().map(Vec::len).min().unwrap_or(0);
    shortest * 4 / (l.len() + 3)
}

/// Byte strings whose absence from the message makes `op`'s value a (case-folded) substring of
/// the message bytes: the decodings and normalisations the field and its transforms apply are
/// then the identity. `Some(empty)` for a field read as it is; `None` when no such set is known
/// (a transform that can join distant bytes, a number).
///
/// A condition literal found in the value then occurs in the message, or one of these does:
/// adding them to the patch's literal set keeps the prefilter exact while letting it skip
/// patches on decoded fields for the many messages that contain no escape at all.
fn escape_triggers(op: &Operand) -> Option<Literals> {
    const PERCENT: &[&[u8]] = &[b"%"];
    const FORM: &[&[u8]] = &[b"%", b"+"];
    const DOTS: &[&[u8]] = &[b"/.", b"./", b"//"];
    let list = |parts: &[&[&[u8]]]| -> Literals {
        parts
            .iter()
            .flat_map(|p| p.iter().map(|b| b.to_vec()))
            .collect()
    };
    // IIS decodes overlong UTF-8 (lead bytes 0xC0, 0xC1, 0xE0).
    let overlong = || -> Literals { vec![vec![0xC0], vec![0xC1], vec![0xE0]] };
    match op {
        Operand::Field(f) => match &f.kind {
            _ if f.is_raw() => Some(Vec::new()),
            FieldKind::Cookie(_) | FieldKind::Cookies | FieldKind::CookieNames => Some(Vec::new()),
            FieldKind::Path => Some(list(&[PERCENT, DOTS])),
            // Query arguments and urlencoded bodies: `+` and percent escapes; multipart names
            // and values are read as they are.
            FieldKind::Arg(_)
            | FieldKind::Args
            | FieldKind::ArgNames
            | FieldKind::Form(_)
            | FieldKind::Forms
            | FieldKind::FormNames
            | FieldKind::Param(_)
            | FieldKind::Params
            | FieldKind::ParamNames => Some(list(&[FORM])),
            FieldKind::Json => Some(vec![b"\\".to_vec()]),
            _ => None,
        },
        Operand::Call(func, inner) => {
            let mut triggers = escape_triggers(inner)?;
            match func {
                Func::Lower | Func::Upper | Func::Trim => {}
                Func::UrlDecode | Func::UrlDecodeUni => triggers.extend(list(&[PERCENT])),
                Func::NormalizePath => triggers.extend(list(&[DOTS])),
                Func::NormalizePathWin => {
                    triggers.extend(list(&[DOTS]));
                    triggers.push(b"\\".to_vec());
                }
                Func::HtmlEntityDecode => triggers.push(b"&".to_vec()),
                Func::JsonUnescape => triggers.push(b"\\".to_vec()),
                Func::StripPathParams => triggers.push(b";".to_vec()),
                Func::OverlongUtf8 => triggers.extend(overlong()),
                Func::TomcatPath => {
                    triggers.push(b";".to_vec());
                    triggers.extend(list(&[PERCENT, DOTS]));
                }
                Func::HttpdPath => triggers.extend(list(&[PERCENT, DOTS])),
                Func::IisPath => {
                    triggers.extend(list(&[PERCENT, DOTS]));
                    triggers.push(b"\\".to_vec());
                    triggers.extend(overlong());
                }
                Func::CompressWs
                | Func::RemoveWs
                | Func::Base64Decode
                | Func::Len
                | Func::Count
                | Func::Exists => return None,
            }
            triggers.sort();
            triggers.dedup();
            Some(triggers)
        }
        _ => None,
    }
}

/// A condition on `header("name")` can only hold when the name occurs in the head.
fn header_name_literal(op: &Operand) -> Option<Literals> {
    match op {
        Operand::Field(f) => match &f.kind {
            FieldKind::Header(name) | FieldKind::ResponseHeader(name) => {
                Some(vec![name.as_bytes().to_vec()])
            }
            _ => None,
        },
        Operand::Call(Func::Count, _) => None,
        Operand::Call(_, inner) => header_name_literal(inner),
        _ => None,
    }
}

fn regex_literals(pattern: &str) -> Option<Literals> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    let mut best: Option<Literals> = None;
    for kind in [ExtractKind::Prefix, ExtractKind::Suffix] {
        let mut extractor = Extractor::new();
        extractor.kind(kind).limit_total(64);
        let mut seq = extractor.extract(&hir);
        seq.optimize_for_prefix_by_preference();
        let Some(lits) = seq.literals() else { continue };
        if lits.is_empty() || lits.iter().any(|l| l.as_bytes().len() < MIN_LITERAL_LEN) {
            continue;
        }
        let set: Literals = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
        if best.as_ref().is_none_or(|b| quality(&set) > quality(b)) {
            best = Some(set);
        }
    }
    best
}

/// One automaton over every patch's literals.
#[derive(Debug, Clone)]
pub struct Prefilter {
    automaton: Option<AhoCorasick>,
    /// For each automaton pattern, the patch index it belongs to.
    owner: Vec<usize>,
    /// Patches that must always be evaluated.
    unfiltered: Vec<usize>,
    patch_count: usize,
}

impl Prefilter {
    /// Builds the prefilter for patches `0..sets.len()`.
    #[must_use]
    pub fn new(sets: &[Option<Literals>]) -> Self {
        let mut patterns = Vec::new();
        let mut owner = Vec::new();
        let mut unfiltered = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            match set {
                Some(lits) => {
                    for l in lits {
                        patterns.push(l.clone());
                        owner.push(i);
                    }
                }
                None => unfiltered.push(i),
            }
        }
        let automaton = if patterns.is_empty() {
            None
        } else {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&patterns)
                .ok()
        };
        if automaton.is_none() {
            // Without an automaton every patch is evaluated: slower, never wrong.
            unfiltered = (0..sets.len()).collect();
        }
        Self {
            automaton,
            owner,
            unfiltered,
            patch_count: sets.len(),
        }
    }

    /// Marks in `hits` every patch that must be evaluated for a message made of `haystacks`.
    pub fn candidates(&self, haystacks: &[&[u8]], hits: &mut Vec<bool>) {
        hits.clear();
        hits.resize(self.patch_count, false);
        for &i in &self.unfiltered {
            hits[i] = true;
        }
        if let Some(ac) = &self.automaton {
            for hay in haystacks {
                for m in ac.find_overlapping_iter(*hay) {
                    hits[self.owner[m.pattern().as_usize()]] = true;
                }
            }
        }
    }

    /// How many patches have no literal and are always evaluated.
    #[must_use]
    pub fn unfiltered_count(&self) -> usize {
        self.unfiltered.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse;

    fn lits(src: &str) -> Option<Vec<String>> {
        required_literals(&parse(src).unwrap()).map(|l| {
            let mut v: Vec<String> = l
                .iter()
                .map(|s| String::from_utf8_lossy(s).into())
                .collect();
            v.sort();
            v
        })
    }

    #[test]
    fn header_conditions_require_the_header_name_or_value() {
        assert_eq!(
            lits(r#"http.request.header("range") ~ r"[1-9][0-9]{18,}""#),
            Some(vec!["range".into()])
        );
        assert_eq!(
            lits(r#"http.request.header("x-a") contains "jndi:""#),
            Some(vec!["jndi:".into()])
        );
        assert_eq!(
            lits(r#"lower(http.request.header("x-a")) contains "jndi""#),
            Some(vec!["jndi".into()])
        );
    }

    #[test]
    fn decoded_fields_require_their_literal_or_an_escape() {
        assert_eq!(
            lits(r#"url_decode(http.request.uri) contains "..""#),
            Some(vec!["%".into(), "..".into()])
        );
        assert_eq!(
            lits(r#"http.request.path contains "ab""#),
            Some(vec![
                "%".into(),
                "./".into(),
                "/.".into(),
                "//".into(),
                "ab".into()
            ])
        );
        assert_eq!(
            lits(r#"lower(http.request.param("a")) contains "xy""#),
            Some(vec!["%".into(), "+".into(), "xy".into()])
        );
        // Transforms that can join distant bytes, negations and numbers give no literal.
        assert_eq!(lits(r#"remove_ws(http.request.uri) contains "ab""#), None);
        assert_eq!(
            lits(r#"base64_decode(http.request.uri) contains "ab""#),
            None
        );
        assert_eq!(lits(r#"not http.request.uri contains "ab""#), None);
        assert_eq!(lits(r#"len(http.request.uri) > 5"#), None);
    }

    /// The exactness argument of `escape_triggers`: on any input that contains none of a
    /// transform's triggers, the transform changes nothing (but the case, for lower/upper).
    #[test]
    fn without_their_triggers_transforms_are_the_identity() {
        use crate::expr::eval::apply;
        let alphabet: &[u8] = b"aA%+/.\\;&2fu \x80\xc0\xc1\xe0";
        let funcs = [
            Func::UrlDecode,
            Func::UrlDecodeUni,
            Func::NormalizePath,
            Func::NormalizePathWin,
            Func::HtmlEntityDecode,
            Func::JsonUnescape,
            Func::StripPathParams,
            Func::OverlongUtf8,
            Func::TomcatPath,
            Func::HttpdPath,
            Func::IisPath,
            Func::Trim,
        ];
        let field = parse("http.request.uri == \"x\"").unwrap();
        let Expr::Compare { lhs, .. } = field else {
            unreachable!()
        };
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            let longest = inputs.last().map_or(0, Vec::len);
            let next: Vec<Vec<u8>> = inputs
                .iter()
                .filter(|v| v.len() == longest)
                .flat_map(|v| alphabet.iter().map(move |&b| [v.as_slice(), &[b]].concat()))
                .collect();
            inputs.extend(next);
        }
        for func in funcs {
            let triggers = escape_triggers(&Operand::Call(func, Box::new(lhs.clone()))).unwrap();
            for input in &inputs {
                let clean = !triggers
                    .iter()
                    .any(|t| input.windows(t.len()).any(|w| w == t.as_slice()));
                if clean {
                    let out = apply(func, input);
                    let substring =
                        input.windows(out.len().max(1)).any(|w| w == &out[..]) || out.is_empty();
                    assert!(
                        substring,
                        "{func:?} changed {:?} into {:?} without a trigger",
                        String::from_utf8_lossy(input),
                        String::from_utf8_lossy(&out)
                    );
                }
            }
        }
    }

    #[test]
    fn or_needs_both_sides_and_picks_best_side() {
        assert_eq!(
            lits(r#"http.request.uri contains "abc" or http.request.body contains "xyz""#),
            Some(vec!["abc".into(), "xyz".into()])
        );
        assert_eq!(
            lits(r#"http.request.uri contains "abc" or http.request.path contains "x""#),
            None
        );
        assert_eq!(
            lits(r#"http.request.method == "POST" and http.request.uri contains "/cgi-bin/""#),
            Some(vec!["/cgi-bin/".into()])
        );
    }

    #[test]
    fn regex_prefix_literals() {
        assert_eq!(
            lits(r#"http.request.uri ~ r"/etc/(passwd|shadow)""#),
            Some(vec!["/etc/".into()])
        );
    }

    #[test]
    fn prefilter_selects_only_hit_patches() {
        let sets = vec![
            Some(vec![b"jndi".to_vec()]),
            None,
            Some(vec![b"range".to_vec()]),
        ];
        let pf = Prefilter::new(&sets);
        let mut hits = Vec::new();
        pf.candidates(&[b"GET / HTTP/1.1\r\nRANGE: x\r\n\r\n"], &mut hits);
        assert_eq!(hits, vec![false, true, true]);
    }
}
