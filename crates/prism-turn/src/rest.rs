//! TURN REST credentials ("A REST API for access to TURN services",
//! draft-uberti-behave-turn-rest; coturn's `use-auth-secret` /
//! `static-auth-secret`): `username = <expiry unix time>:<identity>`,
//! `password = base64(HMAC-SHA1(secret, username))`. Prism issues them to
//! its clients and its TURN server checks them; a coturn configured with
//! the same secret accepts them too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// The shared secret of the TURN REST scheme. Never empty.
#[derive(Clone)]
pub struct RestSecret(Vec<u8>);

impl std::fmt::Debug for RestSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RestSecret(<{} bytes, redacted>)", self.0.len())
    }
}

/// A username and password a client gives its TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCredentials {
    /// `<expiry unix seconds>:<identity>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// When they stop being accepted.
    pub expires: SystemTime,
}

/// Why a TURN username was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// `expiry:identity` whose expiry has passed.
    #[error("credentials expired")]
    Expired,
    /// Not `expiry:identity` with a decimal expiry.
    #[error("username is not <expiry>:<identity>")]
    Malformed,
    /// The MESSAGE-INTEGRITY did not match the password the secret gives:
    /// forged, or issued with another secret.
    #[error("message integrity does not match")]
    BadIntegrity,
}

impl AuthFailure {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Expired => "expired",
            AuthFailure::Malformed => "malformed",
            AuthFailure::BadIntegrity => "bad_integrity",
        }
    }
}

impl RestSecret {
    /// `None` for an empty secret.
    pub fn new(secret: impl Into<Vec<u8>>) -> Option<RestSecret> {
        let s = secret.into();
        (!s.is_empty()).then_some(RestSecret(s))
    }

    /// The password of a username: base64(HMAC-SHA1(secret, username)).
    pub fn password(&self, username: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    /// Fresh credentials for `identity`, valid for `ttl` from `now`. A ':'
    /// in the identity is kept: the expiry is what precedes the first ':'.
    pub fn issue(&self, identity: &str, ttl: Duration, now: SystemTime) -> RestCredentials {
        let expires = now + ttl;
        let secs = expires
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let username = format!("{secs}:{identity}");
        let password = self.password(&username);
        RestCredentials {
            username,
            password,
            expires: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    /// The long-term key (RFC 8489 §9.2.2: MD5(username ":" realm ":"
    /// password)) for a username that has not expired at `now`, and the
    /// identity it names. Whether the request's MESSAGE-INTEGRITY matches
    /// the key is the caller's check ([`AuthFailure::BadIntegrity`]).
    pub fn key<'a>(
        &self,
        username: &'a str,
        realm: &str,
        now: SystemTime,
    ) -> Result<([u8; 16], &'a str), AuthFailure> {
        let (expiry, identity) = username.split_once(':').ok_or(AuthFailure::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| AuthFailure::Malformed)?;
        let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if expiry <= now_secs {
            return Err(AuthFailure::Expired);
        }
        let password = self.password(username);
        let mut md5 = Md5::new();
        md5.update(format!("{username}:{realm}:{password}").as_bytes());
        Ok((md5.finalize().into(), identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn password_is_coturns() {
        // coturn's turnutils / the REST draft's example shape: the same
        // HMAC-SHA1 over the username, base64.
        let s = RestSecret::new("north").unwrap();
        let c = s.issue("alice", Duration::from_secs(3600), at(NOW));
        assert_eq!(c.username, format!("{}:alice", NOW + 3600));
        assert_eq!(c.password, s.password(&c.username));
        // Fixed vector (computed with `openssl dgst -sha1 -hmac north -binary | base64`).
        assert_eq!(
            s.password("1800003600:alice"),
            "qe6uQh2FdtYywRuncfIrYF8O4Rk="
        );
    }

    #[test]
    fn key_checks_expiry_and_shape() {
        let s = RestSecret::new("north").unwrap();
        let c = s.issue("bob:phone", Duration::from_secs(60), at(NOW));
        let (key, identity) = s.key(&c.username, "prism", at(NOW + 59)).unwrap();
        assert_eq!(identity, "bob:phone");
        let mut md5 = Md5::new();
        md5.update(format!("{}:prism:{}", c.username, c.password).as_bytes());
        assert_eq!(key, <[u8; 16]>::from(md5.finalize()));
        assert_eq!(
            s.key(&c.username, "prism", at(NOW + 60)),
            Err(AuthFailure::Expired)
        );
        assert_eq!(s.key("bob", "prism", at(NOW)), Err(AuthFailure::Malformed));
        assert_eq!(
            s.key("soon:bob", "prism", at(NOW)),
            Err(AuthFailure::Malformed)
        );
        assert!(RestSecret::new("").is_none());
    }
}
