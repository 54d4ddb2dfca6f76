//! How a cache entry is stored in Redis: a versioned header, the entry's metadata, then the
//! value, compressed (LZ4) when it is at least the configured threshold and compression pays.
//!
//! ```text
//! "JY" | version: u8 = 2 | flags: u8 (bit 0: LZ4) | meta length: u32 LE | meta (JSON) | value
//! ```
//! The flag is per value, so the threshold can change without breaking stored entries; bytes
//! that do not decode (foreign, truncated, a future version) are reported and read as a miss.
//! Version 2 leaves out what can be derived: the ETag when it is the value's own hash (what
//! [`Entry::new`] gives), and empty tags. Every job's result is cached, so in Redis these ~40
//! bytes are paid per job; version 1 entries (which always carry both) still read.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::{etag_of, Entry};

const MAGIC: &[u8; 2] = b"JY";
const VERSION: u8 = 2;
/// The oldest version this one reads.
const OLDEST: u8 = 1;
const FLAG_LZ4: u8 = 1;
/// Every flag this version knows; others mean a format it cannot read.
const KNOWN_FLAGS: u8 = FLAG_LZ4;
/// LZ4 cannot inflate more than about 255 times, so a larger claimed size is a lie.
const MAX_RATIO: usize = 255;
const HEADER_LEN: usize = 8;
/// The largest value a stored entry may claim to inflate to (a guard against corrupt sizes).
const MAX_INFLATED: usize = 1 << 30;

/// Borrowed where the text allows it; `Cow` because escaped strings (an ETag's quotes) cannot
/// be borrowed from the JSON.
#[derive(Serialize, Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    ct: Cow<'a, str>,
    /// Absent when it is the value's own hash.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    etag: Option<Cow<'a, str>>,
    at: i64,
    exp: i64,
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<Cow<'a, str>>,
}

/// Why stored bytes could not be read back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a jobyard cache value")]
    Foreign,
    #[error("stored by a newer format version ({0})")]
    Version(u8),
    #[error("truncated or corrupt: {0}")]
    Corrupt(String),
}

