//! Literal extraction and the Aho-Corasick prefilter.
//!
//! For each patch we extract a set of literals such that, if the patch's condition holds, at
//! least one of them occurs (ASCII case-insensitively) in the raw message bytes (worked out
//! once, when the patch file is loaded). One automaton over all patches' longer literals is run
//! once per head, single-byte literals are looked for directly; only patches whose literal hit,
//! plus the patches for which no such set exists ("unfiltered"), have their full condition
//! evaluated. A body is not run through the automaton: it is checked with memchr passes for one
//! byte of each literal that can occur in it. The cost of a message that no patch is interested
//! in is one automaton pass over its head and a few passes over its body, however many patches
//! are applied.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::expr::{CmpOp, Expr, Field, FieldKind, Func, Operand};

/// A set of literals, at least one of which must occur for the condition to hold.
pub type Literals = Vec<Vec<u8>>;

/// Required literals with where each can occur: `true` when in the body as well as the head
/// (a condition on a body field), `false` when in the head only.
pub type LocatedLiterals = Vec<(Vec<u8>, bool)>;

/// Extracts a required literal set from `expr`, or `None` when no such set is known.
#[must_use]
pub fn required_literals(expr: &Expr) -> Option<Literals> {
    required_located(expr).map(|l| l.into_iter().map(|(lit, _)| lit).collect())
}

/// As [`required_literals`], with where each literal can occur.
#[must_use]
pub fn required_located(expr: &Expr) -> Option<LocatedLiterals> {
    let lits = match expr {
        Expr::Or(a, b) => {
            let mut l = required_located(a)?;
            l.extend(required_located(b)?);
            Some(l)
        }
        Expr::And(a, b) => better(required_located(a), required_located(b)),
        Expr::Not(_) | Expr::Const(_) => None,
        Expr::Truthy(op) => field_name_literal(op),
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
                let in_body = lhs.field().is_some_and(Field::reads_body);
                literals.map(|mut l| {
                    l.extend(triggers);
                    l.into_iter().map(|lit| (lit, in_body)).collect()
                })
            } else {
                None
            };
            let positive = !matches!(op, CmpOp::Ne | CmpOp::NotMatches);
            let name = positive.then(|| field_name_literal(lhs)).flatten();
            better(value, name)
        }
    }?;
    (!lits.is_empty() && lits.iter().all(|(s, _)| !s.is_empty())).then_some(lits)
}

/// Of two sets either of which is required, the one that filters better.
fn better(x: Option<LocatedLiterals>, y: Option<LocatedLiterals>) -> Option<LocatedLiterals> {
    match (x, y) {
        (Some(x), Some(y)) => {
            let of = |l: &LocatedLiterals| quality(l.iter().map(|(lit, _)| lit.as_slice()));
            Some(if of(&x) >= of(&y) { x } else { y })
        }
        (x, y) => x.or(y),
    }
}

/// Higher is better: the weakest literal of the set, discounted by the set's size.
fn quality<'l>(set: impl ExactSizeIterator<Item = &'l [u8]>) -> usize {
    let size = set.len();
    let weakest = set.map(strength).min().unwrap_or(0);
    weakest * 4 / (size + 3)
}

