//! Optional fields of request bodies take a value of their type or are left out; `null` is a
//! wrong type like any other. Serde reads `null` as an absent `Option` by default, which would
//! make `"max_attempts": null` mean "the default" on some fields and an error on others (those
//! without an `Option`): this deserializer makes every field agree.
//!
//! Use it as `#[serde(default, deserialize_with = "non_null::deserialize")]`: `default` covers a
//! field that is left out, this covers one that is present.

use serde::{Deserialize, Deserializer};

/// Reads a present field as `T` itself, so `null` fails with "invalid type: null, expected …".
pub fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}