/// Encodes `entry`, compressing values of at least `compress_min` bytes.
pub fn encode(entry: &Entry, compress_min: usize) -> Vec<u8> {
    let meta = Meta {
        ct: Cow::Borrowed(&entry.content_type),
        etag: (entry.etag != etag_of(&entry.value)).then_some(Cow::Borrowed(&entry.etag)),
        at: entry.stored_at.timestamp_millis(),
        exp: entry.expires_at.timestamp_millis(),
        tags: entry.tags.iter().map(|t| Cow::Borrowed(t.as_str())).collect(),
    };
    let meta = serde_json::to_vec(&meta).expect("metadata serialises");
    let compressed = (entry.value.len() >= compress_min)
        .then(|| lz4_flex::compress_prepend_size(&entry.value))
        .filter(|c| c.len() < entry.value.len());
    let (flags, body): (u8, &[u8]) = match &compressed {
        Some(c) => (FLAG_LZ4, c),
        None => (0, &entry.value),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(body);
    out
}

/// Whether stored bytes are compressed.
#[cfg(test)]
fn is_compressed(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[..2] == MAGIC[..] && bytes[3] & FLAG_LZ4 != 0
}

/// Decodes stored bytes back into an entry.
pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
    if bytes.len() < HEADER_LEN || bytes[..2] != MAGIC[..] {
        return Err(DecodeError::Foreign);
    }
    if !(OLDEST..=VERSION).contains(&bytes[2]) {
        return Err(DecodeError::Version(bytes[2]));
    }
    let flags = bytes[3];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::Corrupt(format!("unknown flags {flags:#04x}")));
    }
    let meta_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let rest = &bytes[HEADER_LEN..];
    if meta_len > rest.len() {
        return Err(DecodeError::Corrupt("metadata longer than the value".into()));
    }
    let (meta, body) = rest.split_at(meta_len);
    let meta: Meta =
        serde_json::from_slice(meta).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let value: Arc<[u8]> = if flags & FLAG_LZ4 != 0 {
        let claimed = body.get(..4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize);
        if claimed.is_none_or(|n| n > MAX_INFLATED || n > body.len().saturating_mul(MAX_RATIO)) {
            return Err(DecodeError::Corrupt("implausible inflated size".into()));
        }
        lz4_flex::decompress_size_prepended(body)
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?
            .into()
    } else {
        Arc::from(body)
    };
    let time = |ms: i64| {
        DateTime::from_timestamp_millis(ms).ok_or_else(|| DecodeError::Corrupt("bad time".into()))
    };
    Ok(Entry {
        etag: meta.etag.map_or_else(|| etag_of(&value), Cow::into_owned),
        value,
        content_type: meta.ct.into_owned(),
        stored_at: time(meta.at)?,
        expires_at: time(meta.exp)?,
        tags: meta.tags.into_iter().map(Cow::into_owned).collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(value: Vec<u8>) -> Entry {
        Entry::new(value, "application/json", Duration::from_secs(60), vec!["a".into(), "b".into()])
    }

    #[test]
    fn small_values_round_trip_uncompressed() {
        let e = entry(b"{\"x\":1}".to_vec());
        let bytes = encode(&e, 1024);
        assert!(!is_compressed(&bytes));
        let back = decode(&bytes).unwrap();
        assert_eq!(back.value, e.value);
        assert_eq!(back.tags, e.tags);
        assert_eq!(back.etag, e.etag);
        assert_eq!(back.expires_at.timestamp_millis(), e.expires_at.timestamp_millis());
    }

    #[test]
    fn derivable_metadata_is_left_out_and_restored() {
        let plain = Entry::new(b"{}".to_vec(), "application/json", Duration::from_secs(60), vec![]);
        let bytes = encode(&plain, 1024);
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("etag") && !text.contains("tags"), "{text}");
        let back = decode(&bytes).unwrap();
        assert_eq!((back.etag, back.tags), (plain.etag.clone(), plain.tags.clone()));
        // An ETag that is not the value's hash (set by hand) is kept as it is.
        let custom = Entry { etag: "\"v7\"".into(), ..plain };
        assert_eq!(decode(&encode(&custom, 1024)).unwrap().etag, "\"v7\"");
    }

    #[test]
    fn version_1_entries_still_read() {
        let meta =
            br#"{"ct":"text/plain","etag":"\"abc\"","at":1,"exp":4102444800000,"tags":["t"]}"#;
        let mut bytes = b"JY\x01\x00".to_vec();
        bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        bytes.extend_from_slice(meta);
        bytes.extend_from_slice(b"hello");
        let back = decode(&bytes).unwrap();
        assert_eq!((&*back.value, back.etag.as_str()), (&b"hello"[..], "\"abc\""));
        assert_eq!((back.content_type.as_str(), back.tags), ("text/plain", vec!["t".to_string()]));
    }

    #[test]
    fn large_values_are_compressed_and_round_trip() {
        let json =
            br#"{"repo":"jobyard","open_pull_requests":42,"labels":["bug","perf"]}"#.repeat(200);
        let e = entry(json.clone());
        let bytes = encode(&e, 1024);
        assert!(is_compressed(&bytes));
        assert!(bytes.len() < json.len() / 4, "{} vs {}", bytes.len(), json.len());
        assert_eq!(&*decode(&bytes).unwrap().value, &json[..]);
    }

    #[test]
    fn incompressible_values_are_stored_raw() {
        let noise: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        assert!(!is_compressed(&encode(&entry(noise), 1024)));
    }

    #[test]
    fn foreign_truncated_and_future_bytes_are_errors_not_panics() {
        let good = encode(&entry(b"x".repeat(5000)), 16);
        assert_eq!(decode(b"plain text"), Err(DecodeError::Foreign));
        assert!(matches!(decode(&good[..good.len() - 10]), Err(DecodeError::Corrupt(_))));
        assert!(matches!(decode(&good[..12]), Err(DecodeError::Corrupt(_))));
        let mut future = good.clone();
        future[2] = 9;
        assert_eq!(decode(&future), Err(DecodeError::Version(9)));
        let mut flagged = good.clone();
        flagged[3] |= 0x80;
        assert!(matches!(decode(&flagged), Err(DecodeError::Corrupt(_))), "unknown flags");
        // A compressed body claiming to inflate to 1 GiB from a few bytes is refused up front.
        let mut bomb = good[..HEADER_LEN].to_vec();
        let meta_len = u32::from_le_bytes([good[4], good[5], good[6], good[7]]) as usize;
        bomb.extend_from_slice(&good[HEADER_LEN..HEADER_LEN + meta_len]);
        bomb.extend_from_slice(&(1u32 << 29).to_le_bytes());
        bomb.extend_from_slice(&[0u8; 16]);
        assert!(matches!(decode(&bomb), Err(DecodeError::Corrupt(_))));
        for cut in 0..good.len().min(200) {
            let _ = decode(&good[..cut]);
        }
    }
}
