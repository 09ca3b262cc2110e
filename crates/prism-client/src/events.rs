//! A WHEP viewer's server-sent events (the WHEP draft's
//! `urn:ietf:params:whep:ext:core:server-sent-events`): find the extension's
//! `Link` in the POST answer, POST the wanted event list, read the
//! `text/event-stream` it points to.

use anyhow::{anyhow, bail, Context};

/// The extension's link relation.
pub const SSE_REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";

/// One event: its name and its data (JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    pub name: String,
    pub data: String,
}

/// The URL of the extension among a response's `Link` header values, if
/// advertised, resolved against `base` (the server's origin).
pub fn events_link(base: &str, links: &[String]) -> Option<String> {
    links.iter().find_map(|l| {
        let (target, params) = l.split_once(';')?;
        if !params.contains(&format!("rel=\"{SSE_REL}\"")) {
            return None;
        }
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        Some(if url.starts_with('/') {
            format!("{base}{url}")
        } else {
            url.to_owned()
        })
    })
}

/// An open event stream.
pub struct WhepEvents {
    resp: reqwest::Response,
    buf: String,
    name: String,
    data: String,
}

impl WhepEvents {
    /// POSTs `events` to the extension's URL (`link`, see [`events_link`])
    /// and opens the stream the answer's `Location` names.
    pub async fn open(
        http: &reqwest::Client,
        base: &str,
        link: &str,
        events: &[&str],
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut req = http
            .post(link)
            .header("Content-Type", "application/json")
            .body(serde_json::to_string(events)?);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("POST {link}"))?;
        if resp.status().as_u16() != 201 {
            bail!(
                "POST {link}: {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("POST {link}: 201 without Location"))?;
        let url = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location.to_owned()
        };
        let resp = http
            .get(&url)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if resp.status().as_u16() != 200 {
            bail!("GET {url}: {}", resp.status());
        }
        Ok(WhepEvents {
            resp,
            buf: String::new(),
            name: String::new(),
            data: String::new(),
        })
    }

    /// The next event; `None` once the server ended the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<ServerEvent>> {
        loop {
            while let Some(end) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if self.name.is_empty() && self.data.is_empty() {
                        continue;
                    }
                    let name = std::mem::take(&mut self.name);
                    let data = std::mem::take(&mut self.data);
                    return Ok(Some(ServerEvent {
                        name: if name.is_empty() {
                            "message".into()
                        } else {
                            name
                        },
                        data,
                    }));
                }
                if line.starts_with(':') {
                    continue; // keep-alive comment
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => self.name = value.to_owned(),
                    "data" => {
                        if !self.data.is_empty() {
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                    }
                    _ => {}
                }
            }
            match self.resp.chunk().await? {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_events_link() {
        let links = vec![
            "<stun:example.org>; rel=\"ice-server\"".to_owned(),
            format!("</whep/r/abc/sse>; rel=\"{SSE_REL}\"; events=\"active,inactive\""),
        ];
        assert_eq!(
            events_link("http://h:1", &links).as_deref(),
            Some("http://h:1/whep/r/abc/sse")
        );
        assert_eq!(events_link("http://h:1", &links[..1]), None);
    }
}
