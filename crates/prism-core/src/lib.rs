//! prism-core: the SFU's brain, sans-I/O.
//!
//! Rooms, publications, subscriptions and the per-subscriber forwarders that
//! rewrite SSRC, payload type, sequence number and timestamp. No sockets, no
//! tasks, no clock: every call that needs the time takes `now`, and decisions
//! are returned as values ([`Forward`]) for the driver to apply.
//!
//! Bad input is an error value or a counted [`DropReason`]; a panic is a bug.

pub mod allocator;
pub mod av1_dd;
pub mod budget;
pub mod extmap;
pub mod forwarder;
pub mod gop;
pub mod history;
pub mod keyframe;
pub mod labels;
pub mod layer;
pub mod pacer;
pub mod room;
pub mod seq;
pub mod timestamp;
pub mod vp8;
pub mod vp9;

pub use allocator::{
    AllocTrack, Allocator, AllocatorConfig, Bitrate, LayerInfo, TrackAllocation, Transition, Wish,
};
pub use av1_dd::{
    DdError, DdRewrite, DdStructure, DdTargets, DdTracker, DependencyDescriptor, Dti,
    DEPENDENCY_DESCRIPTOR_URI,
};
pub use budget::RetransmitBudget;
pub use extmap::ExtensionMap;
pub use forwarder::{
    payload_type_table, DropCounts, DropReason, Forward, Forwarder, PacketMeta, PtMap, SendParams,
    SinkParams, SvcFrame, MAX_MAPPED_PAYLOAD_TYPES,
};
pub use gop::{CacheRefusal, GopCache, RefusalCounts};
pub use history::{NackLookup, PacketHistory, SentMap};
pub use keyframe::{is_keyframe_start, VideoCodec};
pub use layer::{
    LayerSelector, LayerTarget, SpatialLayer, Target, TemporalLayer, DEFAULT_LAYER_TIMEOUT,
    MAX_SPATIAL_LAYERS,
};
pub use pacer::BurstPacer;
pub use room::{
    LeaveCause, MediaKind, ParticipantId, Room, RoomConfig, RoomCounters, RoomError, RoomEvent,
    SenderReportValues, SinkId, Source, Track, TrackId, TrackSpec,
};
pub use seq::{SeqOutcome, SeqRewriter};
pub use timestamp::TsRewriter;
pub use vp8::{PictureId, Vp8Descriptor, Vp8Error, Vp8Munger, Vp8Rewrite};
pub use vp9::{Vp9Descriptor, Vp9Error, Vp9Layers, Vp9Ss, VP9_MAX_SPATIAL};
