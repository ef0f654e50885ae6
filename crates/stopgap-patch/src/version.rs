//! Vendor version strings and affected ranges.
//!
//! [`Version`] orders real-world version strings the way vendors number releases: numeric
//! parts numerically (`2.4.9 < 2.4.10 < 2.4.49`), a letter suffix after a number as a later
//! patch level (`1.3.5 < 1.3.5a < 1.3.5b`, `1.3.3c`), and pre-release tags before the release
//! (`8.0.0.RC1 < 8.0.0`, `1.3.6rc1 < 1.3.6`, `9.0.0.M1 < 9.0.0`, `2.0-beta9 < 2.0`). Missing
//! trailing parts count as zero (`7.5 == 7.5.0`).
//!
//! [`Range`] is an affected-versions expression: a comma-separated list of items, each `*`,
//! `VERSION` (exactly), `OP VERSION` with `<`, `<=`, `=`, `>=`, `>`, or `LOW - HIGH` (both
//! included), `BRANCH < VERSION` (`8.x < 8.3.9`: from the branch up to the fixed release), or
//! `BRANCH.x` (every release of the branch). Consecutive comparison items join into one
//! interval (`>=2.0, <2.15` is one item of the list). Text in parentheses is a comment.

use std::cmp::Ordering;
use std::fmt;

/// Pre-release words that sort before the release they precede.
const PRE_RELEASE: &[&str] = &[
    "dev", "alpha", "a", "beta", "b", "pre", "rc", "cr", "m", "snapshot",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Num(u64),
    /// A pre-release word (with its rank in [`PRE_RELEASE`]); sorts before any number.
    Pre(usize),
    /// Any other word: a patch level after the number it follows.
    Word(String),
}

/// A parsed version.
#[derive(Debug, Clone, Eq)]
pub struct Version {
    raw: String,
    parts: Vec<Part>,
}

impl Version {
    /// Parses a version string: one word starting with a digit (or `v` and a digit); `None`
    /// otherwise.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let raw = text.trim();
        let digits = raw.strip_prefix(['v', 'V']).unwrap_or(raw);
        if !digits.starts_with(|c: char| c.is_ascii_digit()) || raw.contains(char::is_whitespace) {
            return None;
        }
        let raw = digits;
        let mut parts = Vec::new();
        let mut chars = raw.chars().peekable();
        let mut after_separator = true;
        while let Some(&c) = chars.peek() {
            if c.is_ascii_digit() {
                let mut n: u64 = 0;
                while let Some(&d) = chars.peek() {
                    let Some(v) = d.to_digit(10) else { break };
                    n = n.saturating_mul(10).saturating_add(u64::from(v));
                    chars.next();
                }
                parts.push(Part::Num(n));
                after_separator = false;
            } else if c.is_ascii_alphabetic() {
                let mut w = String::new();
                while let Some(&d) = chars.peek() {
                    if !d.is_ascii_alphabetic() {
                        break;
                    }
                    w.push(d.to_ascii_lowercase());
                    chars.next();
                }
                // A word glued to a number (`1.3.5b`) is a patch level unless it is a
                // pre-release word; a separated word (`8.0.0.RC1`, `2.0-beta9`) too.
                let glued_letter = !after_separator && w.len() == 1 && w != "m";
                match PRE_RELEASE.iter().position(|p| *p == w) {
                    Some(rank) if !glued_letter => parts.push(Part::Pre(rank)),
                    _ => parts.push(Part::Word(w)),
                }
                after_separator = false;
            } else {
                chars.next();
                after_separator = true;
            }
        }
        Some(Self {
            raw: raw.to_string(),
            parts,
        })
    }

    /// The text it was parsed from.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn part_cmp(a: Option<&Part>, b: Option<&Part>) -> Ordering {
    use Part::{Num, Pre, Word};
    match (a, b) {
        (None, None) => Ordering::Equal,
        // A missing part is a zero, after a pre-release and before a patch-level word.
        (None, Some(Num(n))) => 0.cmp(n),
        (Some(Num(n)), None) => n.cmp(&0),
        (None, Some(Pre(_))) => Ordering::Greater,
        (Some(Pre(_)), None) => Ordering::Less,
        (None, Some(Word(_))) => Ordering::Less,
        (Some(Word(_)), None) => Ordering::Greater,
        (Some(Num(x)), Some(Num(y))) => x.cmp(y),
        (Some(Pre(x)), Some(Pre(y))) => x.cmp(y),
        (Some(Word(x)), Some(Word(y))) => x.cmp(y),
        (Some(Pre(_)), Some(_)) => Ordering::Less,
        (Some(_), Some(Pre(_))) => Ordering::Greater,
        (Some(Num(_)), Some(Word(_))) => Ordering::Greater,
        (Some(Word(_)), Some(Num(_))) => Ordering::Less,
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let o = part_cmp(self.parts.get(i), other.parts.get(i));
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

/// One bound of an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    version: Version,
    inclusive: bool,
}

