//! Tokens as a listener uses them: read from the config and from the
//! files it names (`token_file`, `tokens_file`), checked, and never shown
//! by `Debug`.
//!
//! Files are read when the hub starts and again when the application (the
//! daemon, on SIGHUP) hands new [`Tokens`] to [`crate::Hub::set_tokens`].
//! A token file that others may read or write is used, with a warning, as
//! ssh warns about a private key left open.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{AuthConfig, ConfigError, Redacted, RedactedValues};

/// The tokens of one listener, files read.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// The token every node may use unless it has its own.
    pub shared: Option<String>,
    /// Tokens of nodes that have their own (`node_id -> token`).
    pub per_node: BTreeMap<String, String>,
}

impl Tokens {
    /// Whether there is no token at all (the listener is open).
    pub fn is_empty(&self) -> bool {
        self.shared.is_none() && self.per_node.is_empty()
    }
}

/// Names the nodes, never a token.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("shared", &self.shared.as_ref().map(|_| Redacted))
            .field("per_node", &RedactedValues(&self.per_node))
            .finish()
    }
}

impl AuthConfig {
    /// The tokens, with `token_file` and `tokens_file` read now. Errors
    /// name the key relative to the listener (`auth.token_file`) and the
    /// file, never a token.
    ///
    /// ```
    /// # fn demo() -> Result<(), framehub::ConfigError> {
    /// let path = std::env::temp_dir().join(format!("framehub-doc-token-{}", std::process::id()));
    /// std::fs::write(&path, "s3cret\n").unwrap();
    /// let auth = framehub::AuthConfig { token_file: Some(path.clone()), ..Default::default() };
    /// assert_eq!(auth.load_tokens()?.shared.as_deref(), Some("s3cret"));
    /// # std::fs::remove_file(path).unwrap();
    /// # Ok(()) }
    /// # demo().unwrap();
    /// ```
    pub fn load_tokens(&self) -> Result<Tokens, ConfigError> {
        let shared = match (&self.token, &self.token_file) {
            (_, Some(path)) => Some(read_token(path, "auth.token_file")?),
            (token, None) => token.clone(),
        };
        let per_node = match &self.tokens_file {
            Some(path) => read_tokens(path)?,
            None => self.tokens.clone(),
        };
        if shared.as_deref() == Some("") {
            return Err(ConfigError::new("auth.token", "must not be empty"));
        }
        if let Some((node, _)) = per_node.iter().find(|(_, t)| t.is_empty()) {
            return Err(ConfigError::new(
                format!("auth.tokens.{node}"),
                "must not be empty",
            ));
        }
        Ok(Tokens { shared, per_node })
    }
}

/// Reads a file that holds secrets, warning when others may read it.
pub(crate) fn read_secret_file(path: &Path, key: &str) -> Result<String, ConfigError> {
    let error = |what: String| ConfigError::new(key, format!("{}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    warn_if_open(path);
    Ok(text)
}

/// A shared token: the whole file, surrounding whitespace (the trailing
/// newline editors add) removed.
pub(crate) fn read_token(path: &Path, key: &str) -> Result<String, ConfigError> {
    let text = read_secret_file(path, key)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{}: the file holds no token", path.display()),
        ));
    }
    if token.contains(['\n', '\r']) {
        return Err(ConfigError::new(
            key,
            format!(
                "{}: one token expected, found several lines",
                path.display()
            ),
        ));
    }
    Ok(token.to_owned())
}

/// Per-node tokens: a flat TOML table, `radar3 = "token"` per line, so
/// any node name can be written (quoted) and comments are allowed.
fn read_tokens(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let key = "auth.tokens_file";
    let text = read_secret_file(path, key)?;
    toml::from_str::<BTreeMap<String, String>>(&text).map_err(|e| {
        // The parser's message quotes the offending line, which may hold
        // a token: say where, not what.
        let at = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1))
            .map_or_else(String::new, |line| format!(" (line {line})"));
        ConfigError::new(
            key,
            format!(
                "{}: not a table of node = \"token\" lines{at}",
                path.display()
            ),
        )
    })
}

/// Warns when a token file is readable or writable by every user.
fn warn_if_open(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o006 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:04o}"),
                "token file is accessible by other users; restrict it (chmod 600)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("framehub-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn files_are_read_and_checked() {
        let auth = AuthConfig {
            token_file: Some(file("token", "  shared-one\n")),
            tokens_file: Some(file(
                "tokens",
                "# per node\nradar3 = \"own3\"\n\"radar 4\" = \"own4\"\n",
            )),
            ..AuthConfig::default()
        };
        let tokens = auth.load_tokens().expect("valid files");
        assert_eq!(tokens.shared.as_deref(), Some("shared-one"));
        assert_eq!(tokens.per_node["radar3"], "own3");
        assert_eq!(tokens.per_node["radar 4"], "own4");

        for (name, text, key) in [
            ("empty", "\n", "auth.token_file"),
            ("two", "a\nb\n", "auth.token_file"),
        ] {
            let auth = AuthConfig {
                token_file: Some(file(name, text)),
                ..AuthConfig::default()
            };
            assert_eq!(auth.load_tokens().expect_err(name).key, key);
        }
        let bad = AuthConfig {
            tokens_file: Some(file("bad", "radar3 = \"ok\"\nradar4 = hunter2\n")),
            ..AuthConfig::default()
        };
        let err = bad.load_tokens().expect_err("not TOML");
        assert_eq!(err.key, "auth.tokens_file");
        assert!(err.message.contains("line 2"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let missing = AuthConfig {
            token_file: Some(PathBuf::from("/nonexistent/token")),
            ..AuthConfig::default()
        };
        assert!(
            missing
                .load_tokens()
                .expect_err("missing")
                .message
                .contains("/nonexistent/token")
        );
    }

    #[test]
    fn debug_never_shows_a_token() {
        let auth = AuthConfig {
            token: Some("hunter2".into()),
            tokens: [("radar3".to_owned(), "swordfish".to_owned())].into(),
            ..AuthConfig::default()
        };
        let tokens = auth.load_tokens().expect("inline");
        for text in [format!("{auth:?}"), format!("{tokens:?}")] {
            assert!(
                !text.contains("hunter2") && !text.contains("swordfish"),
                "{text}"
            );
            assert!(
                text.contains("radar3") && text.contains("<redacted>"),
                "{text}"
            );
        }
    }
}
