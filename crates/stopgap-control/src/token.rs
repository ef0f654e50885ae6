//! Admin bearer tokens: named secrets kept in files readable by their owner only.
//!
//! A token file holds one line: 64 hexadecimal characters (256 bits from the kernel's random
//! source). A missing file is created with mode 0600; an existing file that group or others
//! can read is refused, as ssh refuses such keys.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One named token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The name recorded in the audit trail as the actor.
    pub name: String,
    secret: String,
    /// Where it was read from.
    pub file: PathBuf,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading, creating or checking the file failed.
    #[error("token file {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The file can be read by group or others.
    #[error(
        "token file {path} can be read by other users (mode {mode:04o}); run: chmod 600 {path}"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a token.
    #[error("token file {path} is empty or holds more than one line")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

impl Token {
    /// Reads the token in `path`, creating the file with a fresh token when it is missing.
    ///
    /// # Errors
    /// See [`TokenError`].
    pub fn load_or_create(name: &str, path: &Path) -> Result<Self, TokenError> {
        let io = |error| TokenError::Io {
            path: path.to_path_buf(),
            error,
        };
        if !path.exists() {
            let secret = random_hex(32).map_err(io)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(format!("{secret}\n").as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            tracing::info!(token = name, "created admin token file {}", path.display());
        }
        Self::load(name, path)
    }

    /// Reads the token in `path`.
    ///
    /// # Errors
    /// See [`TokenError`].
    pub fn load(name: &str, path: &Path) -> Result<Self, TokenError> {
        let io = |error| TokenError::Io {
            path: path.to_path_buf(),
            error,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let secret = read_secret(path)?;
        Ok(Self {
            name: name.to_string(),
            secret,
            file: path.to_path_buf(),
        })
    }

    /// Whether `presented` is this token (constant time in the token's length).
    #[must_use]
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.secret.as_bytes(), presented.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The secret, for a client sending it.
    #[must_use]
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

/// Reads a token file's one line (clients use this; no permission check).
///
/// # Errors
/// The file cannot be read or does not hold one token line.
pub fn read_secret(path: &Path) -> Result<String, TokenError> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|error| TokenError::Io {
            path: path.to_path_buf(),
            error,
        })?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match (lines.next(), lines.next()) {
        (Some(l), None) if !l.trim().contains(char::is_whitespace) => Ok(l.trim().to_string()),
        _ => Err(TokenError::Malformed {
            path: path.to_path_buf(),
        }),
    }
}

/// The token a request presents in `Authorization: Bearer …`, if any.
#[must_use]
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_reused_and_checked() {
        let d = std::env::temp_dir().join(format!("stopgap-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("admin.token");
        let t = Token::load_or_create("local", &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(t.secret().len(), 64);
        let again = Token::load_or_create("local", &path).unwrap();
        assert_eq!(again.secret(), t.secret(), "an existing file is reused");
        assert!(t.matches(again.secret()));
        assert!(!t.matches(&t.secret()[1..]));
        assert!(!t.matches(&"0".repeat(64)));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::load("local", &path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
    }
}
