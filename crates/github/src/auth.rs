//! Authentication: a token (a PAT, or an installation token minted elsewhere), or a GitHub App.
//!
//! An App signs a JWT with its private key (RS256; `iat` 60 s in the past against clock drift, `exp`
//! at most 10 minutes ahead: GitHub docs, "Generating a JSON Web Token (JWT) for a GitHub App") and
//! trades it for an installation token (`POST /app/installations/{id}/access_tokens`), valid one
//! hour. The signature uses aws-lc-rs, the crypto library rustls already links for the AWS SDK.

use crate::error::GitHubError;
use crate::secret::Secret;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use std::fmt;

/// How the client authenticates.
#[derive(Debug)]
pub enum Auth {
    /// A bearer token: a fine-grained or classic PAT, or an installation token.
    Token(Secret),
    /// A GitHub App installation.
    App {
        /// The App's id or client id (the JWT's `iss`).
        app_id: String,
        /// The installation to act as.
        installation_id: u64,
        /// The App's private key.
        key: AppKey,
    },
}

impl Auth {
    /// Credentials stored as one value (for example a Secrets Manager secret): a JSON object
    /// `{"token": "..."}` or `{"app_id": "...", "installation_id": 123, "private_key": "-----BEGIN ..."}`,
    /// or a bare token. Errors never quote the value.
    pub fn from_stored(value: &Secret) -> Result<Auth, GitHubError> {
        let raw = value.expose().trim();
        if !raw.starts_with('{') {
            if raw.is_empty() || raw.chars().any(char::is_whitespace) {
                return Err(GitHubError::Config(
                    "the stored GitHub credentials are empty or not one token".into(),
                ));
            }
            return Ok(Auth::Token(Secret::new(raw)));
        }
        let v: serde_json::Value = serde_json::from_str(raw)
            .map_err(|_| GitHubError::Config("the stored GitHub credentials are not valid JSON".into()))?;
        let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str).filter(|s| !s.is_empty());
        if let Some(token) = text("token") {
            return Ok(Auth::Token(Secret::new(token)));
        }
        let app_id = match v.get("app_id") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => {
                return Err(GitHubError::Config(
                    "the stored GitHub credentials have neither `token` nor `app_id`".into(),
                ))
            }
        };
        let installation_id = v
            .get("installation_id")
            .and_then(|i| i.as_u64().or_else(|| i.as_str().and_then(|s| s.parse().ok())))
            .ok_or_else(|| GitHubError::Config("the stored GitHub App credentials lack `installation_id`".into()))?;
        let pem = text("private_key")
            .ok_or_else(|| GitHubError::Config("the stored GitHub App credentials lack `private_key`".into()))?;
        Ok(Auth::App {
            app_id,
            installation_id,
            key: AppKey::from_pem(pem)?,
        })
    }
}

/// A GitHub App private key (PEM, PKCS#1 `RSA PRIVATE KEY` as GitHub issues them, or PKCS#8).
pub struct AppKey {
    key: KeyPair,
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppKey(<redacted>)")
    }
}

impl AppKey {
    /// Parse a PEM private key. The error never quotes the key.
    pub fn from_pem(pem: &str) -> Result<AppKey, GitHubError> {
        let (label, der) = pem_decode(pem).ok_or_else(|| {
            GitHubError::Config("the GitHub App private key is not a PEM block (-----BEGIN ... KEY-----)".into())
        })?;
        let key = match label.as_str() {
            "RSA PRIVATE KEY" => KeyPair::from_der(&der),
            "PRIVATE KEY" => KeyPair::from_pkcs8(&der),
            other => {
                return Err(GitHubError::Config(format!(
                    "the GitHub App private key is a `{other}` PEM block; expected RSA PRIVATE KEY or PRIVATE KEY"
                )))
            }
        }
        .map_err(|e| GitHubError::Config(format!("the GitHub App private key was rejected: {e}")))?;
        Ok(AppKey { key })
    }

    /// An RS256 JWT for App `app_id`, issued at `now` (epoch seconds).
    pub fn jwt(&self, app_id: &str, now: i64) -> Result<Secret, GitHubError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        // iat 60 s back against clock drift; exp 9 minutes ahead, inside GitHub's 10-minute cap.
        let claims = serde_json::json!({ "iat": now - 60, "exp": now + 540, "iss": app_id });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| GitHubError::Config("signing the GitHub App JWT failed".into()))?;
        Ok(Secret::new(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))))
    }

    /// The public key, DER `RSAPublicKey` (tests verify signatures with it).
    pub fn public_key_der(&self) -> Vec<u8> {
        use aws_lc_rs::signature::KeyPair as _;
        self.key.public_key().as_ref().to_vec()
    }
}

/// The label and the decoded body of the first PEM block in `text`.
fn pem_decode(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let after = &text[start + "-----BEGIN ".len()..];
    let label_end = after.find("-----")?;
    let label = after[..label_end].to_string();
    let body_start = &after[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body_start.find(&end_marker)?;
    let b64: String = body_start[..body_end].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).ok().map(|der| (label, der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    #[test]
    fn signs_a_jwt_github_can_verify() -> Result<(), Box<dyn std::error::Error>> {
        let generated = KeyPair::generate(KeySize::Rsa2048)?;
        let pkcs8 = generated.as_der()?;
        let key = AppKey::from_pem(&pem("PRIVATE KEY", pkcs8.as_ref()))?;
        let jwt = key.jwt("12345", 1_700_000_000)?;
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0])?)?;
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
        assert_eq!(claims["iss"], "12345");
        assert_eq!(claims["iat"], 1_700_000_000 - 60);
        assert_eq!(claims["exp"], 1_700_000_000 + 540);
        let sig = URL_SAFE_NO_PAD.decode(parts[2])?;
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key_der());
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .map_err(|_| "signature does not verify")?;
        assert_eq!(format!("{key:?}"), "AppKey(<redacted>)");
        Ok(())
    }

    #[test]
    fn stored_credentials() -> Result<(), Box<dyn std::error::Error>> {
        assert!(matches!(Auth::from_stored(&Secret::new("ghp_abc123"))?, Auth::Token(t) if t.expose() == "ghp_abc123"));
        assert!(matches!(
            Auth::from_stored(&Secret::new(r#"{"token":"ghp_x"}"#))?,
            Auth::Token(_)
        ));
        let generated = KeyPair::generate(KeySize::Rsa2048)?;
        let pem_text = pem("PRIVATE KEY", generated.as_der()?.as_ref());
        let app = serde_json::json!({"app_id": 12345, "installation_id": "42", "private_key": pem_text});
        match Auth::from_stored(&Secret::new(app.to_string()))? {
            Auth::App {
                app_id,
                installation_id,
                ..
            } => assert_eq!((app_id.as_str(), installation_id), ("12345", 42)),
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            "two words",
            "{not json",
            r#"{"app_id": "1"}"#,
            r#"{"app_id": "1", "installation_id": 2}"#,
            r#"{"x": 1}"#,
        ] {
            let err = Auth::from_stored(&Secret::new(bad))
                .map(|_| ())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!err.is_empty() && !err.contains("two words"), "{bad}: {err}");
        }
        Ok(())
    }

    #[test]
    fn rejects_what_is_not_an_rsa_key_without_quoting_it() {
        for text in [
            "not a key",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END RSA PRIVATE KEY-----",
        ] {
            let err = AppKey::from_pem(text)
                .map(|_| ())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!err.is_empty(), "{text}");
            assert!(!err.contains("c2VjcmV0"), "{err}");
        }
    }
}
