//! Where a publisher's offer keeps the AV1 dependency descriptor.
//!
//! Chromium offers the dependency descriptor (DD) header extension on a
//! simulcast VP8 camera too, and once it is negotiated sends that camera's
//! temporal structure in the DD instead of the VP8 payload descriptor's TID.
//! Prism reads VP8 layers from the payload descriptor (the allocator's
//! base-temporal-layer step, a leg's temporal cap) and the DD only for AV1
//! SVC, so a publish offer keeps the DD only in m-sections whose preferred
//! (first) codec is AV1; elsewhere its `a=extmap` line is removed before the
//! engine sees the offer, and the answer does not negotiate it.

use prism_core::DEPENDENCY_DESCRIPTOR_URI;

/// `offer` without the DD's `a=extmap` line in m-sections whose first
/// payload type is not AV1; `None` when nothing changes. Pure text.
pub fn keep_dependency_descriptor_for_av1(offer: &str) -> Option<String> {
    let lines: Vec<&str> = offer.lines().map(|l| l.trim_end_matches('\r')).collect();
    let mut drop = vec![false; lines.len()];
    let mut changed = false;
    for r in super::sdp::section_ranges(&lines) {
        let start = r.start;
        let section = &lines[r];
        // m=video 9 UDP/TLS/RTP/SAVPF 96 97 …: the first payload type.
        let Some(first_pt) = section[0].split_whitespace().nth(3) else {
            continue;
        };
        let rtpmap = format!("a=rtpmap:{first_pt} ");
        let av1 = section.iter().any(|l| {
            l.strip_prefix(&rtpmap)
                .is_some_and(|codec| codec.to_ascii_uppercase().starts_with("AV1/"))
        });
        if av1 {
            continue;
        }
        for (i, l) in section.iter().enumerate() {
            if l.starts_with("a=extmap:") && l.contains(DEPENDENCY_DESCRIPTOR_URI) {
                drop[start + i] = true;
                changed = true;
            }
        }
    }
    if !changed {
        return None;
    }
    let mut out: String = lines
        .iter()
        .zip(&drop)
        .filter(|(_, d)| !**d)
        .map(|(l, _)| format!("{l}\r\n"))
        .collect();
    if !offer.ends_with('\n') {
        out.truncate(out.len() - 2);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(first: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF {first}\r\na=mid:1\r\n\
             a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
             a=extmap:12 {DEPENDENCY_DESCRIPTOR_URI}\r\n\
             a=rtpmap:96 VP8/90000\r\na=rtpmap:45 AV1/90000\r\n"
        )
    }

    #[test]
    fn the_dd_stays_only_where_av1_comes_first() {
        // A VP8 camera (VP8 first): the DD goes, the rest stays.
        let vp8 = keep_dependency_descriptor_for_av1(&offer("96 45")).expect("changed");
        assert!(!vp8.contains(DEPENDENCY_DESCRIPTOR_URI));
        assert!(vp8.contains("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"));
        assert_eq!(vp8.lines().count(), offer("96 45").lines().count() - 1);
        // AV1 first (an AV1 SVC camera): untouched.
        assert_eq!(keep_dependency_descriptor_for_av1(&offer("45 96")), None);
        // Applying it twice changes nothing the second time.
        assert_eq!(keep_dependency_descriptor_for_av1(&vp8), None);
    }
}
