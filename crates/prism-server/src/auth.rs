//! Access tokens: JWTs signed with HS256 by a key the server knows.
//!
//! A token names one room, the holder's identity (`sub`), an optional display
//! name, what it may do (`grants`), and when it is valid (`nbf`, `exp`). With
//! no keys configured Prism runs in dev mode: tokens are optional and
//! ignored, and the server only binds loopback addresses (see
//! `Config::validate`). Several keys may be configured (rotation): a token
//! signed by any of them is accepted; new tokens are signed with the first.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Shortest accepted signing secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// What a token allows. A token without `grants` allows nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default)]
    pub publish_data: bool,
    #[serde(default)]
    pub admin: bool,
}

impl Grants {
    /// Dev mode: everything.
    pub fn all() -> Self {
        Grants {
            publish: true,
            subscribe: true,
            publish_data: true,
            admin: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The participant's identity.
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The one room this token is for.
    pub room: String,
    #[serde(default)]
    pub grants: Grants,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub iat: u64,
}

/// Why a token was refused. `Missing`/`Invalid`/`Expired`/`NotYetValid`
/// are `unauthorized` (401); `WrongRoom`/`MissingGrant` are `forbidden` (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token where one is required.
    #[error("an access token is required")]
    Missing,
    /// Malformed, or not signed by a key this server knows.
    #[error("invalid access token: {0}")]
    Invalid(String),
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet (nbf)")]
    NotYetValid,
    /// A valid token for another room.
    #[error("the access token is for room `{token}`, not `{wanted}`")]
    WrongRoom { token: String, wanted: String },
    #[error("the access token does not grant {0}")]
    MissingGrant(&'static str),
}

impl AuthError {
    /// True for `forbidden` (authenticated, not allowed); false for `unauthorized`.
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            AuthError::WrongRoom { .. } | AuthError::MissingGrant(_)
        )
    }

    /// Every [`AuthError::reason`] label, for exporting them all from zero.
    pub const REASONS: &'static [&'static str] = &[
        "missing",
        "invalid",
        "expired",
        "not_yet_valid",
        "wrong_room",
        "missing_grant",
    ];

    /// A short label for the `prism_auth_failures_total` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid(_) => "invalid",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongRoom { .. } => "wrong_room",
            AuthError::MissingGrant(_) => "missing_grant",
        }
    }

    pub fn to_signal(&self) -> prism_signal::SignalError {
        let code = if self.is_forbidden() {
            prism_signal::ErrorCode::Forbidden
        } else {
            prism_signal::ErrorCode::Unauthorized
        };
        prism_signal::SignalError::new(code, self.to_string())
    }
}

