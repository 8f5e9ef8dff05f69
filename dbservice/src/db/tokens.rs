//! API tokens: generation from the operating system's CSPRNG, validation, revocation, listing.

use super::{Database, DbResult};
use base64::Engine as _;
use rand::TryRngCore as _;
use rusqlite::params;

/// A token as [`Database::list_api_tokens`] shows it: never the whole token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenInfo {
    /// The first 8 characters followed by `...`.
    pub token_preview: String,
    pub description: Option<String>,
    pub created_at: i64,
    pub last_used: Option<i64>,
    pub revoked: bool,
}

/// 32 random bytes from the OS, URL-safe base64 without padding (43 characters), like Python's
/// `secrets.token_urlsafe(32)`.
fn new_token() -> DbResult<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| super::DbError::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Database {
    /// Creates and stores a new token. Returns it (the only time it is shown in full).
    pub fn generate_api_token(&self, description: &str) -> DbResult<String> {
        let token = new_token()?;
        self.conn()?
            .prepare_cached(
                "INSERT INTO api_tokens (token, description, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![token, description, self.now()])?;
        Ok(token)
    }

    /// True if the token exists and is not revoked; records `last_used`.
    pub fn validate_api_token(&self, token: &str) -> DbResult<bool> {
        let n = self
            .conn()?
            .prepare_cached(
                "UPDATE api_tokens SET last_used = ?2 WHERE token = ?1 AND revoked = 0",
            )?
            .execute(params![token, self.now()])?;
        Ok(n > 0)
    }

    /// Revokes by exact match, or by prefix when `token` has at least 8 characters (as the
    /// seed's `LIKE token%`). Returns how many tokens matched. Fix: the prefix is compared
    /// literally and case-sensitively; the seed's `LIKE` treated `%` and `_` in the input as
    /// wildcards and ignored ASCII case, so it could revoke tokens it did not name.
    pub fn revoke_api_token(&self, token: &str) -> DbResult<usize> {
        let conn = self.conn()?;
        let n = if token.chars().count() >= 8 {
            conn.prepare_cached(
                "UPDATE api_tokens SET revoked = 1 WHERE substr(token, 1, length(?1)) = ?1",
            )?
            .execute([token])?
        } else {
            conn.prepare_cached("UPDATE api_tokens SET revoked = 1 WHERE token = ?1")?
                .execute([token])?
        };
        Ok(n)
    }

    /// Tokens, newest first, revoked ones only if asked for.
    pub fn list_api_tokens(&self, include_revoked: bool) -> DbResult<Vec<ApiTokenInfo>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT token, description, created_at, last_used, COALESCE(revoked, 0) FROM api_tokens \
             WHERE ?1 OR COALESCE(revoked, 0) = 0 ORDER BY created_at DESC, token ASC",
        )?;
        let rows = stmt.query_map([include_revoked], |r| {
            let token: String = r.get(0)?;
            Ok(ApiTokenInfo {
                token_preview: format!("{}...", token.chars().take(8).collect::<String>()),
                description: r.get(1)?,
                created_at: r.get(2)?,
                last_used: r.get(3)?,
                revoked: r.get::<_, i64>(4)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
