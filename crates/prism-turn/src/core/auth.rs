//! Long-term credentials on TURN REST usernames (RFC 8489 §9.2): stateless
//! nonces that expire, and the check of a request's USERNAME, REALM, NONCE
//! and MESSAGE-INTEGRITY.

use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::message::Message;
use stun::textattrs::TextAttribute;

use super::wire::{check_integrity, IntegrityError};
use crate::rest::{AuthFailure, RestSecret};

/// Nonces: `<issued ms since epoch, 16 hex><HMAC-SHA1(key, issued), 40 hex>`.
/// Nothing is stored per nonce; the MAC proves we issued it and the time
/// in it says when.
pub(crate) struct Nonces {
    key: [u8; 32],
    epoch: Instant,
    lifetime: Duration,
}

impl Nonces {
    /// Nonces valid for `lifetime`, signed with `key`, timed from `epoch`.
    pub fn new(key: [u8; 32], epoch: Instant, lifetime: Duration) -> Nonces {
        Nonces {
            key,
            epoch,
            lifetime,
        }
    }

    fn mac(&self, issued_ms: u64) -> String {
        let mut mac = match Hmac::<Sha1>::new_from_slice(&self.key) {
            Ok(m) => m,
            // HMAC accepts keys of any length.
            Err(_) => return String::new(),
        };
        mac.update(&issued_ms.to_be_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// A fresh nonce.
    pub fn issue(&self, now: Instant) -> String {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        format!("{ms:016x}{}", self.mac(ms))
    }

    /// Whether `nonce` is ours and younger than the lifetime.
    pub fn is_fresh(&self, nonce: &str, now: Instant) -> bool {
        if nonce.len() != 56 || !nonce.is_ascii() {
            return false;
        }
        let (ms, mac) = nonce.split_at(16);
        let Ok(ms) = u64::from_str_radix(ms, 16) else {
            return false;
        };
        // Not constant-time: a nonce is not a secret, and a forged one
        // gains nothing but a 438.
        if self.mac(ms) != mac {
            return false;
        }
        let issued = self.epoch + Duration::from_millis(ms);
        now.saturating_duration_since(issued) < self.lifetime && issued <= now
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A request whose credentials checked out.
#[derive(Debug, Clone)]
pub(crate) struct Authed {
    /// The long-term key: responses are signed with it.
    pub key: [u8; 16],
    /// The full REST username.
    pub username: String,
    /// The identity part of the username (after the first ':').
    pub identity: String,
}

/// Why a request was not authenticated, and so which response it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthReject {
    /// No MESSAGE-INTEGRITY: 401 with REALM and NONCE.
    Challenge,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE: 400.
    Incomplete,
    /// The nonce is not ours or too old: 438 with a new one.
    StaleNonce,
    /// The credentials are refused: 401 with REALM and NONCE.
    Refused(AuthFailure),
}

/// Checks the long-term credentials of `m`.
pub(crate) fn authenticate(
    m: &Message,
    secret: &RestSecret,
    realm: &str,
    nonces: &Nonces,
    now: Instant,
    wall: SystemTime,
) -> Result<Authed, AuthReject> {
    if !m.contains(ATTR_MESSAGE_INTEGRITY) {
        return Err(AuthReject::Challenge);
    }
    let text = |attr| TextAttribute::get_from_as(m, attr).map(|t| t.text);
    let (Ok(username), Ok(_realm), Ok(nonce)) =
        (text(ATTR_USERNAME), text(ATTR_REALM), text(ATTR_NONCE))
    else {
        return Err(AuthReject::Incomplete);
    };
    if !nonces.is_fresh(&nonce, now) {
        return Err(AuthReject::StaleNonce);
    }
    // The key uses our realm: a request naming another realm simply fails
    // the integrity check.
    let (key, identity) = secret
        .key(&username, realm, wall)
        .map_err(AuthReject::Refused)?;
    let identity = identity.to_owned();
    match check_integrity(&m.raw, &key) {
        Ok(()) => Ok(Authed {
            key,
            username,
            identity,
        }),
        Err(IntegrityError::Mismatch) => Err(AuthReject::Refused(AuthFailure::BadIntegrity)),
        Err(IntegrityError::Missing | IntegrityError::Malformed) => Err(AuthReject::Incomplete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_lifetime_table() {
        let t0 = Instant::now();
        let n = Nonces::new([9; 32], t0, Duration::from_secs(3600));
        let issued = n.issue(t0 + Duration::from_secs(10));
        let other = Nonces::new([8; 32], t0, Duration::from_secs(3600));
        let rows = [
            (10, true),
            (11, true),
            (3609, true),
            (3610, false), // exactly one lifetime later
            (9, false),    // before it was issued
        ];
        for (at, fresh) in rows {
            assert_eq!(
                n.is_fresh(&issued, t0 + Duration::from_secs(at)),
                fresh,
                "at {at}"
            );
        }
        assert!(!other.is_fresh(&issued, t0 + Duration::from_secs(10)));
        let mut forged = issued.clone();
        forged.replace_range(0..16, &format!("{:016x}", 999_999_999u64));
        assert!(!n.is_fresh(&forged, t0 + Duration::from_secs(10)));
        assert!(!n.is_fresh("", t0));
        assert!(!n.is_fresh(&"é".repeat(28), t0));
    }
}
