//! What a WHEP viewer is told about its broadcast: live, paused (no
//! publisher), ended; and how many watch it.
//!
//! The shard owns one [`StatusTx`] per WHEP viewer and updates it when the
//! room changes; the HTTP side hands clones of the [`StatusRx`] to the
//! viewer's server-sent event streams (`whep_events`). Dropping the sender
//! (the viewer's session ended) ends those streams.

use tokio::sync::watch;

/// Where a viewer's broadcast is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A publisher feeds at least one of the viewer's tracks.
    Active,
    /// No publisher feeds the viewer's tracks: it waits, on the same
    /// session, for the room's next publisher.
    Inactive,
    /// Nobody published for `broadcast_grace`: the session is closed.
    Ended,
}

/// The viewer's state, as its event streams report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub phase: Phase,
    /// WHEP viewers of the room (updated once a second).
    pub viewers: u32,
}

pub type StatusTx = watch::Sender<Status>;
pub type StatusRx = watch::Receiver<Status>;

/// A viewer's channel, starting at `status`.
pub fn channel(status: Status) -> (StatusTx, StatusRx) {
    watch::channel(status)
}

/// The server-sent events a viewer can ask for (the WHEP draft's
/// `urn:ietf:params:whep:ext:core:server-sent-events`, plus `ended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventSet {
    pub active: bool,
    pub inactive: bool,
    pub viewercount: bool,
    pub ended: bool,
}

/// Every event this server sends, as advertised in the `Link` header.
pub const SUPPORTED_EVENTS: &str = "active,inactive,viewercount,ended";

impl EventSet {
    /// The set named by a client's list; names this server does not send
    /// (`layers`, `reconnect`, `scte35`, anything else) are ignored.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = EventSet::default();
        for n in names {
            match n {
                "active" => s.active = true,
                "inactive" => s.inactive = true,
                "viewercount" => s.viewercount = true,
                "ended" => s.ended = true,
                _ => {}
            }
        }
        s
    }

    /// The names in this set, in the order of [`SUPPORTED_EVENTS`].
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.active, "active"),
            (self.inactive, "inactive"),
            (self.viewercount, "viewercount"),
            (self.ended, "ended"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

/// The events that report going from `before` (None: the stream just
/// opened) to `now`, as (event name, JSON data), in the order to send them.
pub fn events(
    set: EventSet,
    before: Option<Status>,
    now: Status,
) -> impl Iterator<Item = (&'static str, String)> {
    let phase_changed = before.is_none_or(|b| b.phase != now.phase);
    let phase = match now.phase {
        Phase::Active if phase_changed && set.active => Some(("active", "{}".to_owned())),
        Phase::Inactive if phase_changed && set.inactive => Some(("inactive", "{}".to_owned())),
        // A viewer that did not ask for `ended` learns the broadcast stopped
        // from `inactive` (unless it already had it), then the stream closes.
        Phase::Ended if phase_changed && set.ended => Some(("ended", "{}".to_owned())),
        Phase::Ended
            if phase_changed
                && set.inactive
                && before.is_none_or(|b| b.phase != Phase::Inactive) =>
        {
            Some(("inactive", "{}".to_owned()))
        }
        _ => None,
    };
    let count = (set.viewercount
        && now.phase != Phase::Ended
        && before.is_none_or(|b| b.viewers != now.viewers))
    .then(|| {
        (
            "viewercount",
            serde_json::json!({ "viewercount": now.viewers }).to_string(),
        )
    });
    phase.into_iter().chain(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: EventSet = EventSet {
        active: true,
        inactive: true,
        viewercount: true,
        ended: true,
    };

    fn st(phase: Phase, viewers: u32) -> Status {
        Status { phase, viewers }
    }

    fn names(set: EventSet, before: Option<Status>, now: Status) -> Vec<&'static str> {
        events(set, before, now).map(|(n, _)| n).collect()
    }

    #[test]
    fn a_new_stream_gets_the_current_state() {
        assert_eq!(
            names(ALL, None, st(Phase::Active, 3)),
            ["active", "viewercount"]
        );
        assert_eq!(
            names(ALL, None, st(Phase::Inactive, 1)),
            ["inactive", "viewercount"]
        );
        let (_, data) = events(ALL, None, st(Phase::Active, 3)).nth(1).unwrap();
        assert_eq!(data, r#"{"viewercount":3}"#);
    }

    #[test]
    fn only_changes_and_only_what_was_asked() {
        let a = st(Phase::Active, 3);
        assert!(names(ALL, Some(a), a).is_empty());
        assert_eq!(names(ALL, Some(a), st(Phase::Active, 4)), ["viewercount"]);
        assert_eq!(names(ALL, Some(a), st(Phase::Inactive, 3)), ["inactive"]);
        let only_active = EventSet::from_names(["active", "layers", "bogus"]);
        assert!(names(only_active, Some(a), st(Phase::Inactive, 9)).is_empty());
        assert_eq!(
            names(only_active, Some(st(Phase::Inactive, 9)), a),
            ["active"]
        );
    }

    #[test]
    fn the_end_is_ended_or_else_inactive() {
        let i = st(Phase::Inactive, 2);
        let e = st(Phase::Ended, 2);
        assert_eq!(names(ALL, Some(i), e), ["ended"]);
        let no_ended = EventSet::from_names(["active", "inactive"]);
        assert!(
            names(no_ended, Some(i), e).is_empty(),
            "already told inactive"
        );
        assert_eq!(names(no_ended, None, e), ["inactive"]);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(ALL.names().join(","), SUPPORTED_EVENTS);
        assert_eq!(EventSet::from_names(ALL.names()), ALL);
    }
}
