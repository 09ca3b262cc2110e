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

prism_core::labelled_enum! {
    /// How an offer's m-section asked to send simulcast: the `form` label of
    /// `prism_simulcast_narrowed_total`.
    pub enum SimulcastForm {
        /// RFC 8853: `a=rid:<id> send` lines and `a=simulcast:send` (Chromium
        /// and Firefox `sendEncodings`).
        Rid => "rid",
        /// `a=ssrc-group:SIM` (munged Chromium, Plan B era clients).
        SsrcGroup => "ssrc_group",
    }
}

/// One m-section [`narrow_simulcast`] cut down to one encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowed {
    pub mid: String,
    pub form: SimulcastForm,
    /// The rid, or the SSRC (decimal), that is kept.
    pub kept: String,
    /// The rids, or the SSRCs, that were dropped (an SSRC group's RTX SSRCs
    /// included).
    pub dropped: Vec<String>,
}

impl std::fmt::Display for Narrowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mid {} ({}): kept {}, dropped {}",
            self.mid,
            self.form.as_str(),
            self.kept,
            self.dropped.join(",")
        )
    }
}

/// A publish offer as the engine is given it (see [`narrow_simulcast`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarrowedOffer {
    pub sdp: String,
    /// The sections whose simulcast was cut to one encoding; empty when the
    /// offer asked for none (the SDP may still have changed: RTX removed from
    /// a one-rid section).
    pub sections: Vec<Narrowed>,
}

/// Rid ladders clients commonly use, lowest quality first: when every offered
/// rid is on one of them, its highest is the best layer.
const RID_LADDERS: &[&[&str]] = &[
    &["q", "h", "f"],
    &["l", "m", "h"],
    &["low", "mid", "high"],
    &["low", "medium", "high"],
];

/// Prepares a publish offer's simulcast for the engine (rtc 0.21.1).
///
/// With `keep_rid_layers` (the `simulcast` option, default on) rid
/// simulcast stays: the server forwards each subscriber the layer that fits
/// it (`docs/simulcast.md`); only RTX goes from rid sections (below). Without
/// it, every simulcast m-section is cut down to one encoding, so that the
/// answer accepts one layer and the publisher sends only that.
///
/// - **rid simulcast** (`a=simulcast:send` with more than one rid): the
///   other rids' `a=rid` lines go and the send list names the kept rid
///   alone. The engine then answers `a=rid:<kept> recv` and
///   `a=simulcast:recv <kept>`, and the browser drops its other encodings
///   (RFC 8853 §5.3: the offerer sends only the accepted ones). The rid is
///   kept rather than removed because the engine binds a rid section's
///   stream by its rid, and drops packets without one.
///
///   Which rid: the one the `a=rid` restrictions allow the most pixels
///   (`max-width`×`max-height`, else `max-fs`; a rid without such a
///   restriction is unlimited) if they tell the rids apart; else, when all
///   offered rids are on a known ladder (`q`/`h`/`f`, `l`/`m`/`h`,
///   `low`/`mid`/`high`), its highest; else the first of the send list
///   (RFC 8853 §5.2: the list is in decreasing order of preference).
///   Paused rids (`~`) are chosen only if all are paused.
/// - **Every rid section, narrowed or not, loses its RTX payload types**:
///   the engine does not bind RTX that names its stream by
///   `repaired-rtp-stream-id` and drops it, so a publisher that negotiated
///   RTX would answer NACKs with retransmissions that never arrive. Without
///   RTX, browsers retransmit on the media SSRC.
/// - **`a=ssrc-group:SIM`** (more than one SSRC): the group's first SSRC and
///   its RTX (`FID`) partner are kept; the other SSRCs' `a=ssrc` lines and
///   every group naming one of them go. The engine, which has no SIM
///   semantics, would otherwise bind only the last-listed SSRC. The
///   publisher still sends the other layers (SIM is the client's own
///   choice); the engine drops them. A section with both forms is narrowed
///   by rid only (the engine ignores `a=ssrc` lines where rids are present).
///
/// Returns `None` when the offer is used as it is. Pure text: applying it
/// twice changes nothing the second time.
pub fn narrow_simulcast(offer: &str, keep_rid_layers: bool) -> Option<NarrowedOffer> {
    let lines: Vec<&str> = offer.lines().map(|l| l.trim_end_matches('\r')).collect();
    let sections = section_ranges(&lines);
    let mut out: Vec<String> = lines[..sections.first().map_or(lines.len(), |r| r.start)]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    let mut narrowed = Vec::new();
    let mut changed = false;
    for r in sections {
        let section = &lines[r];
        let edit =
            narrow_rid_section(section, keep_rid_layers).or_else(|| narrow_sim_section(section));
        match edit {
            Some((text, what)) => {
                changed = true;
                out.extend(text);
                narrowed.extend(what);
            }
            None => out.extend(section.iter().map(|l| (*l).to_owned())),
        }
    }
    if !changed {
        return None;
    }
    let mut sdp = out.join("\r\n");
    sdp.push_str("\r\n");
    Some(NarrowedOffer {
        sdp,
        sections: narrowed,
    })
}

