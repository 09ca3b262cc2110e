//! SDP text edits the engine needs and the m-section facts Prism reads.

use prism_signal::TrackKind;

/// One m-section of an offer, as far as Prism cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub mid: String,
    pub kind: Option<TrackKind>,
    /// The offerer sends on this section (sendrecv or sendonly, port not 0).
    pub sending: bool,
    /// The offerer receives on this section (sendrecv or recvonly, port not 0).
    pub receiving: bool,
}

/// Lists the m-sections of an SDP with their mid, kind and direction.
/// Sections without a mid are skipped (bundle requires one).
pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    // (section, port is 0, (sends, receives) from the direction attribute)
    type Cur = (MediaSection, bool, Option<(bool, bool)>);
    let mut out: Vec<MediaSection> = Vec::new();
    let mut cur: Option<Cur> = None;
    let finish = |cur: Option<Cur>, out: &mut Vec<MediaSection>| {
        if let Some((mut s, port0, dir)) = cur {
            // The default direction is sendrecv (RFC 3264).
            let (sends, receives) = dir.unwrap_or((true, true));
            let usable = !port0 && s.kind.is_some();
            s.sending = usable && sends;
            s.receiving = usable && receives;
            if !s.mid.is_empty() {
                out.push(s);
            }
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            finish(cur.take(), &mut out);
            let mut parts = rest.split_whitespace();
            let kind = match parts.next() {
                Some("audio") => Some(TrackKind::Audio),
                Some("video") => Some(TrackKind::Video),
                _ => None,
            };
            let port0 = parts.next() == Some("0");
            let section = MediaSection {
                mid: String::new(),
                kind,
                sending: false,
                receiving: false,
            };
            cur = Some((section, port0, None));
        } else if let Some((s, _, dir)) = cur.as_mut() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                s.mid = mid.trim().to_owned();
            } else {
                match line {
                    "a=sendrecv" => *dir = Some((true, true)),
                    "a=sendonly" => *dir = Some((true, false)),
                    "a=recvonly" => *dir = Some((false, true)),
                    "a=inactive" => *dir = Some((false, false)),
                    _ => {}
                }
            }
        }
    }
    finish(cur, &mut out);
    out
}

/// An `application/trickle-ice-sdpfrag` body (RFC 8840), as far as WHIP and
/// WHEP use it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// (the m-section's mid, the `candidate:` attribute value).
    pub candidates: Vec<(Option<String>, String)>,
    pub end_of_candidates: bool,
}

pub fn parse_fragment(body: &str) -> Fragment {
    let mut f = Fragment::default();
    let mut mid: Option<String> = None;
    for line in body.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            f.ufrag = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            f.pwd = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            mid = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("a=") {
            if v.starts_with("candidate:") {
                f.candidates.push((mid.clone(), v.to_owned()));
            } else if v == "end-of-candidates" {
                f.end_of_candidates = true;
            }
        }
    }
    f
}

/// The first `a=ice-ufrag` and `a=ice-pwd` of an SDP.
pub fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let find = |key: &str| {
        sdp.lines().find_map(|l| {
            l.trim_end_matches('\r')
                .strip_prefix(key)
                .map(|v| v.trim().to_owned())
        })
    };
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

/// The SDP with every `a=ice-ufrag`/`a=ice-pwd` replaced (an ICE restart of
/// a session whose offer is otherwise unchanged).
pub fn with_ice_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// Puts the server's candidates in every m-section, followed by
/// `a=end-of-candidates`, replacing whatever candidate lines the engine wrote,
/// and adds the session-level `a=msid-semantic: WMS *` the engine omits.
///
/// The engine writes candidates only into the first bundled section (plus a
/// component-2 copy) and never ends them; some clients (aiortc) read them from
/// another section and then never send a check. Without `msid-semantic`,
/// older (Plan B era) stacks ignore the `a=msid` lines that tell a receiver
/// which participant's stream a track belongs to.
pub fn with_candidates(sdp: &str, candidates: &[String]) -> String {
    let mut out = String::with_capacity(sdp.len() + 256);
    let mut in_media = false;
    let mut has_semantic = sdp.contains("a=msid-semantic:");
    let flush = |out: &mut String, in_media: bool| {
        if in_media {
            for c in candidates {
                out.push_str("a=");
                out.push_str(c.strip_prefix("a=").unwrap_or(c));
                out.push_str("\r\n");
            }
            out.push_str("a=end-of-candidates\r\n");
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("m=") {
            if !has_semantic {
                out.push_str("a=msid-semantic: WMS *\r\n");
                has_semantic = true;
            }
            flush(&mut out, in_media);
            in_media = true;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    flush(&mut out, in_media);
    out
}

/// The `candidate:` strings (component 1) an SDP carries.
pub fn candidates_in(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=candidate:1 1 udp 1 10.0.0.1 5 typ host\r\na=candidate:1 2 udp 1 10.0.0.1 5 typ host\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n\
m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:4\r\na=sendrecv\r\n";

    #[test]
    fn sections_and_directions() {
        let s = media_sections(OFFER);
        let sending: Vec<(&str, bool)> = s.iter().map(|m| (m.mid.as_str(), m.sending)).collect();
        assert_eq!(
            sending,
            vec![
                ("0", true),
                ("1", true),
                ("2", false),
                ("3", false),
                ("4", false)
            ]
        );
        assert_eq!(s[1].kind, Some(TrackKind::Video));
    }

    #[test]
    fn receiving_sections() {
        let r: Vec<bool> = media_sections(OFFER).iter().map(|m| m.receiving).collect();
        assert_eq!(r, vec![false, true, true, false, false]);
    }

    #[test]
    fn fragments_and_credentials() {
        let frag = "a=ice-ufrag:new1\r\na=ice-pwd:secretsecret\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\na=end-of-candidates\r\n";
        let f = parse_fragment(frag);
        assert_eq!(f.ufrag.as_deref(), Some("new1"));
        assert_eq!(f.pwd.as_deref(), Some("secretsecret"));
        assert_eq!(
            f.candidates,
            vec![(
                Some("0".into()),
                "candidate:1 1 udp 1 192.0.2.1 5000 typ host".into()
            )]
        );
        assert!(f.end_of_candidates);
        let sdp =
            "v=0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\nm=audio 9 X 0\r\na=ice-ufrag:old\r\n";
        let out = with_ice_credentials(sdp, "u2", "p2");
        assert_eq!(ice_credentials(&out), Some(("u2".into(), "p2".into())));
        assert!(!out.contains("old"));
        assert_eq!(parse_fragment("garbage\r\n"), Fragment::default());
    }

    #[test]
    fn candidates_go_in_every_section() {
        let c = vec!["candidate:9 1 udp 2130706431 127.0.0.1 50000 typ host".to_owned()];
        let out = with_candidates(OFFER, &c);
        assert_eq!(out.matches("a=candidate:").count(), 5);
        assert_eq!(out.matches("a=end-of-candidates").count(), 5);
        assert!(!out.contains("10.0.0.1"));
        assert_eq!(candidates_in(&out).len(), 5);
        // Each section's candidate block sits before the next m= line.
        let video = out.find("m=video").unwrap();
        assert!(out[..video].contains("a=end-of-candidates"));
        // One msid-semantic, at session level (before the first m= line).
        assert_eq!(out.matches("a=msid-semantic:").count(), 1);
        assert!(out.find("a=msid-semantic: WMS *").unwrap() < out.find("m=audio").unwrap());
        assert_eq!(
            with_candidates(&out, &c)
                .matches("a=msid-semantic:")
                .count(),
            1
        );
    }
}
