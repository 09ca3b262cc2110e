//! The `/ws` signaling socket, typed.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use prism_signal::{ClientEnvelope, ClientMessage, MsgId, ServerEnvelope};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Signaling {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The close frame's status code, once the server closed the socket
    /// (`Some(None)`: a close frame without a code).
    close_code: Option<Option<u16>>,
}

impl Signaling {
    /// Connects to `ws://host:port/ws`.
    pub async fn connect(url: &str) -> anyhow::Result<Signaling> {
        let (ws, _) = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .map_err(|_| anyhow::anyhow!("connect {url}: no answer in 20 s"))?
        .with_context(|| format!("connect {url}"))?;
        Ok(Signaling {
            ws,
            close_code: None,
        })
    }

    pub async fn send(&mut self, msg: ClientMessage) -> anyhow::Result<()> {
        self.send_with_id(None, msg).await
    }

    pub async fn send_with_id(
        &mut self,
        id: Option<MsgId>,
        msg: ClientMessage,
    ) -> anyhow::Result<()> {
        let text = serde_json::to_string(&ClientEnvelope { id, msg })?;
        self.send_raw(text).await
    }

    /// Sends one text frame as is (tests use this for malformed input).
    pub async fn send_raw(&mut self, text: String) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    /// The next server message; `None` when the socket closed.
    pub async fn recv(&mut self) -> anyhow::Result<Option<ServerEnvelope>> {
        loop {
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(anyhow!("websocket: {e}")),
                Some(Ok(Message::Text(t))) => {
                    let env: ServerEnvelope = serde_json::from_str(t.as_str())
                        .with_context(|| format!("server sent an unparsable message: {t}"))?;
                    return Ok(Some(env));
                }
                Some(Ok(Message::Close(frame))) => {
                    self.close_code = Some(frame.map(|f| u16::from(f.code)));
                    return Ok(None);
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next server message within `limit`.
    pub async fn recv_timeout(&mut self, limit: Duration) -> anyhow::Result<ServerEnvelope> {
        match tokio::time::timeout(limit, self.recv()).await {
            Err(_) => bail!("no server message within {limit:?}"),
            Ok(r) => r?.ok_or_else(|| anyhow!("socket closed")),
        }
    }

    /// Skips messages until one satisfies `pred`, within `limit`.
    pub async fn recv_until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&ServerEnvelope) -> bool,
    ) -> anyhow::Result<ServerEnvelope> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv_timeout(left).await?;
            if pred(&m) {
                return Ok(m);
            }
        }
    }

    /// How the server closed the socket: `None` while open (or closed
    /// without a close frame), `Some(code)` after a close frame.
    pub fn close_code(&self) -> Option<Option<u16>> {
        self.close_code
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
