//! The persisted patch states: which patches are applied, in monitor mode, or unapplied.
//!
//! ```toml
//! # stopgap patch states; rewritten by the gateway on every change.
//! version = 1
//!
//! [patches]
//! SG-2015-1635 = "applied"
//! SG-2021-44228 = "monitor"
//! SG-2014-6271 = "unapplied"
//! ```
//!
//! Written whole to a temporary file in the same folder, fsynced, renamed over the old file,
//! and the folder fsynced: after a crash or `kill -9` the file is either the old state or the
//! new one, never a mixture or empty. A broken file is an error naming the file and line; it
//! is never treated as "nothing applied".

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stopgap_patch::{Diagnostic, Mode};
use toml::Spanned;

/// Version of the state file format.
pub const STATE_VERSION: i64 = 1;

/// The state of one patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchState {
    /// In force: the action is taken.
    Applied,
    /// Evaluated and logged (`would_<action>`), nothing changed.
    Monitor,
    /// Not evaluated.
    Unapplied,
}

impl PatchState {
    /// The state a patch starts in when the state file does not mention it: its file's mode.
    #[must_use]
    pub fn from_mode(mode: Mode) -> Self {
        match mode {
            Mode::Enforce => Self::Applied,
            Mode::Monitor | Mode::AssetSkipped | Mode::AssetRetired => Self::Monitor,
        }
    }

    /// The mode this state applies a patch in, if any.
    #[must_use]
    pub fn mode(self) -> Option<Mode> {
        match self {
            Self::Applied => Some(Mode::Enforce),
            Self::Monitor => Some(Mode::Monitor),
            Self::Unapplied => None,
        }
    }

    /// The name used in files, the API and the audit log.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Monitor => "monitor",
            Self::Unapplied => "unapplied",
        }
    }

    /// Parses a state name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "applied" => Some(Self::Applied),
            "monitor" => Some(Self::Monitor),
            "unapplied" => Some(Self::Unapplied),
            _ => None,
        }
    }
}

impl fmt::Display for PatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Patch id → state.
pub type States = BTreeMap<String, PatchState>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    version: Spanned<i64>,
    #[serde(default)]
    patches: BTreeMap<String, Spanned<String>>,
}

#[derive(Serialize)]
struct WrittenState<'a> {
    version: i64,
    patches: &'a States,
}

/// Reads the state file; `Ok(None)` when it does not exist yet.
///
/// # Errors
/// The file cannot be read, or is not a valid state file (located).
pub fn load(path: &Path) -> Result<Option<States>, Diagnostic> {
    let source = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Diagnostic::at(
                path,
                "",
                0,
                format!("cannot read the patch state file: {e}"),
            ))
        }
    };
    parse(path, &source).map(Some)
}

/// Parses state-file text.
///
/// # Errors
/// The first problem, located.
pub fn parse(path: &Path, source: &str) -> Result<States, Diagnostic> {
    const HINT: &str = "fix or remove the line; states are `applied`, `monitor` or `unapplied` \
                        (deleting the file makes every patch start in its file's mode)";
    let raw: RawState = toml::from_str(source).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        Diagnostic::at(path, source, at, e.message().trim().to_string()).with_hint(HINT)
    })?;
    if *raw.version.get_ref() != STATE_VERSION {
        return Err(Diagnostic::at(
            path,
            source,
            raw.version.span().start,
            format!(
                "unsupported state file version {} (this gateway writes {STATE_VERSION})",
                raw.version.get_ref()
            ),
        ));
    }
    let mut states = States::new();
    for (id, value) in raw.patches {
        let Some(state) = PatchState::parse(value.get_ref()) else {
            return Err(Diagnostic::at(
                path,
                source,
                value.span().start,
                format!("`{}` is not a patch state (patch {id})", value.get_ref()),
            )
            .with_hint(HINT));
        };
        states.insert(id, state);
    }
    Ok(states)
}

/// Writes the state file atomically and durably.
///
/// # Errors
/// Any step of write, fsync or rename failed; the old file is then left as it was.
pub fn save(path: &Path, states: &States) -> std::io::Result<()> {
    let body = toml::to_string(&WrittenState {
        version: STATE_VERSION,
        patches: states,
    })
    .map_err(std::io::Error::other)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(b"# stopgap patch states; rewritten by the gateway on every change.\n")?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("stopgap-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_and_missing_file() {
        let d = temp_dir("rt");
        let path = d.join("state.toml");
        assert_eq!(load(&path).unwrap(), None);
        let mut s = States::new();
        s.insert("SG-2015-1635".into(), PatchState::Unapplied);
        s.insert("SG-2021-44228".into(), PatchState::Monitor);
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), Some(s));
        let leftovers: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn broken_files_are_located_errors() {
        let p = Path::new("/var/lib/stopgap/state.toml");
        let e = parse(p, "version = 1\n[patches]\nSG-1 = \"applid\"\n").unwrap_err();
        assert_eq!((e.line, e.file.as_path()), (3, p));
        assert!(e.message.contains("`applid` is not a patch state"), "{e}");
        let e = parse(p, "version = 1\n[patches]\nSG-1 = \n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = parse(p, "version = 2\n").unwrap_err();
        assert!(e.message.contains("version 2"), "{e}");
        let e = parse(p, "").unwrap_err();
        assert!(e.message.contains("version"), "{e}");
    }
}
