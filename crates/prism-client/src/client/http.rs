//! Negotiation without Prism's WebSocket: a WHEP viewer's POST, a WHIP
//! publisher's POST (see `start_publishing`), a Janus VideoRoom viewer.

use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use rtc::peer_connection::sdp::RTCSessionDescription;

use super::{janus_room, Driver, Mode};
use crate::leg::{redirect_candidates, LegConn};

impl Driver {
    /// Janus: subscribe to `feed`, answer Janus's offer, start.
    pub(super) async fn start_janus_viewing(&mut self, feed: u64) -> anyhow::Result<()> {
        let janus = self.janus.as_ref().expect("attached in new");
        let room = janus_room(&self.opts.room)?;
        let offer = janus.subscribe(room, feed).await?;
        self.note_candidates(&offer);
        let mut leg = LegConn::new(self.opts.bind_ip, &self.receive_setup()).await?;
        let sdp = leg.answer(offer).context("janus offer")?;
        self.subscribe = Some(leg);
        janus.start(room, sdp).await
    }

    /// WHEP: one recvonly audio and one recvonly video section, offered by
    /// POST; the answer carries the server's tracks.
    pub(super) async fn start_viewing(&mut self) -> anyhow::Result<()> {
        let mut leg = LegConn::new(self.opts.bind_ip, &self.receive_setup()).await?;
        leg.add_recvonly_audio_video()?;
        let sdp = leg.offer()?;
        self.subscribe = Some(leg);
        let mut answer = self.post_offer("whep", sdp).await?;
        self.note_candidates(&answer);
        if let Some(via) = self.opts.media_via {
            answer = redirect_candidates(&answer, via);
        }
        let leg = self.subscribe.as_mut().expect("set just above");
        leg.pc
            .set_remote_description(Instant::now(), RTCSessionDescription::answer(answer)?)
            .context("WHEP answer")?;
        Ok(())
    }

    /// POSTs an offer to `{url}/{whip|whep}/{room}`; returns the answer and
    /// keeps the session URL.
    pub(super) async fn post_offer(
        &mut self,
        endpoint: &str,
        sdp: String,
    ) -> anyhow::Result<String> {
        let mut url = format!("{}/{endpoint}/{}", self.opts.url, self.opts.room);
        if let Mode::Whep {
            participant: Some(p),
        } = &self.mode
        {
            url.push_str(&format!("?participant={p}"));
        }
        self.state.lock().expect("state lock").posted_at = Some(Instant::now());
        let mut req = self
            .http
            .post(&url)
            .header("Content-Type", "application/sdp");
        if let Some(t) = &self.opts.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .body(sdp)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let links: Vec<String> = resp
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let body = resp.text().await?;
        if status.as_u16() != 201 {
            bail!("POST {url}: {status}: {body}");
        }
        self.state.lock().expect("state lock").links = links;
        let location = location.ok_or_else(|| anyhow!("201 without Location"))?;
        self.session_url = Some(format!("{}{location}", self.opts.url));
        self.state.lock().expect("state lock").session_url = self.session_url.clone();
        Ok(body)
    }
}