/// The `[start, end)` line ranges of each m-section of an SDP's lines.
pub fn section_ranges(lines: &[&str]) -> Vec<std::ops::Range<usize>> {
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("m="))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| start..starts.get(n + 1).copied().unwrap_or(lines.len()))
        .collect()
}

fn mid_of(section: &[&str]) -> String {
    section
        .iter()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// An offered `a=rid:<id> send <restrictions>`.
struct SendRid<'a> {
    id: &'a str,
    /// The most pixels a frame of this rid may have, if restricted.
    pixels: Option<u64>,
}

fn parse_send_rid(value: &str) -> Option<SendRid<'_>> {
    let mut parts = value.split_whitespace();
    let id = parts.next()?;
    if parts.next()? != "send" {
        return None;
    }
    let (mut w, mut h, mut fs) = (None, None, None);
    for kv in parts.next().unwrap_or("").split(';') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = v.trim().parse::<u64>().ok();
        match k.trim() {
            "max-width" => w = v,
            "max-height" => h = v,
            // In macroblocks of 16×16 pixels (RFC 6236).
            "max-fs" => fs = v.map(|v| v.saturating_mul(256)),
            _ => {}
        }
    }
    let pixels = match (w, h) {
        (Some(w), Some(h)) => Some(w.saturating_mul(h)),
        // One side only: its square is of the same order, and orders rids
        // restricted the same way correctly.
        (Some(x), None) | (None, Some(x)) => fs.or(Some(x.saturating_mul(x))),
        (None, None) => fs,
    };
    Some(SendRid { id, pixels })
}

/// The rid list of a simulcast attribute's `send` direction, in order, with
/// whether each is paused (`~`). Alternatives (`a,b`) count as separate rids.
fn simulcast_send_list(value: &str) -> Vec<(&str, bool)> {
    let mut tokens = value.split_whitespace();
    let mut out = Vec::new();
    while let (Some(dir), Some(list)) = (tokens.next(), tokens.next()) {
        if dir == "send" {
            for id in list.split([';', ',']).filter(|s| !s.is_empty()) {
                match id.strip_prefix('~') {
                    Some(id) => out.push((id, true)),
                    None => out.push((id, false)),
                }
            }
        }
    }
    out
}

/// The rid to keep, from the send list (in its order). See
/// [`narrow_simulcast`] for the rule.
fn choose_rid<'a>(list: &[(&'a str, bool)], rids: &[SendRid<'_>]) -> &'a str {
    let active: Vec<&str> = list.iter().filter(|(_, p)| !p).map(|(id, _)| *id).collect();
    let candidates: Vec<&str> = if active.is_empty() {
        list.iter().map(|(id, _)| *id).collect()
    } else {
        active
    };
    let pixels = |id: &str| rids.iter().find(|r| r.id == id).and_then(|r| r.pixels);
    // Restrictions: the first rid allowing the most pixels, if they differ.
    let limits: Vec<u64> = candidates
        .iter()
        .map(|id| pixels(id).unwrap_or(u64::MAX))
        .collect();
    if limits.iter().any(|l| *l != limits[0]) {
        let best = *limits.iter().max().expect("candidates are not empty");
        let at = limits
            .iter()
            .position(|l| *l == best)
            .expect("the max is in it");
        return candidates[at];
    }
    // A known ladder holding every candidate: its highest.
    for ladder in RID_LADDERS {
        let rank = |id: &str| ladder.iter().position(|r| r.eq_ignore_ascii_case(id));
        if candidates.iter().all(|id| rank(id).is_some()) {
            return candidates
                .iter()
                .copied()
                .max_by_key(|id| rank(id))
                .expect("candidates are not empty");
        }
    }
    candidates[0]
}

/// The payload types of a section's `rtx` codec.
fn rtx_payload_types<'a>(section: &[&'a str]) -> Vec<&'a str> {
    section
        .iter()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|v| v.split_once(' '))
        .filter(|(_, codec)| {
            codec
                .split('/')
                .next()
                .is_some_and(|c| c.eq_ignore_ascii_case("rtx"))
        })
        .map(|(pt, _)| pt)
        .collect()
}

