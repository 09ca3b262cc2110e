use clap::Parser;
use prism_server::config::{Cli, Command, Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// Default log filter: our own info lines; the WebRTC engine's chatter only at warn.
const DEFAULT_FILTER: &str =
    "info,rtc=warn,rtc_ice=warn,rtc_dtls=warn,rtc_srtp=warn,rtc_sctp=warn,\
rtc_interceptor=warn,ice=warn,dtls=warn,srtp=warn,sctp=warn,interceptor=warn,webrtc=warn";

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
    if let Some(Command::PrintConfig) = cli.command {
        println!("{cfg:#?}");
        return Ok(());
    }
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init(),
    }
    let running = prism_server::start(cfg).await?;
    let media: Vec<String> = running.media_addrs.iter().map(|a| a.to_string()).collect();
    tracing::info!(http = %running.http_addr, media = %media.join(","), "prism ready: open http://{}", running.http_addr);
    // A machine-readable line for scripts and tests that start prism on port 0.
    println!(
        "PRISM_READY http={} media={}",
        running.http_addr,
        media.join(",")
    );
    tokio::select! {
        r = running.serve => { r??; }
        _ = shutdown_signal() => { tracing::info!("shutting down"); }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
