//! Decoding script replies: numbers, strings and arrays out of [`Reply`], stored scores back to
//! scores, and backend failures to errors.

use crate::backend::{ExecError, Reply};
use crate::error::Error;

/// A failed call whose failure leaves nothing written whether or not Redis answered (a read, a
/// replay step): out of reach or not answered is unavailable; an error reply converts as any other
/// (see `From<ExecError> for Error`).
pub(crate) fn unavailable(e: ExecError) -> Error {
    match e {
        ExecError::Unavailable(m) | ExecError::Unanswered(m) => Error::Unavailable(m),
        e @ ExecError::Reply(_) => e.into(),
    }
}

pub(super) fn fmt_num(x: f64) -> String {
    // Debug keeps exponents short ("1e300") and round-trips exactly through Lua's tonumber.
    format!("{x:?}")
}

pub(super) fn decode_stored(stored: f64, bits: u32) -> f64 {
    if bits == 0 {
        stored
    } else {
        (stored / 2f64.powi(bits as i32)).floor()
    }
}

pub(super) fn bad_reply(what: &str, r: &Reply) -> Error {
    Error::Backend(format!("unexpected {what} reply: {r:?}"))
}

pub(super) fn as_int(r: &Reply) -> Option<i64> {
    match r {
        Reply::Int(i) => Some(*i),
        Reply::Bulk(s) => s.parse().ok(),
        _ => None,
    }
}

pub(super) fn as_u64(r: &Reply) -> Option<u64> {
    as_int(r).and_then(|i| u64::try_from(i).ok())
}

pub(super) fn as_f64(r: &Reply) -> Option<f64> {
    match r {
        Reply::Bulk(s) => s.parse().ok(),
        Reply::Int(i) => Some(*i as f64),
        _ => None,
    }
}

pub(super) fn as_str(r: &Reply) -> Option<&str> {
    match r {
        Reply::Bulk(s) => Some(s),
        _ => None,
    }
}

pub(super) fn as_array(r: &Reply) -> Option<&[Reply]> {
    match r {
        Reply::Array(a) => Some(a),
        _ => None,
    }
}

/// An array of strings (a list of keys, say); `None` when the reply is not one.
pub(super) fn strings(r: &Reply) -> Option<Vec<String>> {
    as_array(r)?
        .iter()
        .map(|x| as_str(x).map(str::to_owned))
        .collect()
}