/// A rid section with its other rids and its RTX removed; `None` when the
/// section has no send rid and no simulcast send list.
fn narrow_rid_section(
    section: &[&str],
    keep_layers: bool,
) -> Option<(Vec<String>, Option<Narrowed>)> {
    let rids: Vec<SendRid> = section
        .iter()
        .filter_map(|l| l.strip_prefix("a=rid:"))
        .filter_map(parse_send_rid)
        .collect();
    let simulcast = section.iter().find_map(|l| l.strip_prefix("a=simulcast:"));
    let mut list = simulcast.map(simulcast_send_list).unwrap_or_default();
    if list.is_empty() {
        // `a=rid` lines without `a=simulcast`: their order is the list.
        list = rids.iter().map(|r| (r.id, false)).collect();
    }
    if list.is_empty() {
        return None;
    }
    let keep = choose_rid(&list, &rids);
    let dropped: Vec<String> = list
        .iter()
        .map(|(id, _)| *id)
        .chain(rids.iter().map(|r| r.id))
        .filter(|id| *id != keep)
        .fold(Vec::new(), |mut v, id| {
            if !v.iter().any(|d: &String| d == id) {
                v.push(id.to_owned());
            }
            v
        });
    // With simulcast on, every rid stays (the server forwards layers).
    let dropped = if keep_layers { Vec::new() } else { dropped };
    let rtx = rtx_payload_types(section);
    if dropped.is_empty() && rtx.is_empty() {
        return None;
    }
    let names_rtx = |rest: &str| {
        let pt = rest.split([' ', ':']).next().unwrap_or("");
        rtx.contains(&pt)
    };
    let mut out = Vec::with_capacity(section.len());
    for line in section {
        if let Some(m) = line.strip_prefix("m=") {
            // m=<media> <port> <proto> <fmt>...: the formats without RTX.
            let kept: Vec<&str> = m
                .split_whitespace()
                .enumerate()
                .filter(|(i, f)| *i < 3 || !rtx.contains(f))
                .map(|(_, f)| f)
                .collect();
            out.push(format!("m={}", kept.join(" ")));
        } else if keep_layers && (line.starts_with("a=rid:") || line.starts_with("a=simulcast:")) {
            out.push((*line).to_owned());
        } else if let Some(v) = line.strip_prefix("a=rid:") {
            let is_dropped = parse_send_rid(v).is_some_and(|r| r.id != keep);
            if !is_dropped {
                out.push((*line).to_owned());
            }
        } else if let Some(v) = line.strip_prefix("a=simulcast:") {
            // The send list names the kept rid alone; a recv list stays.
            let mut tokens = v.split_whitespace();
            let mut parts = Vec::new();
            while let (Some(dir), Some(l)) = (tokens.next(), tokens.next()) {
                parts.push(format!("{dir} {}", if dir == "send" { keep } else { l }));
            }
            out.push(format!("a=simulcast:{}", parts.join(" ")));
        } else if [
            line.strip_prefix("a=rtpmap:"),
            line.strip_prefix("a=fmtp:"),
            line.strip_prefix("a=rtcp-fb:"),
        ]
        .into_iter()
        .flatten()
        .any(names_rtx)
        {
            // An RTX payload type's attributes go with it.
        } else {
            out.push((*line).to_owned());
        }
    }
    let what = (!dropped.is_empty()).then(|| Narrowed {
        mid: mid_of(section),
        form: SimulcastForm::Rid,
        kept: keep.to_owned(),
        dropped,
    });
    Some((out, what))
}

