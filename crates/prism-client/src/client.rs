//! A whole participant, driven by one task.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use prism_signal::{
    Answer, Candidate, ClientMessage, Join, Leg, MidTrack, Offer, ServerMessage, TrackDecl,
    TrackRef, TrackSettings,
};
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::goodbye::Goodbye;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod http;
mod publish;

use publish::OutTrack;
pub use publish::{LayerSpec, SDES_MID_URI, SDES_RTP_STREAM_ID_URI};

use crate::leg::{redirect_candidates, LegConn, LegSetup};
use crate::payload::now_us;
use crate::signaling::Signaling;
use crate::state::{record, ClientState};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `ws://127.0.0.1:8080/ws`
    pub url: String,
    pub room: String,
    pub name: String,
    pub identity: Option<String>,
    /// Access token: sent on `join`, and as `Authorization: Bearer` on
    /// WHIP/WHEP requests. None in dev mode.
    pub token: Option<String>,
    /// Written into every payload so receivers know who sent it.
    pub sender_id: u32,
    pub publish_audio: bool,
    pub publish_video: bool,
    pub audio_bytes: usize,
    pub video_bytes: usize,
    pub audio_interval: Duration,
    pub video_interval: Duration,
    /// Video codec MIME type and fmtp line, e.g. (`video/VP8`, ``).
    pub video_codec: (String, String),
    /// A keyframe at least this often (and whenever a PLI/FIR arrives).
    pub keyframe_interval: Duration,
    /// Answer PLI/FIR with a keyframe (an encoder with a fixed GOP does not).
    pub answer_keyframe_requests: bool,
    /// Send media to this address instead of the server's candidates (a
    /// relay in between, e.g. one that injects loss).
    pub media_via: Option<SocketAddr>,
    /// The local address media sockets bind to (and offer as candidate).
    pub bind_ip: IpAddr,
    /// Video as frames at this bitrate (bits/s): every `video_interval` one
    /// frame of bitrate × interval bits (keyframes three times that), cut
    /// into packets of at most `video_bytes`, one timestamp per frame and
    /// the marker on its last packet, as an encoder's packetizer does. None:
    /// one `video_bytes` packet per interval.
    pub video_bitrate: Option<u32>,
    /// Keep every received packet's sequence, probe and latency (tests
    /// assert on them). Off for load: counters and a latency histogram only.
    pub record_packets: bool,
    /// Publish the video as rid simulcast with these layers, lowest first
    /// (e.g. [`LayerSpec::three`]), as browsers do: one m-section, one SSRC
    /// per layer, mid and rid on every packet, no RTX. Each layer's frames
    /// follow its own bitrate (`video_bitrate` is for single-stream video).
    /// None (or fewer than two layers): one stream.
    pub simulcast: Option<Vec<LayerSpec>>,
    /// Follow the server's `layers_wanted` (dynacast): stop sending the
    /// layers it does not list, resume them when it lists them again.
    pub dynacast: bool,
    /// A weak subscriber: the subscribe leg does not negotiate transport-cc
    /// and reports this estimate (bits/s) in a REMB every second, so the
    /// server's allocator sees a link of this size. Nothing is throttled:
    /// the server is trusted to stay within it.
    pub max_receive_bitrate: Option<u64>,
}

impl ClientOptions {
    pub fn new(url: &str, room: &str, name: &str, sender_id: u32) -> Self {
        ClientOptions {
            url: url.to_owned(),
            room: room.to_owned(),
            name: name.to_owned(),
            identity: Some(name.to_owned()),
            token: None,
            sender_id,
            publish_audio: true,
            publish_video: true,
            audio_bytes: 120,
            video_bytes: 1000,
            audio_interval: Duration::from_millis(20),
            video_interval: Duration::from_millis(33),
            video_codec: (MIME_TYPE_VP8.to_owned(), String::new()),
            keyframe_interval: Duration::from_secs(2),
            answer_keyframe_requests: true,
            media_via: None,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            video_bitrate: None,
            record_packets: true,
            simulcast: None,
            dynacast: true,
            max_receive_bitrate: None,
        }
    }
}

