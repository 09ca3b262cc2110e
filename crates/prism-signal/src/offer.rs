//! The checks every SDP offer passes before the server does any engine work
//! with it: WHIP and WHEP POSTs and the WebSocket publish-leg `offer` share
//! [`check_offer`], so a malformed offer gets the same refusal whichever
//! door it came through (`docs/broadcasting.md`, `docs/signaling.md`).
//!
//! The checks are cheap line scans, bounded by the offer's size (checked
//! first). They catch what the engine would otherwise accept and fail on
//! later (a garbled fingerprint or setup role fails only in the DTLS
//! handshake, after ICE), or accept at a cost the shard that forwards the
//! room's media pays (hundreds of m-sections).

use crate::ErrorCode;

/// Largest SDP offer accepted, in bytes (64 KiB), like a signaling message.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Why an offer is refused. Each variant's message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// Larger than [`MAX_SDP_BYTES`].
    #[error("the offer is {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    /// No `m=` line at all.
    #[error("the offer has no m-section")]
    NoMedia,
    /// More `m=` lines than the configured `max_tracks_per_participant`.
    #[error("the offer has {count} m-sections; at most {max} tracks (m-sections) per participant are accepted (max_tracks_per_participant)")]
    TooManySections { count: usize, max: usize },
    /// An `m=` line that is not `<kind> <port> <profile> <formats>`.
    #[error("m-section {index}: `m={line}` is not `m=<media> <port> <proto> <fmt>...`")]
    BadMediaLine { index: usize, line: String },
    /// A transport profile Prism cannot serve (plain RTP, SDES, ...).
    #[error("m-section {index} ({kind}) uses the profile `{profile}`; {kind} needs {expected}")]
    BadProfile {
        index: usize,
        kind: String,
        profile: String,
        expected: &'static str,
    },
    /// `a=setup` other than actpass, active or passive.
    #[error("`a=setup:{value}`{at}: the DTLS role must be actpass, active or passive")]
    BadSetup { value: String, at: Location },
    /// An m-section with no `a=fingerprint` at its own or the session level.
    #[error(
        "m-section {index} has no a=fingerprint (none at session level either); DTLS needs one"
    )]
    NoFingerprint { index: usize },
    /// A hash function RFC 8122 does not name.
    #[error("`a=fingerprint:{value}`{at}: unknown hash function `{hash}` (expected sha-256, sha-384, sha-512, sha-224, sha-1, md5 or md2)")]
    UnknownHash {
        value: String,
        hash: String,
        at: Location,
    },
    /// The fingerprint is not the hash's length in colon-separated hex pairs.
    #[error("`a=fingerprint:{value}`{at}: expected `<hash-func> <{bytes} hex pairs separated by colons>`")]
    BadFingerprint {
        value: String,
        bytes: usize,
        at: Location,
    },
}

/// Where in the offer an attribute was: session level or an m-section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Session,
    Media(usize),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Session => write!(f, " at session level"),
            Location::Media(i) => write!(f, " in m-section {i}"),
        }
    }
}

impl OfferError {
    /// The signaling error code: `limit_exceeded` for a configured limit
    /// (size, m-sections), else `invalid_sdp`.
    pub fn code(&self) -> ErrorCode {
        match self {
            OfferError::TooLarge { .. } | OfferError::TooManySections { .. } => {
                ErrorCode::LimitExceeded
            }
            _ => ErrorCode::InvalidSdp,
        }
    }

    /// The HTTP status for WHIP/WHEP: 413 for size, else 400 (a whole offer
    /// with too many tracks is refused, RFC 9725 §4.2).
    pub fn http_status(&self) -> u16 {
        match self {
            OfferError::TooLarge { .. } => 413,
            _ => 400,
        }
    }

    /// The problem's title for HTTP.
    pub fn title(&self) -> &'static str {
        match self {
            OfferError::TooLarge { .. } => "Body too large",
            OfferError::TooManySections { .. } => "Too many tracks",
            _ => "Invalid SDP",
        }
    }

    /// The `prism_limit_hits_total{limit}` label this refusal counts under.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            OfferError::TooManySections { .. } => Some("tracks_per_participant"),
            _ => None,
        }
    }
}

