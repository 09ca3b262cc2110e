//! Configuration: embedded defaults, then a TOML file (`--config`), then
//! `PRISM_*` environment variables, then command-line flags, each overriding
//! the one before. Every default works on a fresh machine (dev mode on
//! loopback). `docs/configuration.md` documents each key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A secret that never shows in debug output (`prism print-config`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes, redacted>", self.0.len())
    }
}

/// The most a publisher is asked (REMB) to send per video track, in bits per
/// second. Never below [`PublishBitrate::MIN`], the floor of every REMB, so
/// the shard's `clamp(MIN, cap)` cannot panic, however the config was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishBitrate(u64);

impl PublishBitrate {
    /// The least bitrate a publisher is ever asked for: 100 kbit/s.
    pub const MIN: PublishBitrate = PublishBitrate(100_000);

    pub fn new(bps: u64) -> Result<PublishBitrate, String> {
        if bps < Self::MIN.0 {
            return Err(format!(
                "must be at least {} (bits per second), got {bps}",
                Self::MIN.0
            ));
        }
        Ok(PublishBitrate(bps))
    }

    /// For clap: a number of bits per second.
    pub fn parse(s: &str) -> Result<PublishBitrate, String> {
        let bps: u64 = s.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
        PublishBitrate::new(bps)
    }

