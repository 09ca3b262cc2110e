//! `prism-load`: drives simulated WebRTC participants against Prism (or, for
//! a side-by-side run, Janus's VideoRoom) and reports what the server paid
//! for them.
//!
//! Every participant is a real WebRTC endpoint (`rtc` peer connections on
//! their own UDP sockets, ICE, DTLS, SRTP) that publishes synthetic Opus and
//! VP8 (a send timestamp and sequence in every payload) and counts, verifies
//! and times what it receives, without decoding. See docs/performance.md.
//!
//! **Simulcast** (Prism only). `--simulcast` makes every publisher send its
//! video as three rid layers (q 320×180 150 kbit/s, h 640×360 500 kbit/s,
//! f 1280×720 1.5 Mbit/s) the way a browser does; `--weak-subscribers N
//! --weak-bitrate 300k` makes the last N receivers report that estimate in
//! REMB (with no TWCC, so the server takes it). The report then has one row
//! per layer and group of receivers (`weak`, `others`, or `all`): kbit/s of
//! that layer per receiver during the hold, and on how many received tracks
//! it is the current layer at the end, each layer known from the payload's
//! probe. With simulcast, `delivered` compares against every layer the
//! publishers sent, so it is not a loss figure: read the layer rows.

mod proc;
mod report;
mod simulcast;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use prism_client::{ClientCommand, ClientOptions, Histogram, LayerSpec, MediaClient};

use report::Report;

