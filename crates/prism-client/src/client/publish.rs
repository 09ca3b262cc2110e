//! The publish leg's senders: synthetic Opus and video, the video optionally
//! as rid simulcast the way browsers send it.
//!
//! **Simulcast.** One video m-section whose track has one encoding per layer
//! (`{rid, ssrc}`, lowest first); the engine writes `a=rid:<rid> send` and
//! `a=simulcast:send q;h;f` from them and accepts any layer's SSRC in
//! `write_rtp`. What the engine does not do, this module does:
//! - it stamps `sdes:mid` and `sdes:rtp-stream-id` on every packet (ids as
//!   negotiated on the sender): a receiving engine binds a layer's SSRC from
//!   the first packet that carries both, as for Chromium's packets;
//! - it answers a keyframe request (PLI, FIR) on the layer whose SSRC it
//!   names, and only there, as an encoder per layer does;
//! - it switches layers off and on when the server says which it needs
//!   (`layers_wanted`, dynacast). A layer coming back starts on a keyframe.
//!
//! The video is negotiated without RTX when simulcast is on (see
//! [`super::leg::LegSetup`]): the engine's NACK responder builds RTX packets
//! without header extensions, which a receiver cannot map to a rid layer;
//! without RTX it resends the original packet, rid and all, on the layer's
//! SSRC.

use std::time::{Duration, Instant};

use bytes::Bytes;
use prism_signal::{LayerDecl, LayersWanted};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::RTCRtpSenderId;

use super::{ClientOptions, Driver};
use crate::leg::{pick_payload_type, LegConn};
use crate::payload::{
    now_us, video_continuation_prefix, video_prefix, vp8_key_prefix, LayerTag, Probe,
};