/// How well one literal filters, in hundredths of a byte: its length, but a single byte
/// counts fully only when it is rare (a space, a letter or a digit is in most messages).
fn strength(literal: &[u8]) -> usize {
    match literal {
        [b] if byte_rank(*b) <= 10 => 100,
        [b] => usize::from(255 - byte_rank(*b)) / 8,
        _ => literal.len() * 100,
    }
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

/// A condition that needs a named field to exist can only hold when the name occurs in the
/// message: a header or cookie name as it is; a query or form name as it is or escaped, so
/// with the field's escape triggers.
fn field_name_literal(op: &Operand) -> Option<LocatedLiterals> {
    match op {
        Operand::Field(f) => match &f.kind {
            FieldKind::Header(name) | FieldKind::ResponseHeader(name) | FieldKind::Cookie(name) => {
                Some(vec![(name.as_bytes().to_vec(), false)])
            }
            FieldKind::Arg(name) | FieldKind::Form(name) | FieldKind::Param(name) => {
                let mut lits = vec![name.as_bytes().to_vec()];
                lits.extend(escape_triggers(op)?);
                let in_body = f.reads_body();
                Some(lits.into_iter().map(|l| (l, in_body)).collect())
            }
            _ => None,
        },
        Operand::Call(Func::Count, _) => None,
        Operand::Call(_, inner) => field_name_literal(inner),
        _ => None,
    }
}

/// The shortest message `expr` can hold for: a condition that a raw field's value (read as
/// it is, or only case-folded or trimmed) is longer than N needs a message of N bytes or more.
/// Zero when nothing is known.
#[must_use]
pub fn min_message_len(expr: &Expr) -> usize {
    match expr {
        Expr::Or(a, b) => min_message_len(a).min(min_message_len(b)),
        Expr::And(a, b) => min_message_len(a).max(min_message_len(b)),
        Expr::Compare {
            lhs: Operand::Call(Func::Len, inner),
            op,
            rhs: Operand::Num(n),
            ..
        } if keeps_length_bound(inner) => {
            let n = usize::try_from(*n).unwrap_or(0);
            match op {
                CmpOp::Gt => n.saturating_add(1),
                CmpOp::Ge | CmpOp::Eq => n,
                _ => 0,
            }
        }
        _ => 0,
    }
}

/// Whether every value of `op` is no longer than the message part it is read from.
fn keeps_length_bound(op: &Operand) -> bool {
    match op {
        Operand::Field(f) => f.is_raw(),
        Operand::Call(Func::Lower | Func::Upper | Func::Trim, inner) => keeps_length_bound(inner),
        _ => false,
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
        let extracted = extractor.extract(&hir);
        let mut optimized = extracted.clone();
        optimized.optimize_for_prefix_by_preference();
        // The optimisation gives up on sets of single bytes (too weak for a regex engine's
        // prefilter); here a rare byte is cheap to look for (memchr), so the set as extracted
        // competes too.
        for seq in [optimized, extracted] {
            let Some(lits) = seq.literals() else { continue };
            let set: Literals = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
            if set.is_empty() || set.iter().any(Vec::is_empty) {
                continue;
            }
            let of = |l: &Literals| quality(l.iter().map(Vec::as_slice));
            if best.as_ref().is_none_or(|b| of(&set) > of(b)) {
                best = Some(set);
            }
        }
    }
    best
}

/// One automaton over every patch's literals of two bytes or more, and memchr passes for the
/// single bytes (escape triggers such as `%` and `+`): an automaton would stop at every one of
/// those in a long urlencoded body, while memchr finds whether each occurs at memory speed.
#[derive(Debug, Clone)]
pub struct Prefilter {
    automaton: Option<Matcher>,
    /// For each automaton pattern, the patch index it belongs to.
    owner: Vec<usize>,
    /// Single-byte literals (both cases of a letter), each with the patches it belongs to.
    bytes: Vec<(u8, Vec<usize>)>,
    /// What a long body is checked for instead of running the automaton over it: the
    /// single-byte literals that can occur in a body, and one byte (the rarest, both cases of
    /// a letter) of each longer one, each with the patches it belongs to.
    body_bytes: Vec<(u8, Vec<usize>)>,
    /// Patches that must always be evaluated.
    unfiltered: Vec<usize>,
    /// Patches that cannot hold for a message shorter than a length, with the length.
    min_len: Vec<(usize, usize)>,
    patch_count: usize,
}

impl Prefilter {
    /// Builds the prefilter for patches `0..sets.len()`.
    #[must_use]
    pub fn new(sets: &[Option<Literals>]) -> Self {
        let located: Vec<Option<LocatedLiterals>> = sets
            .iter()
            .map(|set| {
                set.as_ref()
                    .map(|lits| lits.iter().map(|l| (l.clone(), true)).collect())
            })
            .collect();
        Self::new_located(&located)
    }

    /// Builds the prefilter for patches `0..sets.len()`, knowing which literals can occur in
    /// a body: [`Prefilter::candidates_with_body`] looks for only those in the body.
    #[must_use]
    pub fn new_located(sets: &[Option<LocatedLiterals>]) -> Self {
        let mut patterns = Vec::new();
        let mut owner = Vec::new();
        let mut bytes: Vec<(u8, Vec<usize>)> = Vec::new();
        let mut body_bytes: Vec<(u8, Vec<usize>)> = Vec::new();
        let mut unfiltered = Vec::new();
        // Longer literals that can occur in a body, checked there by one of their bytes.
        let mut in_body: Vec<(&[u8], usize)> = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            let Some(lits) = set else {
                unfiltered.push(i);
                continue;
            };
            for (l, body) in lits {
                if let [b] = l.as_slice() {
                    add_byte(&mut bytes, *b, i);
                    if *body {
                        add_byte(&mut body_bytes, *b, i);
                    }
                } else {
                    patterns.push(l.clone());
                    owner.push(i);
                    if *body {
                        in_body.push((l, i));
                    }
                }
            }
        }
        for (b, i) in cover_bytes(&in_body, &body_bytes) {
            add_byte(&mut body_bytes, b, i);
        }
        for (_, owners) in bytes.iter_mut().chain(&mut body_bytes) {
            owners.sort_unstable();
            owners.dedup();
        }
        let automaton = if patterns.is_empty() {
            None
        } else {
            let built = Matcher::build(&patterns);
            if built.is_none() {
                // Without an automaton every patch is evaluated: slower, never wrong.
                unfiltered = (0..sets.len()).collect();
            }
            built
        };
        Self {
            automaton,
            owner,
            bytes,
            body_bytes,
            unfiltered,
            min_len: Vec::new(),
            patch_count: sets.len(),
        }
    }

    /// Adds, per patch, the shortest message it can hold for (see [`min_message_len`]): a
    /// shorter message does not make it a candidate, whatever its literals.
    #[must_use]
    pub fn with_min_lengths(mut self, lengths: &[usize]) -> Self {
        self.min_len = lengths
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(i, &n)| (i, n))
            .collect();
        self
    }

    fn drop_too_short(&self, message_len: usize, hits: &mut [bool]) {
        for &(i, n) in &self.min_len {
            if message_len < n {
                hits[i] = false;
            }
        }
    }

    /// Marks in `hits` every patch that must be evaluated for a message made of `haystacks`.
    pub fn candidates(&self, haystacks: &[&[u8]], hits: &mut Vec<bool>) {
        self.start(hits);
        self.mark_bytes(&self.bytes, haystacks, hits);
        self.mark_automaton(haystacks, hits);
        self.drop_too_short(haystacks.iter().map(|h| h.len()).sum(), hits);
    }

    /// As [`Prefilter::candidates`] for a head and a long body: the automaton runs over the
    /// head only, and the body is checked with memchr passes for the single-byte literals that
    /// can occur in a body and for one byte of every longer one. A literal in the body has
    /// that byte there, so no patch that could match is left out; a body without those bytes
    /// costs a few passes at memory speed instead of an automaton step per byte.
    ///
    /// `head_hits`, when given, are the candidates a prefilter over the same literal sets found
    /// in this head (the head phase's): the head is then not scanned again.
    pub fn candidates_with_body(
        &self,
        head: &[u8],
        head_hits: Option<&[bool]>,
        body: &[u8],
        hits: &mut Vec<bool>,
    ) {
        self.start(hits);
        // The head phase dropped patches too long for the head alone; one of those may still
        // hold with the body, so its head literals are looked for again.
        let dropped = |found: &[bool]| {
            self.min_len
                .iter()
                .any(|&(i, n)| head.len() < n && !found.get(i).copied().unwrap_or(false))
        };
        match head_hits.filter(|found| !dropped(found)) {
            Some(found) => {
                for (hit, &found) in hits.iter_mut().zip(found) {
                    *hit |= found;
                }
            }
            None => {
                self.mark_bytes(&self.bytes, &[head], hits);
                self.mark_automaton(&[head], hits);
            }
        }
        self.mark_bytes(&self.body_bytes, &[body], hits);
        self.drop_too_short(head.len() + body.len(), hits);
    }

    fn start(&self, hits: &mut Vec<bool>) {
        hits.clear();
        hits.resize(self.patch_count, false);
        for &i in &self.unfiltered {
            hits[i] = true;
        }
    }

    fn mark_bytes(&self, bytes: &[(u8, Vec<usize>)], haystacks: &[&[u8]], hits: &mut [bool]) {
        if bytes.is_empty() {
            return;
        }
        let mut present = [false; 256];
        for hay in haystacks {
            if hay.len() <= SHORT_HAYSTACK {
                // A head: one look at each byte beats a memchr call per group.
                for &b in *hay {
                    present[usize::from(b)] = true;
                }
                continue;
            }
            for group in bytes.chunks(3) {
                mark_present(hay, group, &mut present);
            }
        }
        for (b, owners) in bytes {
            if present[usize::from(*b)] {
                for &i in owners {
                    hits[i] = true;
                }
            }
        }
    }

    fn mark_automaton(&self, haystacks: &[&[u8]], hits: &mut [bool]) {
        match &self.automaton {
            None => {}
            Some(Matcher::Dfa(dfa)) => {
                for hay in haystacks {
                    if !mark_dfa(dfa, hay, &self.owner, hits) {
                        // Cannot happen for an unanchored DFA; never wrong if it did.
                        hits.fill(true);
                    }
                }
            }
            Some(Matcher::General(ac)) => {
                for hay in haystacks {
                    for m in ac.find_overlapping_iter(*hay) {
                        hits[self.owner[m.pattern().as_usize()]] = true;
                    }
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

/// The automaton over the literals of two bytes or more (ASCII case-insensitive, every match
/// reported, overlapping ones too).
#[derive(Debug, Clone)]
enum Matcher {
    /// Up to a library-sized set: a DFA walked here, one table lookup per byte with the
    /// automaton's type known (the general searcher calls it through a trait object, a call
    /// per byte).
    Dfa(Box<aho_corasick::dfa::DFA>),
    /// Larger sets, whose DFA would grow too large: the crate's searcher picks the automaton.
    General(AhoCorasick),
}

impl Matcher {
    fn build(patterns: &[Vec<u8>]) -> Option<Self> {
        if patterns.len() <= DFA_MAX_PATTERNS {
            let dfa = aho_corasick::dfa::DFA::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                // The walk below has no use for a prefilter; without one, only match states
                // are special.
                .prefilter(false)
                .build(patterns);
            if let Ok(dfa) = dfa {
                return Some(Self::Dfa(Box::new(dfa)));
            }
        }
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(patterns)
            .ok()
            .map(Self::General)
    }
}

/// Marks the owner of every pattern that occurs in `hay`, overlapping occurrences included:
/// the DFA's state after each byte carries every pattern that ends there. `false` when the
/// DFA has no unanchored start (it is always built with one).
fn mark_dfa(dfa: &aho_corasick::dfa::DFA, hay: &[u8], owner: &[usize], hits: &mut [bool]) -> bool {
    use aho_corasick::automaton::Automaton;
    let Ok(mut sid) = dfa.start_state(aho_corasick::Anchored::No) else {
        return false;
    };
    for &byte in hay {
        sid = dfa.next_state(aho_corasick::Anchored::No, sid, byte);
        if dfa.is_special(sid) && dfa.is_match(sid) {
            for i in 0..dfa.match_len(sid) {
                hits[owner[dfa.match_pattern(sid, i).as_usize()]] = true;
            }
        }
    }
    true
}

/// Chooses, for each longer literal that can occur in a body, one of its bytes to look for
/// there (its owner's patch index alongside): every distinct byte costs one more third of a
/// memchr pass over the body (two for a letter's two cases), and a common byte makes its
/// patches candidates for most bodies. Greedy set cover: bytes already looked for (`known`)
/// cover what they can for free, then the byte that covers the most literals per cost is taken,
/// until every literal is covered.
fn cover_bytes(literals: &[(&[u8], usize)], known: &[(u8, Vec<usize>)]) -> Vec<(u8, usize)> {
    let has = |l: &[u8], b: u8| l.iter().any(|x| x.eq_ignore_ascii_case(&b));
    let known: Vec<u8> = known.iter().map(|(b, _)| b.to_ascii_lowercase()).collect();
    let mut choice: Vec<Option<u8>> = literals
        .iter()
        .map(|(l, _)| {
            known
                .iter()
                .copied()
                .filter(|&b| has(l, b))
                .min_by_key(|&b| byte_rank(b))
        })
        .collect();
    // Cost in hundredths: case variants times (1 + commonness).
    let cost = |b: u8| {
        let variants = if b.is_ascii_alphabetic() { 2 } else { 1 };
        variants * (100 + u32::from(byte_rank(b)))
    };
    loop {
        let left: Vec<&[u8]> = literals
            .iter()
            .zip(&choice)
            .filter(|(_, c)| c.is_none())
            .map(|((l, _), _)| *l)
            .collect();
        let best = left
            .iter()
            .flat_map(|l| l.iter().map(u8::to_ascii_lowercase))
            .max_by_key(|&b| {
                let covered = left.iter().filter(|l| has(l, b)).count() as u32;
                // Ties go to the rarer byte, then the lower one (a stable choice).
                (
                    covered * 100_000 / cost(b),
                    u8::MAX - byte_rank(b),
                    u8::MAX - b,
                )
            });
        let Some(b) = best else { break };
        for ((l, _), c) in literals.iter().zip(&mut choice) {
            if c.is_none() && has(l, b) {
                *c = Some(b);
            }
        }
    }
    literals
        .iter()
        .zip(choice)
        .filter_map(|((_, i), c)| c.map(|b| (b, *i)))
        .collect()
}

/// Records `b` (both cases of a letter) as a literal byte of patch `i`.
fn add_byte(list: &mut Vec<(u8, Vec<usize>)>, b: u8, i: usize) {
    for b in [b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
        match list.iter_mut().find(|(x, _)| *x == b) {
            Some((_, owners)) => owners.push(i),
            None => list.push((b, vec![i])),
        }
    }
}

/// How common `b` is in HTTP bodies, lower is rarer: control bytes and bytes outside ASCII,
/// then uncommon punctuation, then digits, then common punctuation, then letters by their
/// frequency in English text, then white space (in every head).
fn byte_rank(b: u8) -> u8 {
    const LETTERS: &[u8] = b"zqxjkvbpygfwmucldrhsnioate";
    match b {
        b' ' | b'\t' | b'\r' | b'\n' => 150,
        _ if !b.is_ascii_graphic() => 0,
        b'=' | b'&' | b'.' | b'/' | b'-' | b',' | b':' | b'"' | b'_' => 60,
        b'0'..=b'9' => 50,
        _ if b.is_ascii_alphabetic() => {
            let lower = b.to_ascii_lowercase();
            100 + LETTERS.iter().position(|&l| l == lower).unwrap_or(0) as u8
        }
        _ => 10,
    }
}

/// Up to this many automaton patterns, the automaton is a DFA.
const DFA_MAX_PATTERNS: usize = 1_000;

/// Haystacks up to this long are checked a byte at a time rather than with memchr passes.
const SHORT_HAYSTACK: usize = 512;

/// Sets `present[b]` for each byte `b` of `group` (at most three) that occurs in `hay`: one
/// pass, resumed after each byte found with the bytes still missing.
fn mark_present(hay: &[u8], group: &[(u8, Vec<usize>)], present: &mut [bool; 256]) {
    let mut missing = [0u8; 3];
    let mut count = 0;
    for (b, _) in group.iter().take(3) {
        if !present[usize::from(*b)] {
            missing[count] = *b;
            count += 1;
        }
    }
    let mut from = 0;
    while from < hay.len() {
        let rest = &hay[from..];
        let found = match &missing[..count] {
            [] => return,
            [a] => memchr::memchr(*a, rest),
            [a, b] => memchr::memchr2(*a, *b, rest),
            [a, b, c, ..] => memchr::memchr3(*a, *b, *c, rest),
        };
        let Some(at) = found else { return };
        let b = rest[at];
        present[usize::from(b)] = true;
        if let Some(k) = missing[..count].iter().position(|&x| x == b) {
            missing.copy_within(k + 1..count, k);
            count -= 1;
        }
        from += at + 1;
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
        // A single byte is a literal too (looked for with memchr, not the automaton); a
        // common one filters little, but never worse than no literal at all.
        assert_eq!(
            lits(r#"http.request.uri contains "abc" or http.request.path contains "x""#),
            Some(vec![
                "%".into(),
                "./".into(),
                "/.".into(),
                "//".into(),
                "abc".into(),
                "x".into()
            ])
        );
        assert_eq!(
            lits(r##"http.request.uri contains "abc" or http.request.path contains "#""##),
            Some(vec![
                "#".into(),
                "%".into(),
                "./".into(),
                "/.".into(),
                "//".into(),
                "abc".into()
            ])
        );
        assert_eq!(
            lits(r#"http.request.uri contains "abc" or len(http.request.path) > 3"#),
            None
        );
        assert_eq!(
            lits(r#"http.request.method == "POST" and http.request.uri contains "/cgi-bin/""#),
            Some(vec!["/cgi-bin/".into()])
        );
    }

    #[test]
    fn regex_prefix_literals() {
        // The longer literals of the set as extracted beat the shared prefix.
        assert_eq!(
            lits(r#"http.request.uri ~ r"/etc/(passwd|shadow)""#),
            Some(vec!["/etc/passwd".into(), "/etc/shadow".into()])
        );
        // A set of rare single bytes is kept (the regex engine's optimisation drops it).
        assert_eq!(
            lits(r#"http.request.raw_path ~ r"[\xc0\xc1]|\xe0[\x80-\x9f]""#),
            Some(vec![
                "\u{fffd}".into(),
                "\u{fffd}".into(),
                "\u{fffd}".into()
            ])
        );
        // Not the prefix set of white space (in every head): the suffixes, all ending in `{`.
        let suffixes = lits(r#"http.request.headers ~ r"^\s*\(\s*\)\s*\{""#).unwrap();
        assert!(suffixes.iter().all(|l| l.ends_with('{')), "{suffixes:?}");
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

    fn located(src: &str) -> Option<LocatedLiterals> {
        required_located(&parse(src).unwrap())
    }

    #[test]
    fn literals_know_whether_they_can_be_in_the_body() {
        let l = located(
            r#"lower(http.request.param_names) contains "classloader" or http.request.raw_path contains "/x/""#,
        )
        .unwrap();
        assert!(l.contains(&(b"classloader".to_vec(), true)));
        assert!(l.contains(&(b"%".to_vec(), true)));
        assert!(l.contains(&(b"/x/".to_vec(), false)));
        // A named parameter that must exist requires its name (or an escape).
        assert_eq!(
            located(r#"exists(http.request.param("jsp"))"#),
            Some(vec![
                (b"jsp".to_vec(), true),
                (b"%".to_vec(), true),
                (b"+".to_vec(), true)
            ])
        );
        // The header name beats a value set of single digits.
        assert_eq!(
            lits(r#"http.request.header("range") ~ r"[1-9][0-9]{18,}""#),
            Some(vec!["range".into()])
        );
    }

    #[test]
    fn every_body_literal_is_covered_by_one_of_its_bytes() {
        let literals: Vec<(&[u8], usize)> = vec![
            (b"classloader", 0),
            (b"protectiondomain", 0),
            (b"bootstrapstatusprovider", 1),
            (b"applicationconfig", 1),
            (b"jsp", 2),
            (b"widget_php", 3),
            (b"${", 4),
            (b"%{", 5),
        ];
        let known = vec![(b'%', vec![5])];
        let chosen = cover_bytes(&literals, &known);
        assert_eq!(chosen.len(), literals.len());
        for ((lit, owner), (b, i)) in literals.iter().zip(&chosen) {
            assert_eq!(owner, i);
            assert!(
                lit.iter().any(|x| x.eq_ignore_ascii_case(b)),
                "{b} not in literal"
            );
        }
        // "%{" is covered by the `%` already looked for; one letter covers the four literals
        // that share it, so the body costs few distinct bytes.
        assert_eq!(chosen[7].0, b'%');
        let mut distinct: Vec<u8> = chosen.iter().map(|(b, _)| *b).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() <= 4, "{distinct:?}");
    }

    #[test]
    fn body_candidates_find_body_literals_in_any_case_and_head_literals_in_the_head() {
        let sets = vec![
            Some(vec![(b"classloader".to_vec(), true)]),
            Some(vec![(b"/admin/".to_vec(), false)]),
            Some(vec![(b"${".to_vec(), true), (b"%".to_vec(), true)]),
            None,
        ];
        let pf = Prefilter::new_located(&sets);
        let head = b"POST /app HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut hits = Vec::new();
        let body = vec![b'a'; 4096];
        pf.candidates_with_body(head, None, &body, &mut hits);
        assert_eq!(hits, vec![false, false, false, true]);
        // Upper case in the body still marks the patch (its byte is looked for in both cases).
        let mut body = b"x=1&CLASSLOADER=2&".to_vec();
        body.resize(4096, b'b');
        pf.candidates_with_body(head, None, &body, &mut hits);
        assert!(hits[0]);
        // A head-only literal in the body does not; in the head it does.
        pf.candidates_with_body(head, None, b"/admin/", &mut hits);
        assert!(!hits[1]);
        pf.candidates_with_body(b"GET /admin/ HTTP/1.1\r\n\r\n", None, b"", &mut hits);
        assert!(hits[1]);
        // A single byte anywhere in the body, past the first.
        let mut body = vec![b'z'; 4095];
        body.push(b'%');
        pf.candidates_with_body(head, None, &body, &mut hits);
        assert!(hits[2]);
        // The head phase's candidates stand in for a scan of the head.
        pf.candidates_with_body(head, Some(&[false, true, false, false]), b"", &mut hits);
        assert_eq!(hits, vec![false, true, false, true]);
    }

    #[test]
    fn length_conditions_give_a_shortest_message() {
        let min = |src: &str| min_message_len(&parse(src).unwrap());
        assert_eq!(min(r#"len(http.request.header("host")) > 259"#), 260);
        assert_eq!(min(r#"len(lower(http.request.uri)) >= 300"#), 300);
        // A decoded value's length says nothing known here; nor does a negation.
        assert_eq!(min(r#"len(url_decode(http.request.uri)) > 300"#), 0);
        assert_eq!(min(r#"not len(http.request.uri) > 300"#), 0);
        assert_eq!(
            min(r#"len(http.request.uri) > 10 or len(http.request.header("a")) > 99"#),
            11
        );
        assert_eq!(
            min(r#"len(http.request.uri) > 10 and len(http.request.header("a")) > 99"#),
            100
        );

        let pf = Prefilter::new(&[None, None]).with_min_lengths(&[100, 0]);
        let mut hits = Vec::new();
        pf.candidates(&[b"GET / HTTP/1.1\r\n\r\n"], &mut hits);
        assert_eq!(hits, vec![false, true]);
        pf.candidates(&[&[b'x'; 100]], &mut hits);
        assert_eq!(hits, vec![true, true]);
    }

    #[test]
    fn a_patch_too_long_for_the_head_alone_is_looked_for_again_with_the_body() {
        let pf = Prefilter::new_located(&[Some(vec![(b"abc".to_vec(), false)])])
            .with_min_lengths(&[100]);
        let head = b"GET /abc HTTP/1.1\r\n\r\n";
        let mut hits = Vec::new();
        // The head phase dropped it (the head alone is too short) ...
        pf.candidates(&[head], &mut hits);
        assert_eq!(hits, vec![false]);
        let head_hits = hits.clone();
        // ... but head and body together are long enough, and its literal is in the head.
        pf.candidates_with_body(head, Some(&head_hits), &[b'z'; 200], &mut hits);
        assert_eq!(hits, vec![true]);
    }

    proptest::proptest! {
        /// The DFA walk marks exactly the patterns the crate's overlapping search finds, in
        /// any case, with patterns that overlap, nest and share prefixes and suffixes.
        #[test]
        fn dfa_walk_finds_what_the_overlapping_search_finds(
            patterns in proptest::collection::vec("[abAB%]{2,4}", 1..12),
            hay in "[abAB%c]{0,40}",
        ) {
            let patterns: Vec<Vec<u8>> = patterns.into_iter().map(String::into_bytes).collect();
            let owner: Vec<usize> = (0..patterns.len()).collect();
            let Some(Matcher::Dfa(dfa)) = Matcher::build(&patterns) else {
                panic!("a small set is built as a DFA");
            };
            let general = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&patterns)
                .unwrap();
            let mut want = vec![false; patterns.len()];
            for m in general.find_overlapping_iter(hay.as_bytes()) {
                want[m.pattern().as_usize()] = true;
            }
            let mut got = vec![false; patterns.len()];
            proptest::prop_assert!(mark_dfa(&dfa, hay.as_bytes(), &owner, &mut got));
            proptest::prop_assert_eq!(got, want);
        }
    }
}
