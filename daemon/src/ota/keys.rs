//! ed25519 key files, key ids and key generation.
//!
//! Both kinds of file are one line of hex: a private key file holds the
//! 32-byte seed (64 hex digits) and is created with mode 0600 (never
//! overwritten); a public key file holds the 32-byte public key. A private
//! key file readable by group or others is refused. Private key material is
//! never logged or printed: [`KeyError`] carries paths and reasons only, and
//! `ed25519_dalek::SigningKey`'s `Debug` shows the public half only.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

/// A key file could not be created, read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exists; keys are never overwritten.
    #[error("{} already exists; keys are never overwritten (move it away or choose another path)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A private key file readable by group or others.
    #[error(
        "{}: private key file is accessible by group or others (mode {mode:04o}); \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not a key.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the content itself).
        reason: String,
    },
    /// The system random number generator failed.
    #[error("cannot get random bytes for a new key: {0}")]
    Random(String),
}

/// Parse a 64-hex-digit public key.
pub fn parse_public_hex(hex_key: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("not hex: {e}"))?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("expected 32 bytes (64 hex digits), got {}", bytes.len()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&arr)
        .map_err(|e| format!("not a valid ed25519 key: {e}"))
}

/// A key's id: the first 8 bytes of sha256(public key), as 16 hex digits.
pub fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8])
}

/// A new signing key from the operating system's random number generator.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    std::hint::black_box(&seed);
    Ok(key)
}

/// Create `path` (mode 0600, refusing an existing file) holding `key`'s
/// seed as hex.
pub fn write_private(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let mut text = hex::encode(key.as_bytes());
    text.push('\n');
    let result = create_new(path, 0o600, text.as_bytes());
    wipe(text.into_bytes());
    result
}

/// Read a private key file written by [`write_private`]. Refuses a file
/// that group or others may read or write (`chmod 600` it).
pub fn read_private(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    if !meta.is_file() {
        return Err(KeyError::Format {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let seed = decode_key_hex(text.trim());
    wipe(text.into_bytes());
    let mut seed = seed.ok_or_else(|| KeyError::Format {
        path: path.to_path_buf(),
        reason: "not a private key: expected one line of 64 hex digits".into(),
    })?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    std::hint::black_box(&seed);
    Ok(key)
}

/// Create `path` (mode 0644, refusing an existing file) holding `key` as hex.
pub fn write_public(path: &Path, key: &VerifyingKey) -> Result<(), KeyError> {
    let text = format!("{}\n", hex::encode(key.as_bytes()));
    create_new(path, 0o644, text.as_bytes())
}

/// Read a public key file (one line, 64 hex digits).
pub fn read_public(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_public_hex(&text).map_err(|reason| KeyError::Format {
        path: path.to_path_buf(),
        reason: format!("not a public key: {reason}"),
    })
}

/// Best effort: overwrite a buffer that held key material before freeing it.
fn wipe(mut bytes: Vec<u8>) {
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

fn decode_key_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn create_new(path: &Path, mode: u32, content: &[u8]) -> Result<(), KeyError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = opts.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            KeyError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ota_keys_round_trip_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate().unwrap();
        let other = generate().unwrap();
        assert_ne!(key.to_bytes(), other.to_bytes());
        let private = dir.path().join("k");
        let public = dir.path().join("k.pub");
        write_private(&private, &key).unwrap();
        write_public(&public, &key.verifying_key()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(read_private(&private).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(read_public(&public).unwrap(), key.verifying_key());
        assert!(matches!(
            write_private(&private, &other),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(read_private(&private).unwrap().to_bytes(), key.to_bytes());
        // Debug output of keys and errors never shows the seed.
        let seed_hex = hex::encode(key.to_bytes());
        assert!(!format!("{key:?}").contains(&seed_hex));
        assert_eq!(key_id(&key.verifying_key()).len(), 16);
    }

    #[cfg(unix)]
    #[test]
    fn ota_keys_refuse_readable_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("k");
        write_private(&private, &generate().unwrap()).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private(&private).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("chmod 600 {}", private.display())),
            "{text}"
        );
        assert!(text.contains("0644"), "{text}");
    }

    #[test]
    fn ota_keys_refuse_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad");
        std::fs::write(&f, "zz\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(read_private(&f), Err(KeyError::Format { .. })));
        assert!(matches!(read_public(&f), Err(KeyError::Format { .. })));
        assert!(matches!(
            read_public(&dir.path().join("missing")),
            Err(KeyError::Io { .. })
        ));
    }
}