    pub fn bps(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for PublishBitrate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PublishBitrate::new(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A STUN or TURN server offered to WHIP/WHEP clients (`Link` headers).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// e.g. `stun:stun.example.net:3478` or `turn:turn.example.net?transport=udp`.
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// The effective configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP server (WebSocket signaling, health).
    pub http_addr: SocketAddr,
    /// Address the media UDP sockets bind to. Never a wildcard: a socket bound
    /// to 0.0.0.0 may answer from another address than the client sent to.
    pub media_ip: IpAddr,
    /// First media UDP port; shard i listens on `udp_port + i`. 0 picks free ports.
    pub udp_port: u16,
    /// ICE-TCP (RFC 6544 passive candidates): each shard also accepts TCP
    /// connections, for clients whose network blocks UDP.
    pub ice_tcp: bool,
    /// First ICE-TCP port; shard i listens on `tcp_port + i`. Unset: the same
    /// numbers as `udp_port` (free ports when that is 0). 0 picks free ports.
    pub tcp_port: Option<u16>,
    /// Addresses put in ICE candidates (NAT 1:1 / public IPs). Empty: `media_ip`.
    pub advertised_ips: Vec<IpAddr>,
    /// Media shards (one UDP socket and one thread each). 0: one per CPU core.
    pub shards: usize,
    /// A participant whose media connection is silent this long is removed.
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
    /// An empty room closes after this long.
    #[serde(with = "humantime_serde")]
    pub room_empty_timeout: Duration,
    /// A publish leg that carried media and then received nothing (no RTP,
    /// RTCP or consent check) this long is a dead publisher: removed sooner
    /// than `peer_timeout` (the shorter of the two applies).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Forward rid simulcast layers (per-subscriber allocation). Off: every
    /// simulcast offer is narrowed to one encoding.
    pub simulcast: bool,
    /// Tell simulcast publishers which layers nobody takes (`layers_wanted`).
    pub dynacast: bool,
    /// A WHEP viewer whose broadcast has had no publisher this long is told
    /// the broadcast ended and its session is closed.
    #[serde(with = "humantime_serde")]
    pub broadcast_grace: Duration,
    /// `text` (human) or `json` logs.
    pub log_format: LogFormat,
    /// At most one keyframe request (PLI) per published video track within this window.
    #[serde(with = "humantime_serde")]
    pub keyframe_throttle: Duration,
    /// Retransmission history per published video stream: packets kept.
    pub video_history_packets: usize,
    /// ... and how long a packet stays retransmittable.
    #[serde(with = "humantime_serde")]
    pub video_history_age: Duration,
    /// Retransmission history per published audio stream: packets kept.
    pub audio_history_packets: usize,
    #[serde(with = "humantime_serde")]
    pub audio_history_age: Duration,
    /// A NACK for a packet retransmitted less than this ago is ignored.
    #[serde(with = "humantime_serde")]
    pub nack_min_interval: Duration,
    /// The most a publisher is asked (REMB) to send per video track, bits/s.
    pub max_publish_bitrate: PublishBitrate,
    /// STUN/TURN servers announced to WHIP/WHEP clients.
    pub ice_servers: Vec<IceServer>,
    /// On SIGTERM, how long to wait for participants to leave before exiting.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Serve the web client from this folder instead of the embedded copy.
    pub web_dir: Option<PathBuf>,
    /// Access-token signing secrets (HS256, ≥ 32 bytes each; the first signs
    /// new tokens). None: dev mode, loopback only.
    pub keys: Vec<Secret>,
    /// Most participants (WebSocket, WHIP and WHEP) in one room.
    pub max_participants_per_room: usize,
    /// Most published tracks (publish-leg m-sections) per participant.
    pub max_tracks_per_participant: usize,
    /// Most rooms open on this node.
    pub max_rooms: usize,
    /// Signaling messages per second per WebSocket (bursts of twice that).
    pub max_signal_rate: u32,
    /// WHIP/WHEP requests per minute per client IP address (all at once is fine).
    pub max_http_rate: u32,
    /// A WebSocket that has not joined a room this long after it opened is
    /// sent an `error` and closed.
    #[serde(with = "humantime_serde")]
    pub ws_join_timeout: Duration,
    /// A TCP connection to the HTTP port that sends no byte this long after
    /// it was accepted is closed (and counted).
    #[serde(with = "humantime_serde")]
    pub http_first_byte_timeout: Duration,
    /// Most concurrent WebSockets from one client IP address; over it the
    /// upgrade is refused with 429.
    pub max_ws_per_address: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            udp_port: 50000,
            ice_tcp: true,
            tcp_port: None,
            advertised_ips: Vec::new(),
            shards: 1,
            peer_timeout: Duration::from_secs(15),
            room_empty_timeout: Duration::from_secs(20),
            publish_timeout: Duration::from_secs(8),
            broadcast_grace: Duration::from_secs(60),
            simulcast: true,
            dynacast: true,
            log_format: LogFormat::Text,
            keyframe_throttle: Duration::from_millis(500),
            video_history_packets: 1024,
            video_history_age: Duration::from_secs(2),
            audio_history_packets: 1024,
            audio_history_age: Duration::from_secs(1),
            nack_min_interval: Duration::from_millis(30),
            max_publish_bitrate: PublishBitrate(3_000_000),
            ice_servers: Vec::new(),
            drain_timeout: Duration::from_secs(60),
            web_dir: None,
            keys: Vec::new(),
            max_participants_per_room: 10_000,
            max_tracks_per_participant: 16,
            max_rooms: 10_000,
            max_signal_rate: 50,
            max_http_rate: 120,
            ws_join_timeout: Duration::from_secs(10),
            http_first_byte_timeout: Duration::from_secs(10),
            max_ws_per_address: 32,
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "prism",
    version,
    about = "Prism: a WebRTC selective forwarding unit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration (after file, environment and flags) and exit.
    PrintConfig,
    /// Mint an access token with the configured key (config `keys` or PRISM_KEYS).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The room the token is for.
    #[arg(long)]
    pub room: String,
    /// The holder's identity (`sub`): a second join with it replaces the first.
    #[arg(long)]
    pub identity: String,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Allow publishing (default: publish and subscribe when neither is given).
    #[arg(long)]
    pub publish: bool,
    /// Allow subscribing.
    #[arg(long)]
    pub subscribe: bool,
    /// Allow data publishing.
    #[arg(long)]
    pub publish_data: bool,
    /// Allow admin actions.
    #[arg(long)]
    pub admin: bool,
    /// How long the token is valid, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// Flags and environment variables; each overrides the config file.
#[derive(Debug, Args, Default)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, env = "PRISM_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// HTTP listen address (signaling, health) [default: 127.0.0.1:8080].
    #[arg(long, env = "PRISM_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// IP the media UDP sockets bind to [default: 127.0.0.1].
    #[arg(long, env = "PRISM_MEDIA_IP")]
    pub media_ip: Option<IpAddr>,
    /// First media UDP port; shard i uses port + i; 0 picks free ports [default: 50000].
    #[arg(long, env = "PRISM_UDP_PORT")]
    pub udp_port: Option<u16>,
    /// Accept ICE over TCP on each shard (true/false) [default: true].
    #[arg(long, env = "PRISM_ICE_TCP")]
    pub ice_tcp: Option<bool>,
    /// First ICE-TCP port; shard i uses port + i; 0 picks free ports [default: udp_port].
    #[arg(long, env = "PRISM_TCP_PORT")]
    pub tcp_port: Option<u16>,
    /// Comma-separated IPs advertised in ICE candidates [default: the media IP].
    #[arg(long, env = "PRISM_ADVERTISED_IPS", value_delimiter = ',')]
    pub advertised_ips: Option<Vec<IpAddr>>,
    /// Media shards; 0 = one per CPU core [default: 1].
    #[arg(long, env = "PRISM_SHARDS")]
    pub shards: Option<usize>,
    /// Remove a participant whose media is silent this long, e.g. 15s [default: 15s].
    #[arg(long, env = "PRISM_PEER_TIMEOUT", value_parser = humantime::parse_duration)]
    pub peer_timeout: Option<Duration>,
    /// Close an empty room after this long, e.g. 20s [default: 20s].
    #[arg(long, env = "PRISM_ROOM_EMPTY_TIMEOUT", value_parser = humantime::parse_duration)]
    pub room_empty_timeout: Option<Duration>,
    /// Remove a publisher whose publish leg went silent this long, e.g. 8s [default: 8s].
    #[arg(long, env = "PRISM_PUBLISH_TIMEOUT", value_parser = humantime::parse_duration)]
    pub publish_timeout: Option<Duration>,
    /// End a broadcast (for its WHEP viewers) after this long without a publisher [default: 60s].
    #[arg(long, env = "PRISM_BROADCAST_GRACE", value_parser = humantime::parse_duration)]
    pub broadcast_grace: Option<Duration>,
    /// Forward simulcast layers per subscriber; false narrows simulcast offers to one encoding [default: true].
    #[arg(long, env = "PRISM_SIMULCAST")]
    pub simulcast: Option<bool>,
    /// Tell simulcast publishers which layers nobody takes, so they can stop encoding them [default: true].
    #[arg(long, env = "PRISM_DYNACAST")]
    pub dynacast: Option<bool>,
    /// Log format [default: text].
    #[arg(long, env = "PRISM_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// At most one PLI per video track upstream within this window [default: 500ms].
    #[arg(long, env = "PRISM_KEYFRAME_THROTTLE", value_parser = humantime::parse_duration)]
    pub keyframe_throttle: Option<Duration>,
    /// Packets kept per published video stream for retransmission [default: 1024].
    #[arg(long, env = "PRISM_VIDEO_HISTORY_PACKETS")]
    pub video_history_packets: Option<usize>,
    /// Age limit of the video retransmission history [default: 2s].
    #[arg(long, env = "PRISM_VIDEO_HISTORY_AGE", value_parser = humantime::parse_duration)]
    pub video_history_age: Option<Duration>,
    /// Packets kept per published audio stream for retransmission [default: 1024].
    #[arg(long, env = "PRISM_AUDIO_HISTORY_PACKETS")]
    pub audio_history_packets: Option<usize>,
    /// Age limit of the audio retransmission history [default: 1s].
    #[arg(long, env = "PRISM_AUDIO_HISTORY_AGE", value_parser = humantime::parse_duration)]
    pub audio_history_age: Option<Duration>,
    /// Ignore a NACK for a packet retransmitted less than this ago [default: 30ms].
    #[arg(long, env = "PRISM_NACK_MIN_INTERVAL", value_parser = humantime::parse_duration)]
    pub nack_min_interval: Option<Duration>,
    /// Most a publisher is asked (REMB) to send per video track, bits/s [default: 3000000].
    #[arg(long, env = "PRISM_MAX_PUBLISH_BITRATE", value_parser = PublishBitrate::parse)]
    pub max_publish_bitrate: Option<PublishBitrate>,
    /// Comma-separated STUN/TURN URLs announced to WHIP/WHEP clients (no
    /// credentials; put servers with credentials in the config file).
    #[arg(long, env = "PRISM_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Option<Vec<String>>,
    /// On SIGTERM, wait this long for participants to leave [default: 60s].
    #[arg(long, env = "PRISM_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Serve the web client from this folder (development) instead of the embedded copy.
    #[arg(long, env = "PRISM_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Comma-separated access-token signing secrets (≥ 32 bytes each).
    #[arg(
        long,
        env = "PRISM_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub keys: Option<Vec<String>>,
    /// Most participants in one room [default: 10000].
    #[arg(long, env = "PRISM_MAX_PARTICIPANTS_PER_ROOM")]
    pub max_participants_per_room: Option<usize>,
    /// Most published tracks per participant [default: 16].
    #[arg(long, env = "PRISM_MAX_TRACKS_PER_PARTICIPANT")]
    pub max_tracks_per_participant: Option<usize>,
    /// Most rooms open on this node [default: 10000].
    #[arg(long, env = "PRISM_MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    /// Signaling messages per second per WebSocket, bursts of twice that [default: 50].
    #[arg(long, env = "PRISM_MAX_SIGNAL_RATE")]
    pub max_signal_rate: Option<u32>,
    /// WHIP/WHEP requests per minute per client IP address [default: 120].
    #[arg(long, env = "PRISM_MAX_HTTP_RATE")]
    pub max_http_rate: Option<u32>,
    /// Close a WebSocket that has not joined a room this long after opening [default: 10s].
    #[arg(long, env = "PRISM_WS_JOIN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub ws_join_timeout: Option<Duration>,
    /// Close an HTTP connection that sends nothing this long after it was accepted [default: 10s].
    #[arg(long, env = "PRISM_HTTP_FIRST_BYTE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub http_first_byte_timeout: Option<Duration>,
    /// Most concurrent WebSockets per client IP address [default: 32].
    #[arg(long, env = "PRISM_MAX_WS_PER_ADDRESS")]
    pub max_ws_per_address: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults ← file ← environment/flags (clap has already merged the last two,
    /// flags winning).
    pub fn load(o: &Overrides) -> Result<Config, ConfigError> {
        let mut c = match &o.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: path.clone(),
                    message,
                })?
            }
            None => Config::default(),
        };
        if let Some(v) = o.http_addr {
            c.http_addr = v;
        }
        if let Some(v) = o.media_ip {
            c.media_ip = v;
        }
        if let Some(v) = o.udp_port {
            c.udp_port = v;
        }
        if let Some(v) = o.ice_tcp {
            c.ice_tcp = v;
        }
        if let Some(v) = o.tcp_port {
            c.tcp_port = Some(v);
        }
        if let Some(v) = &o.advertised_ips {
            c.advertised_ips = v.clone();
        }
        if let Some(v) = o.shards {
            c.shards = v;
        }
        if let Some(v) = o.peer_timeout {
            c.peer_timeout = v;
        }
        if let Some(v) = o.room_empty_timeout {
            c.room_empty_timeout = v;
        }
        if let Some(v) = o.publish_timeout {
            c.publish_timeout = v;
        }
        if let Some(v) = o.broadcast_grace {
            c.broadcast_grace = v;
        }
        if let Some(v) = o.simulcast {
            c.simulcast = v;
        }
        if let Some(v) = o.dynacast {
            c.dynacast = v;
        }
        if let Some(v) = o.log_format {
            c.log_format = v;
        }
        if let Some(v) = o.keyframe_throttle {
            c.keyframe_throttle = v;
        }
        if let Some(v) = o.video_history_packets {
            c.video_history_packets = v;
        }
        if let Some(v) = o.video_history_age {
            c.video_history_age = v;
        }
        if let Some(v) = o.audio_history_packets {
            c.audio_history_packets = v;
        }
        if let Some(v) = o.audio_history_age {
            c.audio_history_age = v;
        }
        if let Some(v) = o.nack_min_interval {
            c.nack_min_interval = v;
        }
        if let Some(v) = o.max_publish_bitrate {
            c.max_publish_bitrate = v;
        }
        if let Some(v) = &o.keys {
            c.keys = v
                .iter()
                .filter(|k| !k.is_empty())
                .cloned()
                .map(Secret)
                .collect();
        }
        if let Some(v) = &o.web_dir {
            c.web_dir = Some(v.clone());
        }
        if let Some(v) = o.max_participants_per_room {
            c.max_participants_per_room = v;
        }
        if let Some(v) = o.max_tracks_per_participant {
            c.max_tracks_per_participant = v;
        }
        if let Some(v) = o.max_rooms {
            c.max_rooms = v;
        }
        if let Some(v) = o.max_signal_rate {
            c.max_signal_rate = v;
        }
        if let Some(v) = o.max_http_rate {
            c.max_http_rate = v;
        }
        if let Some(v) = o.ws_join_timeout {
            c.ws_join_timeout = v;
        }
        if let Some(v) = o.http_first_byte_timeout {
            c.http_first_byte_timeout = v;
        }
        if let Some(v) = o.max_ws_per_address {
            c.max_ws_per_address = v;
        }
        if let Some(v) = o.drain_timeout {
            c.drain_timeout = v;
        }
        if let Some(v) = &o.ice_servers {
            c.ice_servers = v
                .iter()
                .map(|u| IceServer {
                    urls: vec![u.clone()],
                    username: None,
                    credential: None,
                })
                .collect();
        }
        c.validate()?;
        Ok(c)
    }

    /// Parses a TOML document; unknown keys are an error naming the key.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::auth::Keys::new(&self.secrets()).map_err(ConfigError::Invalid)?;
        if self.media_ip.is_unspecified() {
            return Err(ConfigError::Invalid(format!(
                "media_ip {} is a wildcard; bind the media sockets to the address clients reach \
                 (a wildcard socket may answer from another address, and clients drop that)",
                self.media_ip
            )));
        }
        if let Some(ip) = self.advertised_ips.iter().find(|ip| ip.is_unspecified()) {
            return Err(ConfigError::Invalid(format!(
                "advertised_ips contains the wildcard {ip}; list the addresses clients reach"
            )));
        }
        // Secure by default: without keys anyone may join, so only loopback.
        if self.keys.is_empty() {
            let exposed: Vec<String> = [self.http_addr.ip(), self.media_ip]
                .into_iter()
                .filter(|ip| !ip.is_loopback())
                .map(|ip| ip.to_string())
                .collect();
            if !exposed.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "refusing to listen on {} without access-token keys: anyone could join. \
                     Set keys (config `keys = [\"…\"]` or PRISM_KEYS, at least 32 bytes each; \
                     e.g. PRISM_KEYS=$(openssl rand -base64 48)), or bind to 127.0.0.1 for dev mode",
                    exposed.join(" and ")
                )));
            }
        }
        for (name, n) in [
            ("video_history_packets", self.video_history_packets),
            ("audio_history_packets", self.audio_history_packets),
        ] {
            if !(16..=65536).contains(&n) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be 16..=65536, not {n}"
                )));
            }
        }
        for (name, n) in [
            ("max_participants_per_room", self.max_participants_per_room),
            (
                "max_tracks_per_participant",
                self.max_tracks_per_participant,
            ),
            ("max_rooms", self.max_rooms),
            ("max_signal_rate", self.max_signal_rate as usize),
            ("max_http_rate", self.max_http_rate as usize),
            ("max_ws_per_address", self.max_ws_per_address),
        ] {
            if n == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if self.max_tracks_per_participant > 64 {
            return Err(ConfigError::Invalid(
                "max_tracks_per_participant must be at most 64".into(),
            ));
        }
        if self.ws_join_timeout < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "ws_join_timeout must be at least 100ms".into(),
            ));
        }
        if self.http_first_byte_timeout < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "http_first_byte_timeout must be at least 100ms".into(),
            ));
        }
        if self.publish_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "publish_timeout must be at least 1s".into(),
            ));
        }
        if self.broadcast_grace < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "broadcast_grace must be at least 1s".into(),
            ));
        }
        if self.peer_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "peer_timeout must be at least 1s".into(),
            ));
        }
        if self.udp_port != 0 && (self.udp_port as usize + self.shard_count()) > 65536 {
            return Err(ConfigError::Invalid(format!(
                "udp_port {} + {} shards runs past port 65535",
                self.udp_port,
                self.shard_count()
            )));
        }
        let tcp = self.ice_tcp_port();
        if self.ice_tcp && tcp != 0 && (tcp as usize + self.shard_count()) > 65536 {
            return Err(ConfigError::Invalid(format!(
                "tcp_port {tcp} + {} shards runs past port 65535",
                self.shard_count()
            )));
        }
        Ok(())
    }

    /// The first ICE-TCP port (0: free ports): `tcp_port`, else `udp_port`.
    pub fn ice_tcp_port(&self) -> u16 {
        self.tcp_port.unwrap_or(self.udp_port)
    }

    /// The signing secrets as strings.
    pub fn secrets(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.0.clone()).collect()
    }

    /// The number of media shards to run.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.shards
        }
    }

    /// The IPs to put in ICE candidates.
    pub fn candidate_ips(&self) -> Vec<IpAddr> {
        if self.advertised_ips.is_empty() {
            vec![self.media_ip]
        } else {
            self.advertised_ips.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("http_addr = \"127.0.0.1:1\"\nudp_prot = 5\n").unwrap_err();
        assert!(err.contains("udp_prot"), "{err}");
    }

    #[test]
    fn a_publish_bitrate_below_the_floor_cannot_be_built() {
        // Before: a u64 validated only by Config::validate; a config built in
        // code skipped it and the shard's clamp(min, cap) panicked.
        assert!(PublishBitrate::new(99_999).is_err());
        assert_eq!(PublishBitrate::new(100_000), Ok(PublishBitrate::MIN));
        let err = Config::from_toml("max_publish_bitrate = 5000\n").unwrap_err();
        assert!(err.contains("at least 100000"), "{err}");
        assert!(PublishBitrate::parse("50").is_err());
        assert_eq!(PublishBitrate::parse("250000").unwrap().bps(), 250_000);
        // Every value a Config can hold keeps clamp's precondition.
        let c = Config::default();
        let cap = c.max_publish_bitrate.bps();
        assert_eq!(1u64.clamp(PublishBitrate::MIN.bps(), cap), 100_000);
    }

    #[test]
    fn file_values_and_durations() {
        let c = Config::from_toml(
            "udp_port = 40000\nshards = 0\npeer_timeout = \"3s\"\nroom_empty_timeout = \"1m\"\nadvertised_ips = [\"203.0.113.7\"]\n",
        )
        .unwrap();
        assert_eq!(c.udp_port, 40000);
        assert_eq!(c.peer_timeout, Duration::from_secs(3));
        assert_eq!(c.room_empty_timeout, Duration::from_secs(60));
        assert_eq!(
            c.candidate_ips(),
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        assert!(c.shard_count() >= 1);
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("prism-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, "udp_port = 40000\nshards = 3\n").unwrap();
        let o = Overrides {
            config: Some(path),
            udp_port: Some(41000),
            ..Default::default()
        };
        let c = Config::load(&o).unwrap();
        assert_eq!((c.udp_port, c.shards), (41000, 3));
    }

    #[test]
    fn exposed_without_keys_is_refused_and_short_keys_too() {
        let o = Overrides {
            http_addr: Some("0.0.0.0:8080".parse().unwrap()),
            ..Default::default()
        };
        let err = Config::load(&o).unwrap_err().to_string();
        assert!(
            err.contains("without access-token keys") && err.contains("PRISM_KEYS"),
            "{err}"
        );
        let o = Overrides {
            http_addr: Some("0.0.0.0:8080".parse().unwrap()),
            keys: Some(vec!["too-short".into()]),
            ..Default::default()
        };
        let err = Config::load(&o).unwrap_err().to_string();
        assert!(err.contains("at least 32 bytes"), "{err}");
        let o = Overrides {
            http_addr: Some("0.0.0.0:8080".parse().unwrap()),
            keys: Some(vec!["x".repeat(40)]),
            ..Default::default()
        };
        let c = Config::load(&o).unwrap();
        assert!(
            !format!("{c:?}").contains(&"x".repeat(40)),
            "keys are redacted"
        );
    }

    #[test]
    fn wildcard_media_ip_is_refused() {
        let o = Overrides {
            media_ip: Some("0.0.0.0".parse().unwrap()),
            ..Default::default()
        };
        let err = Config::load(&o).unwrap_err().to_string();
        assert!(err.contains("wildcard"), "{err}");
    }
}