#[derive(Clone)]
pub struct Keys {
    keys: Vec<(EncodingKey, DecodingKey)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} configured)", self.keys.len())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Keys {
    /// Builds the key set; each secret must be at least 32 bytes.
    pub fn new(secrets: &[String]) -> Result<Keys, String> {
        let mut keys = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            if s.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "key #{} is {} bytes; signing secrets must be at least {MIN_SECRET_BYTES} bytes \
                     (generate one with: openssl rand -base64 48)",
                    i + 1,
                    s.len()
                ));
            }
            keys.push((
                EncodingKey::from_secret(s.as_bytes()),
                DecodingKey::from_secret(s.as_bytes()),
            ));
        }
        Ok(Keys { keys })
    }

    /// No keys: dev mode (tokens optional and not checked).
    pub fn dev_mode(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a token for `room`: signature (any configured key), `exp`,
    /// `nbf`, and the room.
    pub fn verify(&self, token: Option<&str>, room: &str) -> Result<Claims, AuthError> {
        let token = token
            .filter(|t| !t.trim().is_empty())
            .ok_or(AuthError::Missing)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_nbf = true;
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        let mut last = AuthError::Invalid("no key configured".into());
        for (_, key) in &self.keys {
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => {
                    let c = data.claims;
                    if c.room != room {
                        return Err(AuthError::WrongRoom {
                            token: c.room,
                            wanted: room.to_owned(),
                        });
                    }
                    return Ok(c);
                }
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                        ErrorKind::ImmatureSignature => return Err(AuthError::NotYetValid),
                        ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                        other => AuthError::Invalid(format!("{other:?}")),
                    };
                }
            }
        }
        Err(last)
    }

    /// Signs a token with the first key.
    pub fn mint(
        &self,
        room: &str,
        identity: &str,
        name: Option<&str>,
        grants: Grants,
        ttl: Duration,
        not_before: Option<u64>,
    ) -> Result<String, String> {
        let now = now_secs();
        self.sign(&Claims {
            sub: identity.to_owned(),
            name: name.map(str::to_owned),
            room: room.to_owned(),
            grants,
            exp: now + ttl.as_secs(),
            nbf: not_before,
            iat: now,
        })
    }

    /// Signs any claims with the first key (HS256).
    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        let (key, _) = self
            .keys
            .first()
            .ok_or("no key configured: set keys in the config file or PRISM_KEYS")?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key).map_err(|e| e.to_string())
    }

    /// Seconds since the Unix epoch (the clock `exp`/`nbf` are checked on).
    pub fn now() -> u64 {
        now_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn keys() -> Keys {
        Keys::new(&[SECRET.to_owned()]).unwrap()
    }

    #[test]
    fn every_reason_is_exported() {
        for e in [
            AuthError::Missing,
            AuthError::Invalid(String::new()),
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongRoom {
                token: String::new(),
                wanted: String::new(),
            },
            AuthError::MissingGrant("publish"),
        ] {
            assert!(AuthError::REASONS.contains(&e.reason()), "{e:?}");
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        let e = Keys::new(&["short".into()]).unwrap_err();
        assert!(e.contains("at least 32 bytes"), "{e}");
        assert!(Keys::new(&[]).unwrap().dev_mode());
    }

    #[test]
    fn round_trip_and_each_refusal() {
        let k = keys();
        let g = Grants {
            subscribe: true,
            ..Default::default()
        };
        let t = k
            .mint("a", "ana", Some("Ana"), g, Duration::from_secs(60), None)
            .unwrap();
        let c = k.verify(Some(&t), "a").unwrap();
        assert_eq!(
            (c.sub.as_str(), c.name.as_deref(), c.grants),
            ("ana", Some("Ana"), g)
        );
        assert_eq!(k.verify(None, "a"), Err(AuthError::Missing));
        assert!(matches!(
            k.verify(Some(&t), "b"),
            Err(AuthError::WrongRoom { .. })
        ));
        assert!(matches!(
            k.verify(Some("garbage"), "a"),
            Err(AuthError::Invalid(_))
        ));
        let other = Keys::new(&["another-secret-another-secret-another".into()]).unwrap();
        let forged = other
            .mint("a", "ana", None, g, Duration::from_secs(60), None)
            .unwrap();
        assert_eq!(
            k.verify(Some(&forged), "a"),
            Err(AuthError::Invalid("bad signature".into()))
        );
        // Rotation: a server with both keys accepts both.
        let both = Keys::new(&[
            SECRET.into(),
            "another-secret-another-secret-another".into(),
        ])
        .unwrap();
        assert!(both.verify(Some(&forged), "a").is_ok());
        // Expired and not-yet-valid.
        let expired = {
            let claims = Claims {
                sub: "x".into(),
                name: None,
                room: "a".into(),
                grants: g,
                exp: now_secs() - 10,
                nbf: None,
                iat: 0,
            };
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        };
        assert_eq!(k.verify(Some(&expired), "a"), Err(AuthError::Expired));
        let future = k
            .mint(
                "a",
                "x",
                None,
                g,
                Duration::from_secs(600),
                Some(now_secs() + 300),
            )
            .unwrap();
        assert_eq!(k.verify(Some(&future), "a"), Err(AuthError::NotYetValid));
        assert!(AuthError::MissingGrant("publish").is_forbidden());
        assert!(!AuthError::Expired.is_forbidden());
    }
}
