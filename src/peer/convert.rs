//! Conversions between the engine's types and Dragonfly's messages, shared
//! by the upload service and the announcer (which import this, not each
//! other).

use dragonfly_api::common::v2::{Piece, SizeScope, TrafficType};

use crate::task::PieceInfo;

pub fn timestamp(ms: u64) -> Option<prost_wkt_types::Timestamp> {
    (ms > 0).then(|| prost_wkt_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

pub fn duration(ms: u64) -> Option<prost_wkt_types::Duration> {
    Some(prost_wkt_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// A piece as Dragonfly's messages carry it.
pub fn piece_message(p: &PieceInfo, content: Option<Vec<u8>>) -> Piece {
    Piece {
        number: p.number,
        parent_id: None,
        offset: p.offset,
        length: p.length,
        digest: p.digest(),
        content,
        traffic_type: Some(TrafficType::BackToSource as i32),
        cost: duration(p.cost_ms),
        created_at: timestamp(p.created_at_ms),
    }
}

/// Dragonfly's size scope of a task.
pub fn size_scope(content_length: u64, pieces: u32) -> SizeScope {
    match (content_length, pieces) {
        (0, _) => SizeScope::Empty,
        (1..=128, _) => SizeScope::Tiny,
        (_, 1) => SizeScope::Small,
        _ => SizeScope::Normal,
    }
}

/// What a task's answers carry as its response header.
pub fn response_header(
    r: &crate::storage::TaskRecord,
) -> std::collections::HashMap<String, String> {
    let mut h = std::collections::HashMap::new();
    h.insert("content-length".into(), r.content_length.to_string());
    for (k, v) in [
        ("etag", &r.etag),
        ("last-modified", &r.last_modified),
        ("content-type", &r.content_type),
    ] {
        if let Some(v) = v {
            h.insert(k.into(), v.clone());
        }
    }
    h
}
