//! Located diagnostics: `file:line:col: error: what`, the source line, a caret and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a patch file, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong, and what was expected.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
    /// The source line, for display.
    pub source_line: String,
}

impl Diagnostic {
    /// A diagnostic at byte `offset` of `source`.
    #[must_use]
    pub fn at(file: &Path, source: &str, offset: usize, message: impl Into<String>) -> Self {
        let offset = offset.min(source.len());
        let before = &source[..floor_char_boundary(source, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        let source_line = source[line_start..]
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        Self {
            file: file.to_path_buf(),
            line,
            col,
            message: message.into(),
            hint: None,
            source_line,
        }
    }

    /// Adds a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )?;
        if !self.source_line.is_empty() {
            let gutter = self.line.to_string().len();
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", self.line, self.source_line)?;
            writeln!(f, "{:gutter$} | {:>col$}", "", "^", col = self.col)?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every diagnostic of a load, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

fn render(all: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in all {
        out.push_str(&d.to_string());
    }
    out.push_str(&format!(
        "{} error{} found",
        all.len(),
        if all.len() == 1 { "" } else { "s" }
    ));
    out
}