/// Checks an SDP offer: size, m-section count (at most `max_sections`),
/// each m-section's transport profile, DTLS setup roles and fingerprints.
/// Says nothing about codecs or directions (the caller's business).
pub fn check_offer(sdp: &str, max_sections: usize) -> Result<(), OfferError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(OfferError::TooLarge {
            len: sdp.len(),
            max: MAX_SDP_BYTES,
        });
    }
    let lines = || sdp.lines().map(|l| l.trim_end_matches('\r'));
    let count = lines().filter(|l| l.starts_with("m=")).count();
    if count == 0 {
        return Err(OfferError::NoMedia);
    }
    if count > max_sections {
        return Err(OfferError::TooManySections {
            count,
            max: max_sections,
        });
    }
    let mut at = Location::Session;
    let mut session_fingerprint = false;
    // Whether the current m-section carried its own fingerprint.
    let mut media_fingerprint = false;
    for line in lines() {
        if let Some(rest) = line.strip_prefix("m=") {
            if let Location::Media(i) = at {
                if !media_fingerprint && !session_fingerprint {
                    return Err(OfferError::NoFingerprint { index: i });
                }
            }
            let index = match at {
                Location::Session => 0,
                Location::Media(i) => i + 1,
            };
            at = Location::Media(index);
            media_fingerprint = false;
            check_media_line(index, rest)?;
        } else if let Some(v) = line.strip_prefix("a=setup:") {
            let v = v.trim();
            if !matches!(v, "actpass" | "active" | "passive") {
                return Err(OfferError::BadSetup { value: clip(v), at });
            }
        } else if let Some(v) = line.strip_prefix("a=fingerprint:") {
            check_fingerprint(v.trim(), at)?;
            match at {
                Location::Session => session_fingerprint = true,
                Location::Media(_) => media_fingerprint = true,
            }
        }
    }
    if let Location::Media(i) = at {
        if !media_fingerprint && !session_fingerprint {
            return Err(OfferError::NoFingerprint { index: i });
        }
    }
    Ok(())
}

/// `m=<media> <port> <proto> <fmt>...`: the profile must be one Prism's
/// DTLS-SRTP (or DTLS-SCTP) transport serves.
fn check_media_line(index: usize, rest: &str) -> Result<(), OfferError> {
    let mut parts = rest.split_whitespace();
    let (Some(kind), Some(_port), Some(profile)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(OfferError::BadMediaLine {
            index,
            line: clip(rest),
        });
    };
    let expected = match kind {
        "audio" | "video" => "UDP/TLS/RTP/SAVPF or TCP/DTLS/RTP/SAVPF",
        "application" => "UDP/DTLS/SCTP or TCP/DTLS/SCTP",
        // Other media (text, message): the engine rejects the section in
        // its answer; its profile is not ours to judge.
        _ => return Ok(()),
    };
    let ok = match kind {
        "application" => matches!(profile, "UDP/DTLS/SCTP" | "TCP/DTLS/SCTP"),
        _ => matches!(profile, "UDP/TLS/RTP/SAVPF" | "TCP/DTLS/RTP/SAVPF"),
    };
    if ok {
        Ok(())
    } else {
        Err(OfferError::BadProfile {
            index,
            kind: kind.to_owned(),
            profile: clip(profile),
            expected,
        })
    }
}

/// `<hash-func> <hex pairs separated by colons>` (RFC 8122 §5), with as many
/// pairs as the hash function has bytes.
fn check_fingerprint(value: &str, at: Location) -> Result<(), OfferError> {
    let (hash, hex) = value.split_once(' ').unwrap_or((value, ""));
    let bytes = match hash.to_ascii_lowercase().as_str() {
        "sha-256" => 32,
        "sha-384" => 48,
        "sha-512" => 64,
        "sha-224" => 28,
        "sha-1" => 20,
        "md5" | "md2" => 16,
        _ => {
            return Err(OfferError::UnknownHash {
                value: clip(value),
                hash: clip(hash),
                at,
            })
        }
    };
    let pairs = hex.trim().split(':');
    let well_formed = pairs
        .clone()
        .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        && pairs.count() == bytes;
    if well_formed {
        Ok(())
    } else {
        Err(OfferError::BadFingerprint {
            value: clip(value),
            bytes,
            at,
        })
    }
}

