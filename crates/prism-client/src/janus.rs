//! Janus VideoRoom over Janus's HTTP API, for side-by-side load runs
//! (`prism-load --target janus`). One Janus session with one VideoRoom handle
//! per client; events come from the session's long poll.
//!
//! Janus never trickles here: our candidate is in the SDP and every JSEP
//! carries `"trickle": false`.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

pub struct JanusHandle {
    http: reqwest::Client,
    /// `http://10.77.0.2:8088/janus`
    base: String,
    session: u64,
    handle: u64,
    keepalive: JoinHandle<()>,
}

fn txn() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

impl JanusHandle {
    /// Creates a session and attaches the VideoRoom plugin.
    pub async fn attach(base: &str) -> anyhow::Result<JanusHandle> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()?;
        let base = base.trim_end_matches('/').to_owned();
        let created = post(&http, &base, json!({"janus": "create"})).await?;
        let session = id_of(&created)?;
        let attached = post(
            &http,
            &format!("{base}/{session}"),
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
        )
        .await?;
        let handle = id_of(&attached)?;
        // Janus drops a session after 60 s without a request.
        let keepalive = {
            let (http, url) = (http.clone(), format!("{base}/{session}"));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    let _ = post(&http, &url, json!({"janus": "keepalive"})).await;
                }
            })
        };
        Ok(JanusHandle {
            http,
            base,
            session,
            handle,
            keepalive,
        })
    }

    fn handle_url(&self) -> String {
        format!("{}/{}/{}", self.base, self.session, self.handle)
    }

    /// A plugin request answered at once (`create`, `exists`...).
    async fn sync(&self, body: Value) -> anyhow::Result<Value> {
        let r = post(
            &self.http,
            &self.handle_url(),
            json!({"janus": "message", "body": body}),
        )
        .await?;
        r.pointer("/plugindata/data")
            .cloned()
            .ok_or_else(|| anyhow!("janus: no plugin data in {r}"))
    }

    /// A plugin request with an optional JSEP, answered by an event: returns
    /// (plugin data, JSEP SDP if any).
    async fn call(
        &self,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<(Value, Option<String>)> {
        let t = txn();
        let mut msg = json!({"janus": "message", "transaction": t, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let ack: Value = self
            .http
            .post(self.handle_url())
            .json(&msg)
            .send()
            .await?
            .json()
            .await?;
        match ack["janus"].as_str() {
            Some("ack") => {}
            Some("success") => {
                return Ok((plugin_data(&ack), sdp_of(&ack)));
            }
            _ => bail!("janus: {ack}"),
        }
        // The answer arrives on the session's long poll.
        let poll = format!("{}/{}?maxev=1", self.base, self.session);
        for _ in 0..20 {
            let evs: Value = self
                .http
                .get(&poll)
                .timeout(Duration::from_secs(35))
                .send()
                .await?
                .json()
                .await?;
            for ev in evs.as_array().cloned().unwrap_or_else(|| vec![evs]) {
                if ev["transaction"].as_str() != Some(t.as_str()) || ev["janus"] != "event" {
                    continue;
                }
                let data = plugin_data(&ev);
                if let Some(code) = data.get("error_code") {
                    bail!("janus: error {code}: {}", data["error"]);
                }
                return Ok((data, sdp_of(&ev)));
            }
        }
        bail!("janus: no event for transaction {t}")
    }

    /// Creates a VideoRoom room (fine if it exists already).
    pub async fn create_room(&self, room: u64, publishers: u32) -> anyhow::Result<()> {
        let data = self
            .sync(json!({
                "request": "create", "room": room, "publishers": publishers,
                "audiocodec": "opus", "videocodec": "vp8", "bitrate": 0,
                "fir_freq": 0, "notify_joining": false, "permanent": false,
            }))
            .await?;
        match data["error_code"].as_u64() {
            None | Some(427) => Ok(()), // 427: already exists
            Some(c) => bail!("janus: create room: {c}: {}", data["error"]),
        }
    }

    /// Joins as a publisher and publishes `offer`: (publisher id, answer).
    pub async fn publish(
        &self,
        room: u64,
        display: &str,
        offer: String,
    ) -> anyhow::Result<(u64, String)> {
        let (data, sdp) = self
            .call(
                json!({"request": "joinandconfigure", "ptype": "publisher", "room": room,
                       "display": display, "audio": true, "video": true}),
                Some(json!({"type": "offer", "sdp": offer, "trickle": false})),
            )
            .await?;
        let id = data["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("janus: no publisher id in {data}"))?;
        Ok((
            id,
            sdp.ok_or_else(|| anyhow!("janus: publish without an answer: {data}"))?,
        ))
    }

    /// Subscribes to publisher `feed`: returns Janus's offer.
    pub async fn subscribe(&self, room: u64, feed: u64) -> anyhow::Result<String> {
        let (data, sdp) = self
            .call(
                json!({"request": "join", "ptype": "subscriber", "room": room,
                       "streams": [{"feed": feed}]}),
                None,
            )
            .await?;
        sdp.ok_or_else(|| anyhow!("janus: subscribe without an offer: {data}"))
    }

    /// Answers the subscription offer and starts the media.
    pub async fn start(&self, room: u64, answer: String) -> anyhow::Result<()> {
        self.call(
            json!({"request": "start", "room": room}),
            Some(json!({"type": "answer", "sdp": answer, "trickle": false})),
        )
        .await
        .map(|_| ())
    }

    /// Destroys the session (Janus closes its peer connection).
    pub async fn destroy(&self) -> anyhow::Result<()> {
        self.keepalive.abort();
        post(
            &self.http,
            &format!("{}/{}", self.base, self.session),
            json!({"janus": "destroy"}),
        )
        .await
        .map(|_| ())
    }
}

impl Drop for JanusHandle {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

async fn post(http: &reqwest::Client, url: &str, mut body: Value) -> anyhow::Result<Value> {
    body["transaction"] = json!(txn());
    let r: Value = http
        .post(url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?
        .json()
        .await?;
    if r["janus"] == "error" {
        bail!("janus: {}", r["error"]);
    }
    Ok(r)
}

fn id_of(v: &Value) -> anyhow::Result<u64> {
    v.pointer("/data/id")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("janus: no id in {v}"))
}

fn plugin_data(v: &Value) -> Value {
    v.pointer("/plugindata/data")
        .cloned()
        .unwrap_or(Value::Null)
}

fn sdp_of(v: &Value) -> Option<String> {
    v.pointer("/jsep/sdp")
        .and_then(Value::as_str)
        .map(str::to_owned)
}