/// An interval of versions; `None` bounds are open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Interval {
    low: Option<Bound>,
    high: Option<Bound>,
}

impl Interval {
    fn contains(&self, v: &Version) -> bool {
        let low_ok = self.low.as_ref().is_none_or(|b| {
            if b.inclusive {
                v >= &b.version
            } else {
                v > &b.version
            }
        });
        let high_ok = self.high.as_ref().is_none_or(|b| {
            if b.inclusive {
                v <= &b.version
            } else {
                v < &b.version
            }
        });
        low_ok && high_ok
    }
}

/// An affected-versions expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    any: bool,
    intervals: Vec<Interval>,
}

/// Why a range does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{item}` is not a version, `OP VERSION`, `LOW - HIGH` or `*`")]
pub struct RangeError {
    /// The item that failed.
    pub item: String,
}

fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

impl Range {
    /// Every version.
    #[must_use]
    pub fn any() -> Self {
        Self {
            any: true,
            intervals: Vec::new(),
        }
    }

    /// Parses a range.
    ///
    /// # Errors
    /// An item is neither a version, a comparison, a span nor `*`.
    pub fn parse(text: &str) -> Result<Self, RangeError> {
        let text = strip_comments(text);
        let mut intervals: Vec<Interval> = Vec::new();
        let mut open: Option<Interval> = None;
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = || RangeError {
                item: item.to_string(),
            };
            if item == "*" {
                return Ok(Self::any());
            }
            let (op, rest) = ["<=", ">=", "<", ">", "="]
                .iter()
                .find_map(|op| item.strip_prefix(op).map(|r| (*op, r.trim())))
                .unwrap_or(("", item));
            match op {
                ">=" | ">" => {
                    if let Some(done) = open.take() {
                        intervals.push(done);
                    }
                    let version = Version::parse(rest).ok_or_else(bad)?;
                    open = Some(Interval {
                        low: Some(Bound {
                            version,
                            inclusive: op == ">=",
                        }),
                        high: None,
                    });
                }
                "<=" | "<" => {
                    let version = Version::parse(rest).ok_or_else(bad)?;
                    let mut iv = open.take().unwrap_or_default();
                    iv.high = Some(Bound {
                        version,
                        inclusive: op == "<=",
                    });
                    intervals.push(iv);
                }
                _ if rest.contains(" < ") || rest.contains(" <= ") => {
                    // `BRANCH < VERSION`: the branch's releases before the fixed one.
                    if let Some(done) = open.take() {
                        intervals.push(done);
                    }
                    let (branch, high, inclusive) = match rest.split_once(" <= ") {
                        Some((b, h)) => (b, h, true),
                        None => rest
                            .split_once(" < ")
                            .map(|(b, h)| (b, h, false))
                            .ok_or_else(bad)?,
                    };
                    let branch = branch.trim().trim_end_matches(".x");
                    intervals.push(Interval {
                        low: Some(Bound {
                            version: Version::parse(branch).ok_or_else(bad)?,
                            inclusive: true,
                        }),
                        high: Some(Bound {
                            version: Version::parse(high.trim()).ok_or_else(bad)?,
                            inclusive,
                        }),
                    });
                }
                _ if rest.ends_with(".x") => {
                    if let Some(done) = open.take() {
                        intervals.push(done);
                    }
                    let branch = Version::parse(rest.trim_end_matches(".x")).ok_or_else(bad)?;
                    let mut next = branch.clone();
                    if let Some(Part::Num(n)) = next.parts.last_mut() {
                        // A branch number too large to have a successor names no release.
                        *n = n.checked_add(1).ok_or_else(bad)?;
                    }
                    next.raw = format!("{next:?}");
                    intervals.push(Interval {
                        low: Some(Bound {
                            version: branch,
                            inclusive: true,
                        }),
                        high: Some(Bound {
                            version: next,
                            inclusive: false,
                        }),
                    });
                }
                _ => {
                    if let Some(done) = open.take() {
                        intervals.push(done);
                    }
                    // `LOW - HIGH` needs spaces around the dash: `2.0-beta9` is one version.
                    let (low, high) = match rest.split_once(" - ") {
                        Some((l, h)) => (l, h),
                        None => (rest, rest),
                    };
                    let low = Version::parse(low).ok_or_else(bad)?;
                    let high = Version::parse(high).ok_or_else(bad)?;
                    intervals.push(Interval {
                        low: Some(Bound {
                            version: low,
                            inclusive: true,
                        }),
                        high: Some(Bound {
                            version: high,
                            inclusive: true,
                        }),
                    });
                }
            }
        }
        if let Some(done) = open.take() {
            intervals.push(done);
        }
        if intervals.is_empty() {
            return Err(RangeError {
                item: text.trim().to_string(),
            });
        }
        Ok(Self {
            any: false,
            intervals,
        })
    }

    /// Whether `v` is in the range.
    #[must_use]
    pub fn contains(&self, v: &Version) -> bool {
        self.any || self.intervals.iter().any(|i| i.contains(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn assert_ascending(list: &[&str]) {
        for w in list.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn real_release_lists_are_ordered_as_their_vendors_order_them() {
        // Apache httpd
        assert_ascending(&[
            "2.2.34", "2.4.1", "2.4.9", "2.4.10", "2.4.48", "2.4.49", "2.4.50", "2.4.51",
        ]);
        // ProFTPD: letter patch levels and release candidates
        assert_ascending(&[
            "1.3.3", "1.3.3a", "1.3.3b", "1.3.3c", "1.3.3d", "1.3.4rc1", "1.3.4rc2", "1.3.4",
            "1.3.5", "1.3.5a", "1.3.5b", "1.3.6rc1", "1.3.6",
        ]);
        // Tomcat: milestones and release candidates
        assert_ascending(&[
            "8.0.0.RC1",
            "8.0.0",
            "8.0.46",
            "8.0.47",
            "8.5.78",
            "9.0.0.M1",
            "9.0.0",
            "9.0.1",
        ]);
        // Exim, nginx, vsftpd, Log4j
        assert_ascending(&["4.87", "4.91", "4.92", "4.96", "4.96.1", "4.97.1"]);
        assert_ascending(&["1.3.9", "1.4.0", "1.4.1", "1.22.1", "1.25.3"]);
        assert_ascending(&["2.3.4", "2.3.5", "3.0.3"]);
        assert_ascending(&["2.0-beta9", "2.0-rc1", "2.0", "2.14.1", "2.15.0", "2.17.0"]);
        assert_eq!(v("7.5"), v("7.5.0"));
        assert!(v("10.0") > v("7.0"));
    }

    #[test]
    fn ranges() {
        let r = Range::parse(">=2.4.49, <=2.4.50").unwrap();
        assert!(r.contains(&v("2.4.49")) && r.contains(&v("2.4.50")));
        assert!(!r.contains(&v("2.4.48")) && !r.contains(&v("2.4.51")));
        let r = Range::parse("7.0.0 - 7.0.81, 8.0.0.RC1 - 8.0.46, 8.5.0 - 8.5.22 (PUT enabled)")
            .unwrap();
        assert!(r.contains(&v("8.0.0.RC1")) && r.contains(&v("8.5.22")) && r.contains(&v("7.0.5")));
        assert!(!r.contains(&v("8.0.47")) && !r.contains(&v("9.0.1")));
        let r = Range::parse("=2.4.49").unwrap();
        assert!(r.contains(&v("2.4.49")) && !r.contains(&v("2.4.50")));
        let r = Range::parse("1.3.5").unwrap();
        assert!(r.contains(&v("1.3.5")) && !r.contains(&v("1.3.5a")));
        let r = Range::parse("<= 1.65").unwrap();
        assert!(r.contains(&v("1.65")) && !r.contains(&v("1.67")));
        let r = Range::parse(">=2.0-beta9, <=2.14.1").unwrap();
        assert!(
            r.contains(&v("2.0-beta9")) && r.contains(&v("2.14.1")) && !r.contains(&v("2.15.0"))
        );
        assert!(Range::parse("*").unwrap().contains(&v("0.1")));
        let r = Range::parse("< 7.58, 8.x < 8.3.9, 8.4.x < 8.4.6").unwrap();
        assert!(r.contains(&v("7.57")) && r.contains(&v("8.3.8")) && r.contains(&v("8.4.5")));
        assert!(!r.contains(&v("8.3.9")) && !r.contains(&v("8.4.6")) && !r.contains(&v("7.58")));
        let r = Range::parse("14.1 < 14.1-8.50, 13.1 < 13.1-49.15").unwrap();
        assert!(r.contains(&v("14.1-8.49")) && !r.contains(&v("14.1-8.50")));
        let r = Range::parse("12.1.x, 11.6.x").unwrap();
        assert!(r.contains(&v("12.1.5")) && r.contains(&v("11.6.0")) && !r.contains(&v("12.2.0")));
        assert!(Range::parse("2013, 2016, 2019 before the March 2021 updates").is_err());
        assert!(Range::parse("").is_err());
        // Found by fuzzing: a branch whose number saturates has no successor; an error, not a
        // panic.
        assert!(Range::parse("99999999999999999999999.x").is_err());
        assert!(Range::parse("18446744073709551614.x").is_ok());
    }

    fn version_strategy() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            (0u32..30).prop_map(|n| n.to_string()),
            Just("rc1".to_string()),
            Just("a".to_string()),
            Just("b".to_string()),
            Just("M2".to_string()),
            Just("beta".to_string()),
        ];
        (
            prop::collection::vec(part, 1..5),
            prop::sample::select(vec![".", "-", ""]),
        )
            .prop_map(|(parts, sep)| format!("1{sep}{}", parts.join(".")))
    }

    proptest! {
        #[test]
        fn ordering_is_a_total_order(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            let (a, b, c) = (v(&a), v(&b), v(&c));
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
            prop_assert_eq!(a.cmp(&a), Ordering::Equal);
        }
    }
}
