use clap::Parser;
use prism_server::config::{Cli, Command, Config, LogFormat};
use prism_server::media::engine_log::{self, EngineErrorCounter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Default log filter: our own info lines; the WebRTC engine's chatter only at warn.
const DEFAULT_FILTER: &str =
    "info,rtc=warn,rtc_ice=warn,rtc_dtls=error,rtc_srtp=warn,rtc_sctp=warn,\
rtc_interceptor=warn,ice=warn,dtls=warn,srtp=warn,sctp=warn,interceptor=warn,webrtc=warn";

/// `RUST_LOG` (or [`DEFAULT_FILTER`]) with the engine's per-datagram target
/// turned off, unless the filter names that target itself.
fn log_filter() -> EnvFilter {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    if spec.contains(engine_log::NOISY_TARGET) {
        return filter;
    }
    match format!("{}=off", engine_log::NOISY_TARGET).parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("prism: {e}");
            std::process::exit(2);
        }
    };
    match &cli.command {
        Some(Command::PrintConfig) => {
            println!("{cfg:#?}");
            return Ok(());
        }
        Some(Command::Token(t)) => {
            let keys =
                prism_server::auth::Keys::new(&cfg.secrets()).map_err(|e| anyhow::anyhow!(e))?;
            let mut grants = prism_server::auth::Grants {
                publish: t.publish,
                subscribe: t.subscribe,
                publish_data: t.publish_data,
                admin: t.admin,
            };
            if !t.publish && !t.subscribe {
                grants.publish = true;
                grants.subscribe = true;
                grants.publish_data = true;
            }
            match keys.mint(&t.room, &t.identity, t.name.as_deref(), grants, t.ttl, None) {
                Ok(token) => {
                    println!("{token}");
                    return Ok(());
                }
                Err(e) => {
                    eprintln!("prism token: {e}");
                    std::process::exit(2);
                }
            }
        }
        None => {}
    }
    // The engine's per-datagram warnings are counted, not written
    // (`engine_log`): whatever RUST_LOG says, unless it names their target.
    let counter = || EngineErrorCounter.with_filter(engine_log::noisy_filter());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(counter())
            .with(fmt.with_filter(log_filter()))
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(counter())
            .with(fmt.json().with_filter(log_filter()))
            .init(),
    }
    let running_drain_timeout = cfg.drain_timeout;
    let mut running = prism_server::start(cfg).await?;
    let media: Vec<String> = running.media_addrs.iter().map(|a| a.to_string()).collect();
    tracing::info!(http = %running.http_addr, media = %media.join(","), "prism ready: open http://{}", running.http_addr);
    // A machine-readable line for scripts and tests that start prism on port 0.
    let tcp: Vec<String> = running.tcp_addrs.iter().map(|a| a.to_string()).collect();
    println!(
        "PRISM_READY http={} media={}{}",
        running.http_addr,
        media.join(","),
        if tcp.is_empty() {
            String::new()
        } else {
            format!(" tcp={}", tcp.join(","))
        }
    );
    let drain_timeout = running_drain_timeout;
    tokio::select! {
        r = &mut running.serve => { r??; return Ok(()); }
        sig = shutdown_signal() => match sig {
            Signal::Interrupt => {
                tracing::info!("interrupted; exiting");
                return Ok(());
            }
            Signal::Terminate => {}
        },
    }
    // SIGTERM: drain. Refuse new work, tell clients, wait for them to go.
    tracing::info!(timeout = ?drain_timeout, "SIGTERM: draining");
    running.start_drain(drain_timeout).await;
    let deadline = tokio::time::Instant::now() + drain_timeout;
    // The shards publish participant counts once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    loop {
        let left = running.directory.participant_count();
        if left == 0 {
            tracing::info!("drained: no participants left; exiting");
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(participants = left, "drain timeout; removing who is left and exiting");
                running.shutdown(std::time::Duration::from_secs(2)).await;
                break;
            }
            _ = shutdown_signal() => {
                tracing::info!("second signal; exiting now");
                break;
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
    }
    Ok(())
}

enum Signal {
    /// SIGINT (Ctrl-C in a terminal): exit promptly.
    Interrupt,
    /// SIGTERM (an orchestrator): drain first.
    Terminate,
}

async fn shutdown_signal() -> Signal {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Signal::Interrupt,
            _ = term.recv() => Signal::Terminate,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}