#[derive(Parser)]
#[command(
    name = "prism-load",
    version,
    about = "Load generator for Prism (and Janus, side by side)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// R rooms of P participants, each publishing Opus + VP8 and receiving
    /// the others.
    Conference {
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        #[arg(long, default_value_t = 4)]
        participants: usize,
        #[command(flatten)]
        common: Common,
    },
    /// One publisher (Opus + VP8) to N viewers.
    Broadcast {
        #[arg(long, default_value_t = 50)]
        viewers: usize,
        /// Prism: viewers use WHEP instead of the WebSocket.
        #[arg(long)]
        whep: bool,
        /// Prism: the publisher uses WHIP instead of the WebSocket.
        #[arg(long)]
        whip: bool,
        #[command(flatten)]
        common: Common,
    },
    /// S speakers (Opus only, hearing each other) to L listeners.
    Audio {
        #[arg(long, default_value_t = 4)]
        speakers: usize,
        #[arg(long, default_value_t = 100)]
        listeners: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Prints two or more `--json` reports side by side, with ratios to the
    /// first.
    Compare { reports: Vec<std::path::PathBuf> },
    /// Prints (as JSON) the field-by-field median of several reports of the
    /// same shape and target.
    Median { reports: Vec<std::path::PathBuf> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    Prism,
    Janus,
}

#[derive(Args, Clone)]
struct Common {
    /// Which server API to drive.
    #[arg(long, value_enum, default_value_t = Target::Prism)]
    target: Target,
    /// Prism's HTTP address, or Janus's HTTP API
    /// (default http://127.0.0.1:8080 or http://10.77.0.2:8088/janus).
    #[arg(long)]
    url: Option<String>,
    /// The server's pid, for its CPU time and RSS (default: the newest
    /// process named `prism` or `janus`).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Local address for the clients' media sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: IpAddr,
    /// Prism's token signing key (one of its `keys` / PRISM_KEYS): each
    /// participant gets its own token for its room. Without it, dev mode.
    #[arg(long, env = "PRISM_LOAD_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Clients join spread over this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// After the ramp, wait this long before measuring (keyframes, rates).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// The measured window.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Video bitrate, kbit/s.
    #[arg(long, default_value_t = 1000)]
    video_kbps: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Largest video packet payload, bytes.
    #[arg(long, default_value_t = 1200)]
    packet_bytes: usize,
    /// Opus payload per 20 ms frame, bytes.
    #[arg(long, default_value_t = 100)]
    audio_bytes: usize,
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    keyframe_interval: Duration,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// A name for this run in the report (default: the target).
    #[arg(long)]
    label: Option<String>,
    /// Worker threads for the clients (1: one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Prism: publishers send their video as rid simulcast, q 320×180
    /// 150 kbit/s, h 640×360 500 kbit/s, f 1280×720 1.5 Mbit/s (instead of
    /// one stream at --video-kbps), as a browser does.
    #[arg(long)]
    simulcast: bool,
    /// Prism: this many receivers (the last to join) are weak subscribers:
    /// their subscribe leg reports --weak-bitrate in REMB and no TWCC.
    #[arg(long, default_value_t = 0)]
    weak_subscribers: usize,
    /// The weak subscribers' estimate, bits/s (`300k`, `1.2M`, `800000`).
    #[arg(long, default_value = "300k", value_parser = simulcast::parse_bitrate)]
    weak_bitrate: u64,
}

/// Who is in the run: what each member publishes and whom it hears.
#[derive(Debug, Clone)]
struct Spec {
    room: usize,
    audio: bool,
    video: bool,
    /// Member indices whose media this one receives.
    sources: Vec<usize>,
    /// A weak subscriber (`--weak-subscribers`).
    weak: bool,
}

fn shape(cmd: &Cmd) -> (String, Vec<Spec>) {
    match cmd {
        Cmd::Conference {
            rooms,
            participants,
            ..
        } => {
            let mut v = Vec::new();
            for r in 0..*rooms {
                for p in 0..*participants {
                    let base = r * participants;
                    v.push(Spec {
                        room: r,
                        audio: true,
                        video: true,
                        sources: (0..*participants)
                            .filter(|q| *q != p)
                            .map(|q| base + q)
                            .collect(),
                        weak: false,
                    });
                }
            }
            (format!("conference {rooms}x{participants}"), v)
        }
        Cmd::Broadcast { viewers, .. } => {
            let mut v = vec![Spec {
                room: 0,
                audio: true,
                video: true,
                sources: vec![],
                weak: false,
            }];
            v.extend((0..*viewers).map(|_| Spec {
                room: 0,
                audio: false,
                video: false,
                sources: vec![0],
                weak: false,
            }));
            (format!("broadcast 1->{viewers}"), v)
        }
        Cmd::Audio {
            speakers,
            listeners,
            ..
        } => {
            let mut v: Vec<Spec> = (0..*speakers)
                .map(|s| Spec {
                    room: 0,
                    audio: true,
                    video: false,
                    sources: (0..*speakers).filter(|q| *q != s).collect(),
                    weak: false,
                })
                .collect();
            v.extend((0..*listeners).map(|_| Spec {
                room: 0,
                audio: false,
                video: false,
                sources: (0..*speakers).collect(),
                weak: false,
            }));
            (format!("audio {speakers}->{listeners}"), v)
        }
        Cmd::Compare { .. } | Cmd::Median { .. } => unreachable!("not a shape"),
    }
}

impl Spec {
    fn publishes(&self) -> bool {
        self.audio || self.video
    }
}

/// One simulated participant.
struct Member {
    spec: Spec,
    /// Prism: the participant itself. Janus: its publisher handle.
    main: Option<MediaClient>,
    /// Janus: one subscriber handle per source.
    viewers: Vec<MediaClient>,
    feed: Option<u64>,
    started: Instant,
    joined: bool,
}

impl Member {
    fn clients(&self) -> impl Iterator<Item = &MediaClient> {
        self.main.iter().chain(self.viewers.iter())
    }
    fn received(&self) -> u64 {
        self.clients()
            .map(|c| c.state.lock().expect("state").packets_in)
            .sum()
    }
    /// Simulcast: bytes received per layer index, with the layer's picture
    /// size, over all the tracks this member receives.
    fn layer_bytes(&self) -> BTreeMap<u8, (u64, u16, u16)> {
        let mut out = BTreeMap::new();
        for c in self.clients() {
            let st = c.state.lock().expect("state");
            for t in st.received.values() {
                for (i, l) in &t.layers {
                    let e = out.entry(*i).or_insert((0, l.width, l.height));
                    e.0 += l.bytes;
                }
            }
        }
        out
    }
    /// Simulcast: the layer each received video track is on now.
    fn current_layers(&self) -> Vec<u8> {
        self.clients()
            .flat_map(|c| {
                let st = c.state.lock().expect("state");
                st.received
                    .values()
                    .filter_map(|t| t.current_layer())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
    fn duplicates(&self) -> u64 {
        self.clients()
            .map(|c| c.state.lock().expect("state").duplicates_in)
            .sum()
    }
    fn sent(&self) -> u64 {
        self.main.as_ref().map_or(0, |c| {
            let s = c.state.lock().expect("state");
            u64::from(s.sent_audio + s.sent_video)
        })
    }
    fn first_packet(&self) -> Option<Instant> {
        self.clients()
            .filter_map(|c| c.state.lock().expect("state").first_packet_at)
            .min()
    }
    fn publishing(&self) -> bool {
        self.main
            .as_ref()
            .is_some_and(|c| c.state.lock().expect("state").publish_connected)
    }
}

struct Run {
    common: Common,
    whep: bool,
    whip: bool,
    run_id: u32,
    members: Vec<Member>,
    keys: Option<prism_server::auth::Keys>,
}

impl Run {
    fn url(&self) -> String {
        self.common
            .url
            .clone()
            .unwrap_or_else(|| match self.common.target {
                Target::Prism => "http://127.0.0.1:8080".to_owned(),
                Target::Janus => "http://10.77.0.2:8088/janus".to_owned(),
            })
    }

    fn options(&self, spec: &Spec, index: usize) -> anyhow::Result<ClientOptions> {
        let c = &self.common;
        let publishes = spec.publishes();
        let url = match c.target {
            Target::Janus => self.url(),
            Target::Prism if publishes && self.whip => self.url(),
            Target::Prism if !publishes && self.whep => self.url(),
            Target::Prism => format!("{}/ws", self.url().replacen("http", "ws", 1)),
        };
        let room = match c.target {
            Target::Prism => format!("load-{}-{}", self.run_id, spec.room),
            Target::Janus => format!("{}", 1000 + spec.room),
        };
        let name = format!("m{index}");
        let mut o = ClientOptions::new(&url, &room, &name, index as u32 + 1);
        let identity = format!("load-{}-{index}", self.run_id);
        if let Some(keys) = &self.keys {
            o.token = keys
                .mint(
                    &room,
                    &identity,
                    Some(&name),
                    prism_server::auth::Grants::all(),
                    Duration::from_secs(24 * 3600),
                    None,
                )
                .map(Some)
                .map_err(anyhow::Error::msg)?;
        }
        o.identity = Some(identity);
        o.publish_audio = spec.audio;
        o.publish_video = spec.video;
        o.audio_bytes = c.audio_bytes;
        o.video_bytes = c.packet_bytes;
        o.video_interval = Duration::from_micros(1_000_000 / u64::from(c.fps.max(1)));
        o.video_bitrate = Some(c.video_kbps * 1000);
        o.keyframe_interval = c.keyframe_interval;
        o.bind_ip = c.bind_ip;
        o.record_packets = false;
        if c.simulcast {
            o.simulcast = Some(LayerSpec::three());
        }
        if spec.weak {
            o.max_receive_bitrate = Some(c.weak_bitrate);
        }
        Ok(o)
    }

    /// Brings member `i` in: its publisher (if any), then (Janus) the
    /// subscriptions between it and everyone already in.
    async fn join(&mut self, i: usize) -> anyhow::Result<()> {
        let spec = self.members[i].spec.clone();
        let opts = self.options(&spec, i)?;
        self.members[i].started = Instant::now();
        let publishes = spec.publishes();
        match self.common.target {
            Target::Prism => {
                let c = if publishes && self.whip {
                    MediaClient::start_whip(opts).await?
                } else if !publishes && self.whep {
                    MediaClient::start_whep(opts, None).await?
                } else {
                    MediaClient::start(opts).await?
                };
                self.members[i].main = Some(c);
            }
            Target::Janus => {
                if publishes {
                    let c = MediaClient::start_janus_publisher(opts.clone()).await?;
                    // A feed can be subscribed to once its connection is up
                    // (before that Janus answers 428 "No such feed").
                    c.wait_for(Duration::from_secs(10), "Janus publisher connected", |s| {
                        s.publish_connected
                    })
                    .await?;
                    let feed = c.state.lock().expect("state").janus_feed;
                    self.members[i].main = Some(c);
                    self.members[i].feed = feed;
                }
                // It hears those already in; those already in hear it.
                let mut pairs: Vec<(usize, usize)> = spec
                    .sources
                    .iter()
                    .filter(|s| **s != i && self.members[**s].feed.is_some())
                    .map(|s| (i, *s))
                    .collect();
                if self.members[i].feed.is_some() {
                    for (m, other) in self.members.iter().enumerate() {
                        if m != i && other.joined && other.spec.sources.contains(&i) {
                            pairs.push((m, i));
                        }
                    }
                }
                for (listener, source) in pairs {
                    let Some(feed) = self.members[source].feed else {
                        continue;
                    };
                    let lspec = self.members[listener].spec.clone();
                    let mut o = self.options(&lspec, listener)?;
                    o.publish_audio = false;
                    o.publish_video = false;
                    let v = MediaClient::start_janus_viewer(o, feed).await?;
                    self.members[listener].viewers.push(v);
                }
            }
        }
        self.members[i].joined = true;
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Point {
    at: Instant,
    server: proc::Sample,
    load: proc::Sample,
    received: u64,
}

fn point(run: &Run, server_pid: u32) -> anyhow::Result<Point> {
    Ok(Point {
        at: Instant::now(),
        server: proc::sample(Some(server_pid)).context("reading the server's /proc entry")?,
        load: proc::sample(None)?,
        received: run.members.iter().map(Member::received).sum(),
    })
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rtc=error,ice=error,dtls=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let read = |reports: &[std::path::PathBuf]| -> anyhow::Result<Vec<Report>> {
        reports
            .iter()
            .map(|p| {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
                serde_json::from_str(&text).with_context(|| format!("{}", p.display()))
            })
            .collect()
    };
    match &cli.cmd {
        Cmd::Compare { reports } => {
            print!("{}", report::compare(&read(reports)?));
            return Ok(());
        }
        Cmd::Median { reports } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report::median(&read(reports)?)?)?
            );
            return Ok(());
        }
        _ => {}
    }
    let (common, whep, whip) = match &cli.cmd {
        Cmd::Conference { common, .. } | Cmd::Audio { common, .. } => {
            (common.clone(), false, false)
        }
        Cmd::Broadcast {
            common, whep, whip, ..
        } => (common.clone(), *whep, *whip),
        Cmd::Compare { .. } | Cmd::Median { .. } => unreachable!("handled above"),
    };
    if common.target == Target::Janus && (whep || whip) {
        bail!("--whep and --whip are Prism options");
    }
    if common.target == Target::Janus && (common.simulcast || common.weak_subscribers > 0) {
        bail!("--simulcast and --weak-subscribers are Prism options");
    }
    let rt = if common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(common.threads)
            .enable_all()
            .build()?
    };
    let (name, mut specs) = shape(&cli.cmd);
    // The last receivers to join are the weak ones.
    for s in specs
        .iter_mut()
        .rev()
        .filter(|s| !s.sources.is_empty())
        .take(common.weak_subscribers)
    {
        s.weak = true;
    }
    let report = rt.block_on(run(common.clone(), whep, whip, name, specs))?;
    print!("{}", report::table(&report));
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

async fn run(
    common: Common,
    whep: bool,
    whip: bool,
    shape: String,
    specs: Vec<Spec>,
) -> anyhow::Result<Report> {
    let server_pid = match common.server_pid {
        Some(p) => p,
        None => {
            let comm = match common.target {
                Target::Prism => "prism",
                Target::Janus => "janus",
            };
            proc::find(comm)
                .with_context(|| format!("no process named {comm}; pass --server-pid"))?
        }
    };
    let now = Instant::now();
    let mut run = Run {
        common: common.clone(),
        whep,
        whip,
        run_id: std::process::id(),
        keys: match &common.key {
            Some(k) => Some(
                prism_server::auth::Keys::new(std::slice::from_ref(k))
                    .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        },
        members: specs
            .into_iter()
            .map(|spec| Member {
                spec,
                main: None,
                viewers: Vec::new(),
                feed: None,
                started: now,
                joined: false,
            })
            .collect(),
    };
    // RSS per subscriber leg counts from here, or (with viewers) from when
    // the publishers are in, so the publish legs do not count.
    let mut before = proc::sample(Some(server_pid))?;

    // Ramp up: publishers first (and connected) so viewers' join times
    // measure joining, not waiting for a publisher.
    let n = run.members.len();
    let step = common.ramp / n.max(1) as u32;
    let mut order: Vec<usize> = (0..n)
        .filter(|i| run.members[*i].spec.publishes())
        .collect();
    let pure_publishers = order.len();
    order.extend((0..n).filter(|i| !run.members[*i].spec.publishes()));
    let ramp_started = Instant::now();
    let mut failures = Vec::new();
    for (k, i) in order.iter().copied().enumerate() {
        if let Err(e) = run.join(i).await {
            failures.push(format!("member {i}: {e:#}"));
        }
        if k + 1 == pure_publishers {
            // Wait for the publishers' legs before the viewers come.
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline
                && !run
                    .members
                    .iter()
                    .filter(|m| m.main.is_some() && m.spec.publishes())
                    .all(Member::publishing)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if k + 1 < n {
                before = proc::sample(Some(server_pid))?;
            }
        }
        eprint!("\rramp: {}/{n} joined", k + 1);
        let due = ramp_started + step * (k as u32 + 1);
        tokio::time::sleep_until(due.into()).await;
    }
    eprintln!();
    if !failures.is_empty() {
        eprintln!("{} joins failed; first: {}", failures.len(), failures[0]);
    }
    // Everyone receiving gets media (or we give up waiting).
    let receivers: Vec<usize> = (0..n)
        .filter(|i| !run.members[*i].spec.sources.is_empty())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = receivers
            .iter()
            .filter(|i| run.members[**i].first_packet().is_some())
            .count();
        eprint!("\rwaiting for media: {got}/{} receiving", receivers.len());
        if got == receivers.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!();
    tokio::time::sleep(common.settle).await;

    // Hold: the measured window.
    for m in &run.members {
        for c in m.clients() {
            c.state.lock().expect("state").latency.clear();
        }
    }
    let sent0: Vec<u64> = run.members.iter().map(Member::sent).collect();
    let recv0: Vec<u64> = run.members.iter().map(Member::received).collect();
    let dups0: u64 = run.members.iter().map(Member::duplicates).sum();
    let layers0: Vec<_> = run.members.iter().map(Member::layer_bytes).collect();
    let p0 = point(&run, server_pid)?;
    let mut last = p0;
    let hold_end = p0.at + common.hold;
    while Instant::now() < hold_end {
        tokio::time::sleep(
            Duration::from_secs(1).min(hold_end.saturating_duration_since(Instant::now())),
        )
        .await;
        let p = point(&run, server_pid)?;
        let dt = p.at.duration_since(last.at).as_secs_f64().max(1e-3);
        eprint!(
            "\rhold {:>3.0}/{:.0}s: egress {:>7.0} pkt/s, server CPU {:>5.1}%, server RSS {:>6.1} MiB, load CPU {:>5.1}%",
            p.at.duration_since(p0.at).as_secs_f64(),
            common.hold.as_secs_f64(),
            (p.received - last.received) as f64 / dt,
            100.0 * (p.server.cpu.saturating_sub(last.server.cpu)).as_secs_f64() / dt,
            p.server.rss as f64 / 1048576.0,
            100.0 * (p.load.cpu.saturating_sub(last.load.cpu)).as_secs_f64() / dt,
        );
        last = p;
    }
    eprintln!();
    let p1 = point(&run, server_pid)?;
    let sent1: Vec<u64> = run.members.iter().map(Member::sent).collect();
    let recv1: Vec<u64> = run.members.iter().map(Member::received).collect();
    let dups1: u64 = run.members.iter().map(Member::duplicates).sum();
    let layers1: Vec<_> = run.members.iter().map(Member::layer_bytes).collect();
    let layer_rows = simulcast::layer_rows(
        &run.members,
        &layers0,
        &layers1,
        p1.at.duration_since(p0.at).as_secs_f64(),
    );

    // Delivered: what each receiver got against what its sources sent.
    let mut expected = 0u64;
    let mut got = 0u64;
    for (i, m) in run.members.iter().enumerate() {
        if m.spec.sources.is_empty() {
            continue;
        }
        expected += m
            .spec
            .sources
            .iter()
            .map(|s| sent1[*s] - sent0[*s])
            .sum::<u64>();
        got += recv1[i] - recv0[i];
    }
    let mut latency = Histogram::default();
    for m in &run.members {
        for c in m.clients() {
            latency.merge(&c.state.lock().expect("state").latency);
        }
    }
    let mut joins: Vec<f64> = receivers
        .iter()
        .filter_map(|i| {
            let m = &run.members[*i];
            m.first_packet()
                .map(|t| t.duration_since(m.started).as_secs_f64() * 1000.0)
        })
        .collect();
    joins.sort_by(f64::total_cmp);
    let connected = receivers
        .iter()
        .filter(|i| run.members[**i].first_packet().is_some())
        .count();
    let subscriber_legs = run
        .members
        .iter()
        .map(|m| match common.target {
            Target::Prism => usize::from(!m.spec.sources.is_empty()),
            Target::Janus => m.viewers.len(),
        })
        .sum::<usize>();

    // Ramp down.
    let mut clients = Vec::new();
    for m in run.members.drain(..) {
        clients.extend(m.main);
        clients.extend(m.viewers);
    }
    let total = clients.len();
    for (k, c) in clients.into_iter().enumerate() {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.command(ClientCommand::Leave)).await;
        c.kill();
        eprint!("\rramp down: {}/{total} left", k + 1);
    }
    eprintln!();

    let hold = p1.at.duration_since(p0.at).as_secs_f64();
    let egress = p1.received - p0.received;
    let server_cpu = p1.server.cpu.saturating_sub(p0.server.cpu).as_secs_f64();
    let load_cpu = p1.load.cpu.saturating_sub(p0.load.cpu).as_secs_f64();
    let q = |v: &[f64], f: f64| -> f64 {
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() as f64 * f).ceil() as usize).clamp(1, v.len()) - 1]
        }
    };
    Ok(Report {
        label: common
            .label
            .clone()
            .unwrap_or_else(|| format!("{:?}", common.target).to_lowercase()),
        target: format!("{:?}", common.target).to_lowercase(),
        shape,
        members: n,
        receivers: receivers.len(),
        receiving: connected,
        subscriber_legs,
        join_failures: failures.len(),
        join_ms_p50: q(&joins, 0.5),
        join_ms_p99: q(&joins, 0.99),
        hold_secs: hold,
        egress_packets: egress,
        egress_pps: egress as f64 / hold,
        delivered_ratio: if expected == 0 {
            0.0
        } else {
            got as f64 / expected as f64
        },
        duplicate_packets: dups1 - dups0,
        latency_us_p50: latency.quantile(0.5),
        latency_us_p95: latency.quantile(0.95),
        latency_us_p99: latency.quantile(0.99),
        latency_us_max: latency.max,
        server_cpu_secs: server_cpu,
        server_cpu_pct: 100.0 * server_cpu / hold,
        server_cpu_us_per_egress_packet: if egress == 0 {
            0.0
        } else {
            server_cpu * 1e6 / egress as f64
        },
        server_cpu_pct_per_subscriber_leg: if subscriber_legs == 0 {
            0.0
        } else {
            100.0 * server_cpu / hold / subscriber_legs as f64
        },
        server_rss_before_mib: before.rss as f64 / 1048576.0,
        server_rss_hold_mib: p1.server.rss as f64 / 1048576.0,
        server_rss_kib_per_subscriber_leg: if subscriber_legs == 0 {
            0.0
        } else {
            p1.server.rss.saturating_sub(before.rss) as f64 / 1024.0 / subscriber_legs as f64
        },
        load_cpu_pct: 100.0 * load_cpu / hold,
        load_cpu_us_per_packet: if egress == 0 {
            0.0
        } else {
            load_cpu * 1e6 / egress as f64
        },
        layers: layer_rows,
    })
}
