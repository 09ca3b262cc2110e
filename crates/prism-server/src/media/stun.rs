//! Just enough STUN parsing to route a binding request to its peer before ICE
//! has selected an address: the local ufrag is the USERNAME's first half.
//! No allocation; any malformed input yields `None`.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;

/// What a datagram is, as far as connection setup cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A binding request; `nominates` when it carries USE-CANDIDATE.
    BindingRequest { nominates: bool },
    /// A binding success response (to one of the engine's own checks).
    BindingSuccess,
    /// Other STUN (errors, indications).
    OtherStun,
    /// DTLS, SRTP or SRTCP: what the engine drops before ICE has selected a pair.
    NotStun,
}

/// Classifies a datagram (RFC 7983 demultiplexing, then the STUN message type).
pub fn kind(b: &[u8]) -> Kind {
    if !is_stun(b) {
        return Kind::NotStun;
    }
    match u16::from_be_bytes([b[0], b[1]]) {
        BINDING_REQUEST => Kind::BindingRequest {
            nominates: attribute(b, ATTR_USE_CANDIDATE).is_some(),
        },
        BINDING_SUCCESS => Kind::BindingSuccess,
        _ => Kind::OtherStun,
    }
}

/// Whether a datagram looks like STUN (RFC 7983 demultiplexing: first byte 0–3
/// and the magic cookie).
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= 20 && b[0] < 4 && b[4..8] == MAGIC_COOKIE
}

/// The local (server) ufrag named by a STUN message's USERNAME attribute
/// (`server_ufrag:client_ufrag`).
pub fn local_ufrag(b: &[u8]) -> Option<&str> {
    let user = std::str::from_utf8(attribute(b, ATTR_USERNAME)?).ok()?;
    user.split(':').next().filter(|s| !s.is_empty())
}

/// The value of the first attribute of this type (attributes after
/// MESSAGE-INTEGRITY included: routing does not verify it, the engine does).
fn attribute(b: &[u8], wanted: u16) -> Option<&[u8]> {
    if !is_stun(b) {
        return None;
    }
    let body_len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let end = 20usize.checked_add(body_len)?.min(b.len());
    let mut i = 20;
    while i + 4 <= end {
        let ty = u16::from_be_bytes([b[i], b[i + 1]]);
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        let start = i + 4;
        let stop = start.checked_add(len)?;
        if stop > end {
            return None;
        }
        if ty == wanted {
            return Some(&b[start..stop]);
        }
        // Attributes are padded to 4 bytes.
        i = start + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // A SOFTWARE attribute first, padded, so the parser must skip it.
        attrs.extend_from_slice(&0x8022u16.to_be_bytes());
        attrs.extend_from_slice(&3u16.to_be_bytes());
        attrs.extend_from_slice(b"abc\0");
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn finds_the_local_ufrag() {
        assert_eq!(local_ufrag(&binding("srvUfrag:cli")), Some("srvUfrag"));
        assert_eq!(local_ufrag(&binding("onlyserver")), Some("onlyserver"));
        assert_eq!(local_ufrag(&binding(":cli")), None);
    }

    #[test]
    fn classifies_setup_datagrams() {
        let plain = binding("s:c");
        assert_eq!(kind(&plain), Kind::BindingRequest { nominates: false });
        // USE-CANDIDATE: an empty attribute appended to the same request.
        let mut nominating = plain.clone();
        nominating.extend_from_slice(&ATTR_USE_CANDIDATE.to_be_bytes());
        nominating.extend_from_slice(&0u16.to_be_bytes());
        let len = (nominating.len() - 20) as u16;
        nominating[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(kind(&nominating), Kind::BindingRequest { nominates: true });
        let mut ok = plain.clone();
        ok[0..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
        assert_eq!(kind(&ok), Kind::BindingSuccess);
        let mut err = plain;
        err[0..2].copy_from_slice(&0x0111u16.to_be_bytes());
        assert_eq!(kind(&err), Kind::OtherStun);
        let client_hello = [22u8, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 1];
        assert_eq!(kind(&client_hello), Kind::NotStun);
        assert_eq!(kind(&[0x80; 40]), Kind::NotStun, "RTP");
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(local_ufrag(&[]), None);
        assert_eq!(local_ufrag(&[0x80; 40]), None, "RTP is not STUN");
        let mut m = binding("a:b");
        m.truncate(27); // cut inside the attribute
        assert_eq!(local_ufrag(&m), None);
        let mut m = binding("a:b");
        m[2] = 0xFF; // length larger than the datagram
        m[3] = 0xFF;
        let _ = local_ufrag(&m); // must not panic
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = local_ufrag(&junk);
        }
    }
}