/// `urn:ietf:params:rtp-hdrext:sdes:mid`.
pub const SDES_MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id` (the rid).
pub const SDES_RTP_STREAM_ID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// One simulcast layer the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    /// Its `a=rid` (1 to 16 alphanumeric characters).
    pub rid: String,
    /// The picture size it claims (in the payload's probe and in its VP8
    /// keyframe header).
    pub width: u16,
    pub height: u16,
    /// Bits per second: every frame is bitrate × frame interval bits
    /// (keyframes three times that).
    pub bitrate: u32,
}

impl LayerSpec {
    pub fn new(rid: &str, width: u16, height: u16, bitrate: u32) -> LayerSpec {
        LayerSpec {
            rid: rid.to_owned(),
            width,
            height,
            bitrate,
        }
    }

    /// The usual three, lowest first, with browsers' rids: q 320×180 at
    /// 150 kbit/s, h 640×360 at 500 kbit/s, f 1280×720 at 1.5 Mbit/s.
    pub fn three() -> Vec<LayerSpec> {
        vec![
            LayerSpec::new("q", 320, 180, 150_000),
            LayerSpec::new("h", 640, 360, 500_000),
            LayerSpec::new("f", 1280, 720, 1_500_000),
        ]
    }

    /// Bytes of one delta frame sent every `interval`.
    pub fn frame_bytes(&self, interval: Duration) -> usize {
        (u64::from(self.bitrate) * interval.as_micros() as u64 / 8_000_000) as usize
    }

    /// How the publish offer declares it (`TrackDecl.layers`).
    pub fn decl(&self) -> LayerDecl {
        LayerDecl {
            rid: self.rid.clone(),
            width: u32::from(self.width),
            height: u32::from(self.height),
            max_bitrate: Some(self.bitrate),
        }
    }
}

/// One published m-section.
pub(super) struct OutTrack {
    pub(super) sender: RTCRtpSenderId,
    pub(super) video: bool,
    pub(super) pt: Option<u8>,
    /// Its m-section, once offered.
    pub(super) mid: String,
    /// Simulcast: the negotiated ids of `sdes:mid` and
    /// `sdes:rtp-stream-id`, learned from the answer.
    ext: Option<(u8, u8)>,
    pub(super) next_at: Instant,
    interval: Duration,
    /// Largest packet payload.
    bytes: usize,
    /// One stream, or one per simulcast layer (lowest first).
    streams: Vec<OutStream>,
}

/// One RTP stream (SSRC) of a track.
struct OutStream {
    ssrc: u32,
    rtp_seq: u16,
    probe_seq: u32,
    ts: u32,
    /// The next video frame is a keyframe.
    key_due: bool,
    last_key_at: Option<Instant>,
    /// Simulcast: its layer; None for a single stream.
    layer: Option<(u8, LayerSpec)>,
    /// false: switched off by dynacast.
    active: bool,
}

impl OutStream {
    fn new(ssrc: u32, layer: Option<(u8, LayerSpec)>) -> OutStream {
        OutStream {
            ssrc,
            rtp_seq: rand::random(),
            probe_seq: 0,
            // Each stream its own timestamp base, as each of an encoder's
            // RTP modules has.
            ts: rand::random(),
            key_due: true,
            last_key_at: None,
            layer,
            active: true,
        }
    }

    fn rid(&self) -> Option<&str> {
        self.layer.as_ref().map(|(_, l)| l.rid.as_str())
    }
}

/// Whether the client publishes simulcast video: layers given, at least two.
pub(super) fn simulcast_layers(opts: &ClientOptions) -> Option<&[LayerSpec]> {
    opts.simulcast
        .as_deref()
        .filter(|l| opts.publish_video && l.len() > 1)
}

impl Driver {
    /// Adds the audio and video tracks the options ask for to `leg`.
    pub(super) fn add_published_tracks(&mut self, leg: &mut LegConn) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut specs: Vec<(bool, String, u32, u16, String)> = Vec::new();
        if self.opts.publish_audio {
            let fmtp = "minptime=10;useinbandfec=1".to_owned();
            specs.push((false, MIME_TYPE_OPUS.to_owned(), 48_000, 2, fmtp));
        }
        if self.opts.publish_video {
            let (mime, fmtp) = self.opts.video_codec.clone();
            specs.push((true, mime, 90_000, 0, fmtp));
        }
        for (video, mime, clock_rate, channels, fmtp) in specs {
            let codec = RTCRtpCodec {
                mime_type: mime,
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp,
                rtcp_feedback: vec![],
            };
            let layers: Vec<(u8, LayerSpec)> = match simulcast_layers(&self.opts) {
                Some(l) if video => l
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(i, l)| (i as u8, l))
                    .collect(),
                _ => Vec::new(),
            };
            let streams: Vec<OutStream> = if layers.is_empty() {
                vec![OutStream::new(rand::random(), None)]
            } else {
                layers
                    .into_iter()
                    .map(|l| OutStream::new(rand::random(), Some(l)))
                    .collect()
            };
            let encodings = streams
                .iter()
                .map(|s| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: s.rid().unwrap_or_default().to_owned(),
                        ssrc: Some(s.ssrc),
                        ..Default::default()
                    },
                    codec: codec.clone(),
                    max_bitrate: s.layer.as_ref().map_or(0, |(_, l)| l.bitrate),
                    ..Default::default()
                })
                .collect();
            let kind = if video {
                RtpCodecKind::Video
            } else {
                RtpCodecKind::Audio
            };
            let track = MediaStreamTrack::new(
                format!("stream-{}", self.opts.sender_id),
                format!(
                    "{}-{}",
                    if video { "video" } else { "audio" },
                    self.opts.sender_id
                ),
                "synthetic".to_owned(),
                kind,
                encodings,
            );
            let sender = leg.pc.add_track(track)?;
            self.out.push(OutTrack {
                sender,
                video,
                pt: None,
                mid: String::new(),
                ext: None,
                next_at: now,
                interval: if video {
                    self.opts.video_interval
                } else {
                    self.opts.audio_interval
                },
                bytes: if video {
                    self.opts.video_bytes
                } else {
                    self.opts.audio_bytes
                },
                streams,
            });
        }
        Ok(())
    }

    /// The offer's declaration of each published m-section (its source and
    /// simulcast layers); remembers each track's mid.
    pub(super) fn track_decls(&mut self, sdp: &str) -> Vec<prism_signal::TrackDecl> {
        let sections = crate::leg::mids(sdp);
        // The engine offers the tracks' m-sections in the order they were added.
        for (o, (mid, _)) in self.out.iter_mut().zip(&sections) {
            o.mid = mid.clone();
        }
        sections
            .into_iter()
            .map(|(mid, video)| prism_signal::TrackDecl {
                source: if video {
                    prism_signal::TrackSource::Camera
                } else {
                    prism_signal::TrackSource::Microphone
                },
                layers: match (video, simulcast_layers(&self.opts)) {
                    (true, Some(l)) => l.iter().map(LayerSpec::decl).collect(),
                    _ => Vec::new(),
                },
                mid,
            })
            .collect()
    }

    /// After the publish answer: each sender's payload type and, for
    /// simulcast, the header extension ids to stamp.
    pub(super) fn learn_send_parameters(&mut self) {
        let Some(leg) = self.publish.as_mut() else {
            return;
        };
        for o in &mut self.out {
            let Some(mut s) = leg.pc.rtp_sender(o.sender) else {
                continue;
            };
            let params = &s.get_parameters().rtp_parameters;
            let (mime, fmtp) = if o.video {
                (
                    self.opts.video_codec.0.as_str(),
                    self.opts.video_codec.1.as_str(),
                )
            } else {
                (MIME_TYPE_OPUS, "")
            };
            o.pt = pick_payload_type(&params.codecs, mime, fmtp);
            let id = |uri: &str| {
                params
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == uri)
                    .and_then(|e| u8::try_from(e.id).ok())
            };
            o.ext = match (
                o.streams.len() > 1,
                id(SDES_MID_URI),
                id(SDES_RTP_STREAM_ID_URI),
            ) {
                (true, Some(m), Some(r)) => Some((m, r)),
                (true, m, r) => {
                    // The server did not take mid/rid for this section; its
                    // layers cannot be told apart, so they go out unmarked
                    // (what a browser's packets look like to such a peer).
                    tracing::warn!(
                        mid = %o.mid,
                        "simulcast sender: mid or rid extension not negotiated ({m:?}, {r:?})"
                    );
                    None
                }
                _ => None,
            };
        }
    }

    /// A keyframe request (PLI/FIR) naming these SSRCs: the next frame of
    /// each named video stream is a keyframe (only that layer's).
    pub(super) fn on_keyframe_request(&mut self, ssrcs: &[u32]) {
        let answer = self.opts.answer_keyframe_requests;
        let mut st = self.state.lock().expect("state lock");
        for o in self.out.iter_mut().filter(|o| o.video) {
            for s in o.streams.iter_mut().filter(|s| ssrcs.contains(&s.ssrc)) {
                s.key_due |= answer;
                st.keyframe_requests += 1;
                if let Some(rid) = s.rid() {
                    st.layers_sent
                        .entry(rid.to_owned())
                        .or_default()
                        .keyframe_requests += 1;
                }
            }
        }
    }

    /// Dynacast: keep sending only the layers of `track_id` the server
    /// names; a layer switched back on starts with a keyframe.
    pub(super) fn on_layers_wanted(&mut self, w: &LayersWanted) {
        if !self.opts.dynacast {
            return;
        }
        let mut st = self.state.lock().expect("state lock");
        let Some(mid) = st
            .published
            .iter()
            .find(|m| m.track_id == w.track_id)
            .map(|m| m.mid.clone())
        else {
            return;
        };
        for o in self.out.iter_mut().filter(|o| o.mid == mid) {
            for s in &mut o.streams {
                let Some(rid) = s.rid().map(str::to_owned) else {
                    continue;
                };
                let on = w.rids.contains(&rid);
                if on != s.active {
                    s.active = on;
                    // A layer that resumes must be decodable at once.
                    s.key_due |= on;
                    st.dynacast_switches += 1;
                    st.layers_sent.entry(rid).or_default().paused = !on;
                }
            }
        }
    }

    pub(super) fn send_media(&mut self, now: Instant) {
        if self.frozen {
            return;
        }
        let Some(leg) = self.publish.as_mut() else {
            return;
        };
        if !leg.connected {
            return;
        }
        let opts = &self.opts;
        let mut sent = (0, 0);
        let mut keys = 0;
        // (rid, packets, keyframes) of this round, written to the state once.
        let mut per_layer: Vec<(String, u64, u32)> = Vec::new();
        for o in &mut self.out {
            let Some(pt) = o.pt else { continue };
            while o.next_at <= now {
                o.next_at += o.interval;
                let tick = if o.video {
                    90 * o.interval.as_millis() as u32
                } else {
                    48 * o.interval.as_millis() as u32
                };
                for s in &mut o.streams {
                    s.ts = s.ts.wrapping_add(tick);
                    if !s.active {
                        continue;
                    }
                    let key = o.video
                        && (s.key_due
                            || s.last_key_at
                                .is_none_or(|t| now.duration_since(t) >= opts.keyframe_interval));
                    if key {
                        s.key_due = false;
                        s.last_key_at = Some(now);
                        keys += 1;
                    }
                    let frame = Frame::plan(opts, o.video, o.bytes, o.interval, s, key);
                    for i in 0..frame.packets {
                        let pkt = frame.packet(opts, s, pt, i, o.ext.map(|e| (e, &o.mid)));
                        s.probe_seq += 1;
                        let Some(mut sender) = leg.pc.rtp_sender(o.sender) else {
                            continue;
                        };
                        if sender.write_rtp(now, pkt).is_err() {
                            continue;
                        }
                        if o.video {
                            sent.1 += 1;
                        } else {
                            sent.0 += 1;
                        }
                        if let Some(rid) = s.rid() {
                            match per_layer.iter_mut().find(|(r, _, _)| r == rid) {
                                Some(e) => e.1 += 1,
                                None => per_layer.push((rid.to_owned(), 1, 0)),
                            }
                        }
                    }
                    if let (true, Some(rid)) = (key, s.rid()) {
                        match per_layer.iter_mut().find(|(r, _, _)| r == rid) {
                            Some(e) => e.2 += 1,
                            None => per_layer.push((rid.to_owned(), 0, 1)),
                        }
                    }
                }
            }
        }
        let mut st = self.state.lock().expect("state lock");
        st.sent_audio += sent.0;
        st.sent_video += sent.1;
        st.keyframes_sent += keys;
        for (rid, packets, keyframes) in per_layer {
            let l = st.layers_sent.entry(rid).or_default();
            l.packets += packets;
            l.keyframes += keyframes;
        }
    }
}

/// One frame of one stream: how many packets, how big.
struct Frame {
    packets: usize,
    /// Payload bytes of each packet.
    size: usize,
    key: bool,
    video: bool,
}

impl Frame {
    fn plan(
        opts: &ClientOptions,
        video: bool,
        max_bytes: usize,
        interval: Duration,
        s: &OutStream,
        key: bool,
    ) -> Frame {
        let scale = if key { 3 } else { 1 };
        let (packets, size) = match (&s.layer, video, opts.video_bitrate) {
            // A layer's frame, cut into equal packets of at most
            // `max_bytes` (its bitrate is what it says).
            (Some((_, l)), _, _) => {
                let frame = (l.frame_bytes(interval) * scale).max(1);
                let packets = frame.div_ceil(max_bytes).max(1);
                (packets, frame.div_ceil(packets))
            }
            // A frame's worth at the bitrate, in full-size packets.
            (None, true, Some(bps)) => {
                let frame =
                    (u64::from(bps) * interval.as_micros() as u64 / 8_000_000) as usize * scale;
                (frame.div_ceil(max_bytes).max(1), max_bytes)
            }
            _ => (1, max_bytes),
        };
        Frame {
            packets,
            size,
            key,
            video,
        }
    }

    /// The frame's packet `i`: probe, codec prefix, marker on the last one,
    /// and (simulcast) the mid and rid extensions.
    fn packet(
        &self,
        opts: &ClientOptions,
        s: &mut OutStream,
        pt: u8,
        i: usize,
        ext: Option<((u8, u8), &String)>,
    ) -> rtp::Packet {
        let mime = &opts.video_codec.0;
        let layer = s.layer.as_ref().map(|(index, l)| LayerTag {
            index: *index,
            width: l.width,
            height: l.height,
        });
        let key_header;
        let prefix: &[u8] = match (self.video, i, layer) {
            (false, _, _) => &[],
            // A layer's keyframe says its size, as an encoder's does.
            (true, 0, Some(l)) if self.key && mime.eq_ignore_ascii_case("video/VP8") => {
                key_header = vp8_key_prefix(l.width, l.height);
                &key_header
            }
            (true, 0, _) => video_prefix(mime, self.key),
            (true, _, _) => video_continuation_prefix(mime, self.key),
        };
        let probe = Probe {
            sender: opts.sender_id,
            video: self.video,
            seq: s.probe_seq,
            sent_at_us: now_us(),
            layer,
        };
        s.rtp_seq = s.rtp_seq.wrapping_add(1);
        let mut header = rtp::header::Header {
            version: 2,
            marker: self.video && i + 1 == self.packets,
            payload_type: pt,
            sequence_number: s.rtp_seq,
            timestamp: s.ts,
            ssrc: s.ssrc,
            ..Default::default()
        };
        if let (Some(((mid_id, rid_id), mid)), Some(rid)) = (ext, s.rid()) {
            // Both fit a one-byte extension (mid and rid are at most 16
            // bytes: ours are a few characters), so these cannot fail.
            let _ = header.set_extension(mid_id, Bytes::copy_from_slice(mid.as_bytes()));
            let _ = header.set_extension(rid_id, Bytes::copy_from_slice(rid.as_bytes()));
        }
        rtp::Packet {
            header,
            payload: Bytes::from(probe.encode(prefix, self.size)),
        }
    }
}