/// At most 64 characters of client input in an error message.
fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n";

    fn offer(session: &str, media: &[&str]) -> String {
        let mut s = format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{session}");
        for (i, m) in media.iter().enumerate() {
            s.push_str(m);
            s.push_str(&format!("a=mid:{i}\r\n"));
        }
        s
    }

    const AUDIO: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:actpass\r\n";
    const VIDEO: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=setup:actpass\r\n";

    #[test]
    fn table() {
        let audio_fp = format!("{AUDIO}{FP}");
        let video_fp = format!("{VIDEO}{FP}");
        let many: Vec<&str> = (0..17).map(|_| audio_fp.as_str()).collect();
        let sha1 =
            "a=fingerprint:SHA-1 00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33\r\n";
        type Row<'a> = (&'a str, String, Result<(), fn(&OfferError) -> bool>);
        let rows: Vec<Row> = vec![
            ("session fingerprint", offer(FP, &[AUDIO, VIDEO]), Ok(())),
            (
                "media fingerprints",
                offer("", &[&audio_fp, &video_fp]),
                Ok(()),
            ),
            ("sha-1, upper case", offer(sha1, &[AUDIO]), Ok(())),
            (
                "datachannel",
                offer(
                    FP,
                    &["m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"],
                ),
                Ok(()),
            ),
            (
                "no setup line",
                offer(FP, &["m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"]),
                Ok(()),
            ),
            (
                "no m-line",
                offer(FP, &[]),
                Err(|e| *e == OfferError::NoMedia),
            ),
            (
                "17 m-lines",
                offer("", &many),
                Err(|e| matches!(e, OfferError::TooManySections { count: 17, max: 16 })),
            ),
            (
                "too large",
                format!("{}{}", offer(FP, &[AUDIO]), "a=x\r\n".repeat(20_000)),
                Err(|e| matches!(e, OfferError::TooLarge { .. })),
            ),
            (
                "RTP/AVP",
                offer(FP, &["m=audio 9 RTP/AVP 0\r\n"]),
                Err(|e| matches!(e, OfferError::BadProfile { index: 0, .. })),
            ),
            (
                "SCTP over RTP profile",
                offer(FP, &[AUDIO, "m=application 9 UDP/TLS/RTP/SAVPF 5000\r\n"]),
                Err(|e| matches!(e, OfferError::BadProfile { index: 1, .. })),
            ),
            (
                "short m-line",
                offer(FP, &["m=audio 9\r\n"]),
                Err(|e| matches!(e, OfferError::BadMediaLine { .. })),
            ),
            (
                "setup:bogus",
                offer(FP, &["m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=setup:bogus\r\n"]),
                Err(|e| {
                    matches!(
                        e,
                        OfferError::BadSetup {
                            at: Location::Media(0),
                            ..
                        }
                    )
                }),
            ),
            (
                "setup:holdconn",
                offer(&format!("a=setup:holdconn\r\n{FP}"), &[AUDIO]),
                Err(|e| {
                    matches!(
                        e,
                        OfferError::BadSetup {
                            at: Location::Session,
                            ..
                        }
                    )
                }),
            ),
            (
                "no fingerprint",
                offer("", &[&audio_fp, VIDEO]),
                Err(|e| *e == OfferError::NoFingerprint { index: 1 }),
            ),
            (
                "unknown hash",
                offer("a=fingerprint:sha-3 AB:CD\r\n", &[AUDIO]),
                Err(|e| matches!(e, OfferError::UnknownHash { .. })),
            ),
            (
                "garbled hex",
                offer("a=fingerprint:sha-256 ZZ:CD\r\n", &[AUDIO]),
                Err(|e| matches!(e, OfferError::BadFingerprint { bytes: 32, .. })),
            ),
            (
                "short fingerprint",
                offer("a=fingerprint:sha-256 AB:CD:EF\r\n", &[AUDIO]),
                Err(|e| matches!(e, OfferError::BadFingerprint { .. })),
            ),
            (
                "fingerprint without hex",
                offer("a=fingerprint:sha-256\r\n", &[AUDIO]),
                Err(|e| matches!(e, OfferError::BadFingerprint { .. })),
            ),
        ];
        for (name, sdp, want) in rows {
            let got = check_offer(&sdp, 16);
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(pred), Err(e)) if pred(e) => {}
                _ => panic!("{name}: got {got:?}"),
            }
        }
    }

    #[test]
    fn codes_and_statuses() {
        let many = OfferError::TooManySections { count: 17, max: 16 };
        assert_eq!(many.code(), ErrorCode::LimitExceeded);
        assert_eq!(many.http_status(), 400);
        assert_eq!(many.limit(), Some("tracks_per_participant"));
        let big = OfferError::TooLarge { len: 1, max: 0 };
        assert_eq!(big.http_status(), 413);
        assert_eq!(OfferError::NoMedia.code(), ErrorCode::InvalidSdp);
    }
}
