//! stopgap patch files: parse, validate, compile to a [`PatchSet`].
//!
//! A patch file is TOML: metadata (id, CVEs, severity, references, the affected
//! `vendor:product` and versions), a `[rule]` whose `when` is an expression in stopgap's own small
//! language (see [`expr`]), an action (`reject`, `strip`, `truncate`, `replace`, `reset`,
//! `log`), a mode (`enforce`, `monitor`), and `[[vector]]` test requests.
//!
//! What it does:
//! - parses files with spans and reports **every** problem of a directory at once, each as
//!   `file:line:col: error: what` with the source line and a hint ([`Diagnostics`]);
//! - compiles conditions (regexes are linear-time, built at load) and extracts literals into one
//!   Aho-Corasick [`prefilter`] per phase, so that a message no patch cares about costs one
//!   automaton pass whatever the number of patches;
//! - evaluates a condition against an HTTP message ([`expr::HttpView`]).
//!
//! What it does not do: I/O beyond reading patch files, apply actions to traffic (the engine
//! does), or decide which assets a patch targets (versions are kept as written for now).
#![warn(missing_docs)]

pub mod diag;
pub mod expr;
mod file;
pub mod prefilter;
mod set;
pub mod version;

pub use diag::{Diagnostic, Diagnostics};
pub use file::{
    load_dir, load_file, parse_patch, Action, Mode, Patch, Phase, Protocol, Severity, Target,
    Vector,
};
pub use set::{Applied, PatchSet};

#[cfg(test)]
mod tests;