/// A section with an `a=ssrc-group:SIM` of several SSRCs cut to its first
/// SSRC (and that SSRC's FID partner).
fn narrow_sim_section(section: &[&str]) -> Option<(Vec<String>, Option<Narrowed>)> {
    let group = |l: &&str| -> Option<(String, Vec<u32>)> {
        let v = l.strip_prefix("a=ssrc-group:")?;
        let mut parts = v.split_whitespace();
        let semantics = parts.next()?.to_owned();
        Some((semantics, parts.filter_map(|s| s.parse().ok()).collect()))
    };
    let groups: Vec<(String, Vec<u32>)> = section.iter().filter_map(group).collect();
    let sim = groups
        .iter()
        .find(|(sem, ssrcs)| sem == "SIM" && ssrcs.len() > 1)?
        .1
        .clone();
    let keep = sim[0];
    let mut drop: Vec<u32> = sim[1..].to_vec();
    // The dropped layers' repair flows (FID, FEC-FR: primary first) go too.
    for (sem, ssrcs) in &groups {
        if sem != "SIM" && ssrcs.first().is_some_and(|s| drop.contains(s)) {
            drop.extend(ssrcs[1..].iter().copied().filter(|s| *s != keep));
        }
    }
    let mut out = Vec::with_capacity(section.len());
    for line in section {
        if let Some((sem, ssrcs)) = group(line) {
            if sem == "SIM" || ssrcs.iter().any(|s| drop.contains(s)) {
                continue;
            }
        } else if let Some(v) = line.strip_prefix("a=ssrc:") {
            let ssrc = v.split_whitespace().next().and_then(|s| s.parse().ok());
            if ssrc.is_some_and(|s| drop.contains(&s)) {
                continue;
            }
        }
        out.push((*line).to_owned());
    }
    let what = Narrowed {
        mid: mid_of(section),
        form: SimulcastForm::SsrcGroup,
        kept: keep.to_string(),
        dropped: drop.iter().map(u32::to_string).collect(),
    };
    Some((out, Some(what)))
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
    const CHROME_RID: &str = include_str!("../../../../fuzz/corpus/sdp_offer/chrome-simulcast.sdp");
    const FIREFOX_RID: &str =
        include_str!("../../../../fuzz/corpus/sdp_offer/firefox-simulcast.sdp");
    const CHROME_SIM: &str =
        include_str!("../../../../fuzz/corpus/sdp_offer/chrome-ssrc-group-sim.sdp");

    /// The lines of one m-section (by mid) that start with `prefix`.
    fn section_lines<'a>(sdp: &'a str, mid: &str, prefix: &str) -> Vec<&'a str> {
        let mut cur_mid = None;
        let mut out = Vec::new();
        let mut sect = Vec::new();
        for l in sdp.lines().map(|l| l.trim_end_matches('\r')) {
            if l.starts_with("m=") {
                if cur_mid.as_deref() == Some(mid) {
                    out.append(&mut sect);
                }
                sect.clear();
                cur_mid = None;
            }
            if let Some(m) = l.strip_prefix("a=mid:") {
                cur_mid = Some(m.to_owned());
            }
            sect.push(l);
        }
        if cur_mid.as_deref() == Some(mid) {
            out.append(&mut sect);
        }
        out.into_iter().filter(|l| l.starts_with(prefix)).collect()
    }

    /// A video section with these `a=rid` values and `a=simulcast` value.
    fn rid_offer(rids: &[&str], simulcast: &str) -> String {
        let mut s = String::from(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:0\r\na=sendonly\r\n\
             a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n",
        );
        for r in rids {
            s.push_str(&format!("a=rid:{r}\r\n"));
        }
        if !simulcast.is_empty() {
            s.push_str(&format!("a=simulcast:{simulcast}\r\n"));
        }
        s
    }

    #[test]
    fn which_rid_is_kept() {
        // (a=rid values, a=simulcast value, the rid kept, why)
        let rows: &[(&[&str], &str, &str, &str)] = &[
            (
                &["q send", "h send", "f send"],
                "send q;h;f",
                "f",
                "q/h/f ladder",
            ),
            (
                &["f send", "h send", "q send"],
                "send f;h;q",
                "f",
                "ladder, any order",
            ),
            (
                &["h send", "m send", "l send"],
                "send h;m;l",
                "h",
                "l/m/h ladder",
            ),
            (
                &["l send", "m send", "h send"],
                "send l;m;h",
                "h",
                "l/m/h ladder",
            ),
            (&["q send", "h send"], "send q;h", "h", "part of a ladder"),
            (
                &["low send", "high send"],
                "send low;high",
                "high",
                "word ladder",
            ),
            (
                &["a send", "b send", "c send"],
                "send a;b;c",
                "a",
                "unknown: first",
            ),
            (
                &["2 send", "1 send", "0 send"],
                "send 0;1;2",
                "0",
                "unknown: first of the list",
            ),
            (
                &[
                    "a send max-width=320;max-height=180",
                    "b send max-width=1280;max-height=720",
                    "c send max-width=640;max-height=360",
                ],
                "send a;b;c",
                "b",
                "the most pixels",
            ),
            (
                &["q send max-width=320", "h send max-width=640", "f send"],
                "send q;h;f",
                "f",
                "no restriction is unlimited",
            ),
            (
                &["x send max-fs=3600", "y send max-fs=900"],
                "send y;x",
                "x",
                "max-fs",
            ),
            (
                &["h send pt=96", "q send pt=96"],
                "send h;q",
                "h",
                "pt alone is no restriction",
            ),
            (
                &["q send", "h send", "f send"],
                "send q;h;~f",
                "h",
                "paused skipped",
            ),
            (
                &["q send", "f send"],
                "send ~q;~f",
                "f",
                "all paused: all count",
            ),
            (
                &["q send", "h send", "f send"],
                "send q,h;f",
                "f",
                "alternatives",
            ),
            (&["q send", "h send", "f send"], "", "f", "no a=simulcast"),
            (
                &["q send", "h send", "f send", "r recv"],
                "send q;h;f recv r",
                "f",
                "a recv list stays",
            ),
        ];
        for (rids, simulcast, kept, why) in rows {
            let offer = rid_offer(rids, simulcast);
            let n =
                narrow_simulcast(&offer, false).unwrap_or_else(|| panic!("{why}: not narrowed"));
            assert_eq!(n.sections.len(), 1, "{why}");
            assert_eq!(n.sections[0].kept, *kept, "{why}");
            assert_eq!(n.sections[0].form, SimulcastForm::Rid, "{why}");
            let send_rids: Vec<&str> = section_lines(&n.sdp, "0", "a=rid:")
                .into_iter()
                .filter(|l| l.contains(" send"))
                .collect();
            assert_eq!(send_rids.len(), 1, "{why}: {send_rids:?}");
            assert!(
                send_rids[0].starts_with(&format!("a=rid:{kept} send")),
                "{why}"
            );
            if !simulcast.is_empty() {
                let sc = section_lines(&n.sdp, "0", "a=simulcast:");
                assert_eq!(sc.len(), 1, "{why}");
                assert!(
                    sc[0].starts_with(&format!("a=simulcast:send {kept}")),
                    "{why}: {sc:?}"
                );
                assert_eq!(
                    sc[0].contains("recv r"),
                    simulcast.contains("recv r"),
                    "{why}"
                );
            }
            // RTX is gone from the section, and narrowing is done.
            assert!(!n.sdp.contains("rtx/"), "{why}");
            assert!(
                n.sdp.contains("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"),
                "{why}"
            );
            assert!(!n.sdp.contains("apt=96"), "{why}");
            assert_eq!(narrow_simulcast(&n.sdp, false), None, "{why}: idempotent");
        }
    }

    #[test]
    fn chromium_rid_offer() {
        let n = narrow_simulcast(CHROME_RID, false).expect("narrowed");
        assert_eq!(
            n.sections,
            vec![Narrowed {
                mid: "1".into(),
                form: SimulcastForm::Rid,
                kept: "f".into(),
                dropped: vec!["q".into(), "h".into()],
            }]
        );
        assert_eq!(section_lines(&n.sdp, "1", "a=rid:"), vec!["a=rid:f send"]);
        assert_eq!(
            section_lines(&n.sdp, "1", "a=simulcast:"),
            vec!["a=simulcast:send f"]
        );
        // Every RTX payload type (97, 103, 46) and its attributes are gone;
        // the codecs stay.
        assert_eq!(
            section_lines(&n.sdp, "1", "m="),
            vec!["m=video 9 UDP/TLS/RTP/SAVPF 96 102 45"]
        );
        for pt in ["97", "103", "46"] {
            assert!(!n.sdp.contains(&format!("a=rtpmap:{pt} ")), "{pt}");
            assert!(!n.sdp.contains(&format!("a=fmtp:{pt} ")), "{pt}");
        }
        assert_eq!(section_lines(&n.sdp, "1", "a=rtcp-fb:96").len(), 5);
        // The audio section and the session are untouched, line for line.
        let audio = |s: &str| s[..s.find("m=video").unwrap()].to_owned();
        assert_eq!(audio(&n.sdp), audio(CHROME_RID));
        assert_eq!(media_sections(&n.sdp), media_sections(CHROME_RID));
        assert_eq!(narrow_simulcast(&n.sdp, false), None);
    }

    #[test]
    fn firefox_rid_offer() {
        let n = narrow_simulcast(FIREFOX_RID, false).expect("narrowed");
        assert_eq!(n.sections.len(), 1);
        assert_eq!(n.sections[0].kept, "h");
        assert_eq!(n.sections[0].dropped, vec!["m", "l"]);
        assert_eq!(section_lines(&n.sdp, "1", "a=rid:"), vec!["a=rid:h send"]);
        assert_eq!(
            section_lines(&n.sdp, "1", "a=simulcast:"),
            vec!["a=simulcast:send h"]
        );
        assert_eq!(
            section_lines(&n.sdp, "1", "m="),
            vec!["m=video 9 UDP/TLS/RTP/SAVPF 120 121 126 97 123 122"]
        );
        // Firefox's a=ssrc lines stay: the engine ignores them where rids are.
        assert_eq!(section_lines(&n.sdp, "1", "a=ssrc:").len(), 6);
        assert_eq!(narrow_simulcast(&n.sdp, false), None);
    }

    #[test]
    fn ssrc_group_sim_offer() {
        let n = narrow_simulcast(CHROME_SIM, false).expect("narrowed");
        assert_eq!(
            n.sections,
            vec![Narrowed {
                mid: "1".into(),
                form: SimulcastForm::SsrcGroup,
                kept: "1111111101".into(),
                dropped: ["1111111103", "1111111105", "1111111104", "1111111106"]
                    .map(String::from)
                    .to_vec(),
            }]
        );
        assert_eq!(
            section_lines(&n.sdp, "1", "a=ssrc-group:"),
            vec!["a=ssrc-group:FID 1111111101 1111111102"]
        );
        let ssrcs: Vec<&str> = section_lines(&n.sdp, "1", "a=ssrc:")
            .into_iter()
            .map(|l| &l["a=ssrc:".len()..][..10])
            .collect();
        assert_eq!(
            ssrcs,
            vec!["1111111101", "1111111101", "1111111102", "1111111102"]
        );
        // Its RTX is kept: the engine pairs declared SSRCs through FID.
        assert!(n.sdp.contains("a=rtpmap:97 rtx/90000"));
        assert_eq!(narrow_simulcast(&n.sdp, false), None);
    }

    #[test]
    fn offers_left_alone() {
        // No simulcast at all, or a single SIM SSRC: the same text.
        assert_eq!(narrow_simulcast(OFFER, false), None);
        let one_sim =
            "v=0\r\nm=video 9 X 96\r\na=mid:0\r\na=ssrc-group:SIM 5\r\na=ssrc:5 cname:x\r\n";
        assert_eq!(narrow_simulcast(one_sim, false), None);
        // One rid with RTX: RTX goes, but nothing was narrowed.
        let one_rid = rid_offer(&["f send"], "send f");
        let n = narrow_simulcast(&one_rid, false).expect("rtx removed");
        assert!(n.sections.is_empty());
        assert!(!n.sdp.contains("rtx"));
        assert!(n.sdp.contains("a=rid:f send\r\na=simulcast:send f\r\n"));
        // One rid without RTX: nothing to do.
        assert_eq!(narrow_simulcast(&n.sdp, false), None);
        assert_eq!(narrow_simulcast("", false), None);
    }

    #[test]
    fn with_simulcast_on_every_rid_stays_and_only_rtx_goes() {
        let n = narrow_simulcast(CHROME_RID, true).expect("RTX removed");
        assert!(n.sections.is_empty(), "nothing narrowed");
        let rids = n.sdp.lines().filter(|l| l.starts_with("a=rid:")).count();
        let before = CHROME_RID
            .lines()
            .filter(|l| l.starts_with("a=rid:"))
            .count();
        assert_eq!(rids, before);
        assert!(n.sdp.contains("a=simulcast:send q;h;f"), "{}", n.sdp);
        assert!(!n.sdp.contains("rtx/"), "RTX gone");
        assert_eq!(narrow_simulcast(&n.sdp, true), None, "idempotent");
        // SIM groups are still cut: the engine cannot bind them.
        let n = narrow_simulcast(CHROME_SIM, true).expect("narrowed");
        assert_eq!(n.sections.len(), 1);
    }
}