#[derive(Debug)]
pub enum ClientCommand {
    /// Send `leave` and stop.
    Leave,
    Mute(String),
    Unmute(String),
    /// Stop all media traffic (both legs) but keep signaling open: the server
    /// sees a client whose network died.
    FreezeMedia,
    /// Stop reading anything (signaling and both media sockets) for this
    /// long, then carry on: a slow consumer, or a process stopped in a
    /// debugger. The kernel drops what overflows the socket buffers.
    Stall(Duration),
    /// Send any message.
    Send(ClientMessage),
    /// Send `track_settings`: what this subscriber wants of a track
    /// (quality, size, on/off).
    TrackSettings(TrackSettings),
    /// Change the estimate a weak subscriber reports in its REMB (bits/s);
    /// only for a client started with `max_receive_bitrate`.
    SetReceiveBitrate(u64),
}

pub struct MediaClient {
    pub state: Arc<Mutex<ClientState>>,
    cmd: mpsc::Sender<ClientCommand>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl MediaClient {
    /// Connects, joins, starts publishing; returns once `joined` arrived.
    pub async fn start(opts: ClientOptions) -> anyhow::Result<MediaClient> {
        let mut sig = Signaling::connect(&opts.url).await?;
        sig.send(ClientMessage::Join(Join {
            room: opts.room.clone(),
            name: opts.name.clone(),
            token: opts.token.clone(),
            identity: opts.identity.clone(),
        }))
        .await?;
        let joined = sig.recv_timeout(Duration::from_secs(10)).await?;
        let ServerMessage::Joined(j) = &joined.msg else {
            bail!("expected joined, got {:?}", joined.msg);
        };
        let state = Arc::new(Mutex::new(ClientState {
            participant_id: Some(j.participant_id.clone()),
            messages: vec![joined.msg.clone()],
            ..Default::default()
        }));
        let (cmd, rx) = mpsc::channel(64);
        let driver = Driver::new(opts, Mode::Socket, Some(sig), state.clone(), rx).await?;
        let task = tokio::spawn(driver.run());
        Ok(MediaClient { state, cmd, task })
    }

    /// A WHIP publisher: `opts.url` is the server's base URL
    /// (`http://127.0.0.1:8080`); publishes into `opts.room`.
    pub async fn start_whip(opts: ClientOptions) -> anyhow::Result<MediaClient> {
        Self::start_http(opts, Mode::Whip).await
    }

    /// A WHEP viewer of `opts.room` (or of one participant's tracks).
    pub async fn start_whep(
        opts: ClientOptions,
        participant: Option<String>,
    ) -> anyhow::Result<MediaClient> {
        Self::start_http(opts, Mode::Whep { participant }).await
    }

    /// A publisher in a Janus VideoRoom: `opts.url` is Janus's HTTP API
    /// (`http://10.77.0.2:8088/janus`), `opts.room` the numeric room id
    /// (created if missing). Its feed id is in `ClientState::janus_feed`.
    pub async fn start_janus_publisher(opts: ClientOptions) -> anyhow::Result<MediaClient> {
        Self::start_http(opts, Mode::Janus { feed: None }).await
    }

    /// A subscriber to one Janus VideoRoom publisher (`feed`).
    pub async fn start_janus_viewer(opts: ClientOptions, feed: u64) -> anyhow::Result<MediaClient> {
        Self::start_http(opts, Mode::Janus { feed: Some(feed) }).await
    }

    async fn start_http(opts: ClientOptions, mode: Mode) -> anyhow::Result<MediaClient> {
        let state = Arc::new(Mutex::new(ClientState::default()));
        let (cmd, rx) = mpsc::channel(64);
        let driver = Driver::new(opts, mode, None, state.clone(), rx).await?;
        let task = tokio::spawn(driver.run());
        Ok(MediaClient { state, cmd, task })
    }

    pub fn snapshot(&self) -> ClientState {
        self.state.lock().expect("state lock poisoned").clone()
    }

    pub async fn command(&self, c: ClientCommand) -> anyhow::Result<()> {
        self.cmd
            .send(c)
            .await
            .map_err(|_| anyhow!("client task ended"))
    }

    /// Ends the client abruptly: sockets close, nothing is said to the server.
    pub fn kill(self) {
        self.task.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until `pred` holds for the client's state.
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&ClientState) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if pred(&self.state.lock().expect("state lock poisoned")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out after {limit:?} waiting for: {what}");
            }
            if self.task.is_finished() {
                bail!("client task ended while waiting for: {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How the client negotiates.
#[derive(Debug, Clone)]
enum Mode {
    /// WebSocket signaling (`/ws`): both legs.
    Socket,
    /// WHIP: POST the publish leg's offer to `{base}/whip/{room}`.
    Whip,
    /// WHEP: POST a recvonly offer to `{base}/whep/{room}` (optionally
    /// `?participant=` one publisher).
    Whep { participant: Option<String> },
    /// Janus VideoRoom over its HTTP API: a publisher, or a subscriber to
    /// `feed`.
    Janus { feed: Option<u64> },
}

struct Driver {
    opts: ClientOptions,
    mode: Mode,
    /// The WebSocket (Socket mode only).
    sig: Option<Signaling>,
    /// The WHIP/WHEP session URL (from `Location`), for DELETE.
    session_url: Option<String>,
    http: reqwest::Client,
    janus: Option<crate::janus::JanusHandle>,
    state: Arc<Mutex<ClientState>>,
    cmds: mpsc::Receiver<ClientCommand>,
    publish: Option<LegConn>,
    subscribe: Option<LegConn>,
    out: Vec<OutTrack>,
    frozen: bool,
    /// A weak subscriber's next REMB, and the estimate it reports.
    next_remb_at: Option<Instant>,
    receive_bitrate: Option<u64>,
}

impl Driver {
    async fn new(
        opts: ClientOptions,
        mode: Mode,
        sig: Option<Signaling>,
        state: Arc<Mutex<ClientState>>,
        cmds: mpsc::Receiver<ClientCommand>,
    ) -> anyhow::Result<Driver> {
        let viewing = matches!(mode, Mode::Whep { .. });
        let janus = match &mode {
            Mode::Janus { .. } => Some(crate::janus::JanusHandle::attach(&opts.url).await?),
            _ => None,
        };
        let janus_feed = match mode {
            Mode::Janus { feed } => feed,
            _ => None,
        };
        let mut d = Driver::idle(opts, mode, sig, state, cmds)?;
        d.janus = janus;
        if let Some(feed) = janus_feed {
            d.start_janus_viewing(feed).await?;
        } else if viewing {
            d.start_viewing().await?;
        } else if d.opts.publish_audio || d.opts.publish_video {
            d.start_publishing().await?;
        }
        Ok(d)
    }

    /// A driver with no leg yet.
    fn idle(
        opts: ClientOptions,
        mode: Mode,
        sig: Option<Signaling>,
        state: Arc<Mutex<ClientState>>,
        cmds: mpsc::Receiver<ClientCommand>,
    ) -> anyhow::Result<Driver> {
        Ok(Driver {
            receive_bitrate: opts.max_receive_bitrate,
            opts,
            mode,
            sig,
            session_url: None,
            // No request may hang a test or a load run forever.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?,
            janus: None,
            state,
            cmds,
            publish: None,
            subscribe: None,
            out: Vec::new(),
            frozen: false,
            next_remb_at: None,
        })
    }

    /// Creates the publish leg with its tracks; returns its offer and the
    /// tracks' declaration.
    async fn publish_offer(&mut self) -> anyhow::Result<(String, Vec<TrackDecl>)> {
        let setup = LegSetup {
            // Simulcast: no RTX for the video (see `publish`).
            only_video_codec: publish::simulcast_layers(&self.opts)
                .map(|_| self.opts.video_codec.clone()),
            no_twcc: false,
        };
        let mut leg = LegConn::new(self.opts.bind_ip, &setup).await?;
        self.add_published_tracks(&mut leg)?;
        let sdp = leg.offer()?;
        let tracks = self.track_decls(&sdp);
        self.publish = Some(leg);
        Ok((sdp, tracks))
    }

    async fn start_publishing(&mut self) -> anyhow::Result<()> {
        let (sdp, tracks) = self.publish_offer().await?;
        match self.mode {
            Mode::Socket => {
                self.signaling()?
                    .send(ClientMessage::Offer(Offer {
                        leg: Leg::Publish,
                        sdp,
                        tracks,
                    }))
                    .await?;
            }
            Mode::Janus { .. } => {
                let janus = self.janus.as_ref().expect("attached in new");
                let room = janus_room(&self.opts.room)?;
                janus.create_room(room, 1000).await?;
                let (feed, answer) = janus.publish(room, &self.opts.name, sdp).await?;
                self.state.lock().expect("state lock").janus_feed = Some(feed);
                self.apply_publish_answer(answer, Vec::new())?;
            }
            _ => {
                let answer = self.post_offer("whip", sdp).await?;
                self.apply_publish_answer(answer, Vec::new())?;
            }
        }
        Ok(())
    }

    fn signaling(&mut self) -> anyhow::Result<&mut Signaling> {
        self.sig
            .as_mut()
            .ok_or_else(|| anyhow!("no signaling socket in WHIP/WHEP mode"))
    }

    /// The publish leg's answer: apply it and learn each sender's payload type.
    fn apply_publish_answer(
        &mut self,
        mut sdp: String,
        tracks: Vec<MidTrack>,
    ) -> anyhow::Result<()> {
        self.note_candidates(&sdp);
        if let Some(via) = self.opts.media_via {
            sdp = redirect_candidates(&sdp, via);
        }
        let Some(leg) = self.publish.as_mut() else {
            return Ok(());
        };
        leg.pc
            .set_remote_description(Instant::now(), RTCSessionDescription::answer(sdp)?)
            .context("publish answer")?;
        self.learn_send_parameters();
        self.state.lock().expect("state lock").published = tracks;
        Ok(())
    }

    /// How a receiving leg is set up: a weak subscriber reports its cap in
    /// REMB, which the server only reads when no TWCC feedback arrives.
    fn receive_setup(&self) -> LegSetup {
        LegSetup {
            only_video_codec: None,
            no_twcc: self.opts.max_receive_bitrate.is_some(),
        }
    }

    /// A weak subscriber's REMB, once a second while its subscribe leg is
    /// up, naming the SSRCs it receives.
    fn send_remb(&mut self, now: Instant) {
        let (Some(bps), Some(due)) = (self.receive_bitrate, self.next_remb_at) else {
            return;
        };
        if now < due {
            return;
        }
        self.next_remb_at = Some(now + Duration::from_secs(1));
        let Some(leg) = self.subscribe.as_mut().filter(|l| l.connected) else {
            return;
        };
        let ssrcs: Vec<u32> = {
            let st = self.state.lock().expect("state lock");
            st.received
                .values()
                .flat_map(|t| t.ssrcs.iter().copied())
                .collect()
        };
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: bps as f32,
            ssrcs,
        };
        let Some(id) = leg.pc.get_receivers().next() else {
            return;
        };
        if let Some(mut r) = leg.pc.rtp_receiver(id) {
            if r.write_rtcp(now, vec![Box::new(remb)]).is_ok() {
                self.state.lock().expect("state lock").rembs_sent += 1;
            }
        }
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let mut buf_p = vec![0u8; 2048];
        let mut buf_s = vec![0u8; 2048];
        let res = loop {
            self.drain();
            let now = Instant::now();
            let mut deadline = now + Duration::from_secs(1);
            for l in [self.publish.as_mut(), self.subscribe.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(t) = l.pc.poll_timeout() {
                    deadline = deadline.min(t);
                }
            }
            if self.publish.as_ref().is_some_and(|l| l.connected) {
                for o in &self.out {
                    deadline = deadline.min(o.next_at);
                }
            }
            if let Some(t) = self.next_remb_at {
                deadline = deadline.min(t);
            }
            let pub_sock = self.publish.as_ref().map(|l| &l.socket);
            let sub_sock = self.subscribe.as_ref().map(|l| &l.socket);
            tokio::select! {
                c = self.cmds.recv() => match c {
                    None => break Ok(()),
                    Some(c) => {
                        // A WHIP/WHEP (or Janus) client is done once its DELETE
                        // (or destroy) is answered.
                        let done = matches!(c, ClientCommand::Leave)
                            && (self.session_url.is_some() || self.janus.is_some());
                        if let Err(e) = self.on_command(c).await { break Err(e) }
                        if done { break Ok(()) }
                    }
                },
                m = recv_sig(self.sig.as_mut()) => match m {
                    Ok(Some(env)) => if let Err(e) = self.on_server(env.msg).await { break Err(e) },
                    Ok(None) | Err(_) => {
                        self.state.lock().expect("state lock").closed = true;
                        break Ok(());
                    }
                },
                r = recv_opt(pub_sock, &mut buf_p) => if let Some((n, from)) = r {
                    if let Some(l) = self.publish.as_mut() { l.read(&buf_p[..n], from) }
                },
                r = recv_opt(sub_sock, &mut buf_s) => if let Some((n, from)) = r {
                    if let Some(l) = self.subscribe.as_mut() { l.read(&buf_s[..n], from) }
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    for l in [self.publish.as_mut(), self.subscribe.as_mut()].into_iter().flatten() {
                        let _ = l.pc.handle_timeout(now);
                    }
                    self.send_media(now);
                    self.send_remb(now);
                }
            }
        };
        self.state.lock().expect("state lock").closed = true;
        res
    }

    fn drain(&mut self) {
        let state = &self.state;
        let full = self.opts.record_packets;
        let mut requests: Vec<u32> = Vec::new();
        if self.receive_bitrate.is_some()
            && self.next_remb_at.is_none()
            && self.subscribe.as_ref().is_some_and(|l| l.connected)
        {
            // The first REMB as soon as the leg is up: the server's
            // allocator should never see this subscriber uncapped.
            self.next_remb_at = Some(Instant::now());
        }
        for (is_pub, leg) in [
            (true, self.publish.as_mut()),
            (false, self.subscribe.as_mut()),
        ] {
            let Some(l) = leg else { continue };
            while let Some(w) = l.pc.poll_write() {
                let _ = l.socket.try_send_to(&w.message, w.transport.peer_addr);
            }
            while let Some(ev) = l.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                    let up = s == RTCPeerConnectionState::Connected;
                    let was_up = std::mem::replace(&mut l.connected, up);
                    let mut st = state.lock().expect("state lock");
                    if was_up && !up {
                        st.disconnects += 1;
                    }
                    if is_pub {
                        st.publish_connected = up;
                    } else {
                        st.subscribe_connected = up;
                    }
                }
            }
            while let Some(m) = l.pc.poll_read() {
                match m.message {
                    RTCMessage::RtpPacket(track_id, pkt) => {
                        let mut st = state.lock().expect("state lock");
                        st.first_packet_at.get_or_insert_with(Instant::now);
                        record(&mut st, track_id, &pkt, full);
                    }
                    RTCMessage::RtcpPacket(_, pkts) if !is_pub => {
                        let mut st = state.lock().expect("state lock");
                        for p in &pkts {
                            if let Some(bye) = p.as_any().downcast_ref::<Goodbye>() {
                                st.byes.extend(bye.sources.iter().copied());
                            }
                            if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                                st.sender_reports.push((
                                    sr.ssrc,
                                    sr.ntp_time,
                                    sr.rtp_time,
                                    sr.packet_count,
                                    now_us(),
                                ));
                            }
                        }
                    }
                    RTCMessage::RtcpPacket(_, pkts) if is_pub => {
                        for p in &pkts {
                            let any = p.as_any();
                            if let Some(remb) =
                                any.downcast_ref::<ReceiverEstimatedMaximumBitrate>()
                            {
                                state
                                    .lock()
                                    .expect("state lock")
                                    .rembs
                                    .push(remb.bitrate as u64);
                                continue;
                            }
                            let ssrcs: Vec<u32> =
                                if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                                    vec![pli.media_ssrc]
                                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                                    fir.fir.iter().map(|e| e.ssrc).collect()
                                } else {
                                    continue;
                                };
                            requests.extend(ssrcs);
                        }
                    }
                    _ => {}
                }
            }
        }
        // A keyframe request for one of our streams: the next frame of
        // that stream is a keyframe, as a real encoder would do.
        if !requests.is_empty() {
            self.on_keyframe_request(&requests);
        }
    }

    async fn on_command(&mut self, c: ClientCommand) -> anyhow::Result<()> {
        if let (ClientCommand::Leave, Some(j)) = (&c, &self.janus) {
            j.destroy().await?;
            return Ok(());
        }
        match c {
            ClientCommand::Leave => match &self.session_url {
                // WHIP/WHEP: DELETE the session.
                Some(url) => {
                    let status = {
                        let mut req = self.http.delete(url);
                        if let Some(t) = &self.opts.token {
                            req = req.bearer_auth(t);
                        }
                        req.send().await?.status().as_u16()
                    };
                    self.state.lock().expect("state lock").delete_status = Some(status);
                }
                None => {
                    self.signaling()?
                        .send(ClientMessage::Leave(Default::default()))
                        .await?
                }
            },
            ClientCommand::Mute(t) => {
                self.signaling()?
                    .send(ClientMessage::Mute(TrackRef { track_id: t }))
                    .await?
            }
            ClientCommand::Unmute(t) => {
                self.signaling()?
                    .send(ClientMessage::Unmute(TrackRef { track_id: t }))
                    .await?
            }
            ClientCommand::FreezeMedia => {
                self.frozen = true;
                self.publish = None;
                self.subscribe = None;
            }
            ClientCommand::Stall(d) => tokio::time::sleep(d).await,
            ClientCommand::Send(m) => self.signaling()?.send(m).await?,
            ClientCommand::TrackSettings(t) => {
                self.signaling()?
                    .send(ClientMessage::TrackSettings(t))
                    .await?
            }
            ClientCommand::SetReceiveBitrate(bps) => {
                if self.receive_bitrate.is_some() {
                    self.receive_bitrate = Some(bps);
                    // Say it now, not at the next tick.
                    self.next_remb_at = self.next_remb_at.map(|_| Instant::now());
                }
            }
        }
        Ok(())
    }

    async fn on_server(&mut self, msg: ServerMessage) -> anyhow::Result<()> {
        {
            let mut st = self.state.lock().expect("state lock");
            st.messages.push(msg.clone());
            match &msg {
                ServerMessage::Error(e) => st.errors.push(e.clone()),
                ServerMessage::TrackPaused(p) => {
                    st.paused_tracks.insert(p.track_id.clone());
                    st.track_pauses += 1;
                }
                ServerMessage::TrackResumed(r) => {
                    st.paused_tracks.remove(&r.track_id);
                    st.track_resumes += 1;
                }
                ServerMessage::LayersWanted(w) => st.layers_wanted.push(w.clone()),
                _ => {}
            }
        }
        if let ServerMessage::LayersWanted(w) = &msg {
            self.on_layers_wanted(w);
        }
        match msg {
            ServerMessage::Answer(a) if a.leg == Leg::Publish && !self.frozen => {
                self.apply_publish_answer(a.sdp, a.tracks)?;
            }
            ServerMessage::Offer(mut o) if o.leg == Leg::Subscribe && !self.frozen => {
                self.note_candidates(&o.sdp);
                if let Some(via) = self.opts.media_via {
                    o.sdp = redirect_candidates(&o.sdp, via);
                }
                if self.subscribe.is_none() {
                    self.subscribe =
                        Some(LegConn::new(self.opts.bind_ip, &self.receive_setup()).await?);
                }
                let leg = self.subscribe.as_mut().expect("created just above");
                let sdp = leg.answer(o.sdp).context("subscribe offer")?;
                self.state.lock().expect("state lock").offers += 1;
                self.signaling()?
                    .send(ClientMessage::Answer(Answer {
                        leg: Leg::Subscribe,
                        sdp,
                    }))
                    .await?;
                // Trickle is not needed (our candidate is in the SDP); say so.
                self.signaling()?
                    .send(ClientMessage::Candidate(Candidate {
                        leg: Leg::Subscribe,
                        candidate: None,
                    }))
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    fn note_candidates(&self, sdp: &str) {
        let mut st = self.state.lock().expect("state lock");
        for l in sdp.lines() {
            if let Some(c) = l.trim_end().strip_prefix("a=candidate:") {
                st.server_candidates.push(c.to_owned());
            }
        }
        let first = |key: &str| {
            sdp.lines()
                .find_map(|l| l.trim_end().strip_prefix(key).map(str::to_owned))
        };
        if let (Some(u), Some(p)) = (first("a=ice-ufrag:"), first("a=ice-pwd:")) {
            if !st.server_ice.iter().any(|(x, _)| *x == u) {
                st.server_ice.push((u, p));
            }
        }
    }
}

/// The numeric Janus VideoRoom id of `room`.
fn janus_room(room: &str) -> anyhow::Result<u64> {
    room.parse()
        .map_err(|_| anyhow!("a Janus VideoRoom room id is a number, not {room:?}"))
}

async fn recv_sig(
    s: Option<&mut Signaling>,
) -> anyhow::Result<Option<prism_signal::ServerEnvelope>> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_opt(s: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
