//! Numbers as Redis 7.0 reads and writes them.
//!
//! - [`fmt_g17`]: C's `%.17g`, which Redis 7.0 uses for scores in replies and for Lua numbers passed to
//!   `redis.call` (Rust's own formatting differs: `0.1` vs `0.10000000000000001`, `1e+20` vs `1e20`).
//! - [`parse_score`]: `string2d`, the strict reading of ZADD scores (no white space, no NaN, no
//!   overflow or underflow to zero).
//! - [`parse_bound`]: `zslParseRange`'s reading of one ZCOUNT / ZRANGEBYSCORE bound (`(` for an
//!   exclusive bound, plain `strtod` otherwise: leading white space and out-of-range values pass).
//! - [`parse_i64`]: `string2ll`, the strict integer reading (no `+`, no leading zeros, no `-0`).
//!
//! All three parsers sit on [`strtod`], a byte-exact model of glibc's `strtod` in the C locale
//! (decimal through Rust's correctly rounded parser, hexadecimal floats rounded here).

/// `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn starts_with_ci(s: &[u8], word: &[u8]) -> bool {
    s.len() >= word.len() && s[..word.len()].eq_ignore_ascii_case(word)
}

/// What `strtod` read: the value, how many bytes it consumed (0 when nothing converted) and whether
/// it set `errno = ERANGE` (overflow, or underflow of a non-zero number to zero).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Strtod {
    pub value: f64,
    pub end: usize,
    pub range_error: bool,
}

/// glibc's `strtod` on `s` (C locale).
pub(crate) fn strtod(s: &[u8]) -> Strtod {
    let none = Strtod {
        value: 0.0,
        end: 0,
        range_error: false,
    };
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let sign = |v: f64| if neg { -v } else { v };
    let body = &s[i..];
    if starts_with_ci(body, b"inf") {
        let n = if starts_with_ci(body, b"infinity") {
            8
        } else {
            3
        };
        return Strtod {
            value: sign(f64::INFINITY),
            end: i + n,
            range_error: false,
        };
    }
    if starts_with_ci(body, b"nan") {
        let mut n = 3;
        if body.get(3) == Some(&b'(') {
            let mut j = 4;
            while j < body.len() && (body[j].is_ascii_alphanumeric() || body[j] == b'_') {
                j += 1;
            }
            if body.get(j) == Some(&b')') {
                n = j + 1;
            }
        }
        return Strtod {
            value: sign(f64::NAN),
            end: i + n,
            range_error: false,
        };
    }
    if body.len() >= 2 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
        return match parse_hex(&body[2..]) {
            Some((v, n, range_error)) => Strtod {
                value: sign(v),
                end: i + 2 + n,
                range_error,
            },
            // "0x" with no hex digit after it: only the "0" converts.
            None => Strtod {
                value: sign(0.0),
                end: i + 1,
                range_error: false,
            },
        };
    }
    let mut j = 0;
    let mut digits = 0;
    let mut nonzero = false;
    while j < body.len() && body[j].is_ascii_digit() {
        nonzero |= body[j] != b'0';
        digits += 1;
        j += 1;
    }
    if j < body.len() && body[j] == b'.' {
        j += 1;
        while j < body.len() && body[j].is_ascii_digit() {
            nonzero |= body[j] != b'0';
            digits += 1;
            j += 1;
        }
    }
    if digits == 0 {
        return none;
    }
    if j < body.len() && (body[j] | 0x20) == b'e' {
        let mut k = j + 1;
        if k < body.len() && (body[k] == b'+' || body[k] == b'-') {
            k += 1;
        }
        if k < body.len() && body[k].is_ascii_digit() {
            while k < body.len() && body[k].is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    // ASCII digits, '.', 'e' and a sign: always UTF-8, and always a number Rust's grammar accepts.
    let text = std::str::from_utf8(&body[..j]).unwrap_or("0");
    let v: f64 = text.parse().unwrap_or(0.0);
    Strtod {
        value: sign(v),
        end: i + j,
        range_error: v.is_infinite() || (v == 0.0 && nonzero),
    }
}

/// The digits of a hexadecimal float after "0x": (magnitude, bytes consumed, ERANGE), or `None`
/// when no hex digit follows.
fn parse_hex(s: &[u8]) -> Option<(f64, usize, bool)> {
    let mut m: u64 = 0;
    let mut exp: i64 = 0;
    let mut sticky = false;
    let mut any = false;
    let mut j = 0;
    let mut push = |d: u64, frac: bool, m: &mut u64, exp: &mut i64| {
        if *m < (1 << 60) {
            *m = *m * 16 + d;
            if frac {
                *exp -= 4;
            }
        } else {
            sticky |= d != 0;
            if !frac {
                *exp += 4;
            }
        }
    };
    let hex = |b: u8| (b as char).to_digit(16).map(u64::from);
    while let Some(d) = s.get(j).and_then(|&b| hex(b)) {
        any = true;
        push(d, false, &mut m, &mut exp);
        j += 1;
    }
    if s.get(j) == Some(&b'.') {
        let mut k = j + 1;
        while let Some(d) = s.get(k).and_then(|&b| hex(b)) {
            any = true;
            push(d, true, &mut m, &mut exp);
            k += 1;
        }
        if !any {
            return None;
        }
        j = k;
    }
    if !any {
        return None;
    }
    if s.get(j).is_some_and(|&b| (b | 0x20) == b'p') {
        let mut k = j + 1;
        let mut eneg = false;
        if k < s.len() && (s[k] == b'+' || s[k] == b'-') {
            eneg = s[k] == b'-';
            k += 1;
        }
        if k < s.len() && s[k].is_ascii_digit() {
            let mut e: i64 = 0;
            while k < s.len() && s[k].is_ascii_digit() {
                e = (e * 10 + i64::from(s[k] - b'0')).min(1 << 40);
                k += 1;
            }
            exp += if eneg { -e } else { e };
            j = k;
        }
    }
    let (v, range_error) = compose(m, exp, sticky);
    Some((v, j, range_error))
}

/// `m * 2^exp` (plus a sticky bit below `m`) rounded to the nearest double, ties to even.
fn compose(m: u64, exp: i64, sticky: bool) -> (f64, bool) {
    if m == 0 {
        return (0.0, false);
    }
    let lz = m.leading_zeros();
    let m = m << lz;
    // value = m / 2^63 * 2^e, with m in [2^63, 2^64)
    let e = exp - i64::from(lz) + 63;
    if e > 1023 {
        return (f64::INFINITY, true);
    }
    let (shift, mut biased) = if e >= -1022 {
        (11u32, e + 1023)
    } else {
        let s = 11 + (-1022 - e);
        if s > 64 {
            return (0.0, true);
        }
        (s as u32, 0)
    };
    let (mut mant, rem, half) = if shift == 64 {
        (0u64, m, 1u64 << 63)
    } else {
        (m >> shift, m & ((1u64 << shift) - 1), 1u64 << (shift - 1))
    };
    let inexact = rem != 0 || sticky;
    if rem > half || (rem == half && (sticky || mant & 1 == 1)) {
        mant += 1;
    }
    let bits = if biased > 0 {
        if mant == 1 << 53 {
            mant >>= 1;
            biased += 1;
            if biased >= 2047 {
                return (f64::INFINITY, true);
            }
        }
        ((biased as u64) << 52) | (mant & ((1u64 << 52) - 1))
    } else {
        // Subnormal; a carry into bit 52 makes the smallest normal number, which is what it is.
        mant
    };
    let v = f64::from_bits(bits);
    (v, v == 0.0 || (biased == 0 && inexact))
}

/// `string2d`: a ZADD score. `None` for anything Redis answers "value is not a valid float" to.
pub(crate) fn parse_score(s: &[u8]) -> Option<f64> {
    if s.is_empty() || is_c_space(s[0]) {
        return None;
    }
    let r = strtod(s);
    if r.end != s.len()
        || (r.range_error && (r.value.is_infinite() || r.value == 0.0))
        || r.value.is_nan()
    {
        return None;
    }
    Some(r.value)
}

/// One bound of a score range, as `zslParseRange` reads it: (value, exclusive).
pub(crate) fn parse_bound(s: &[u8]) -> Option<(f64, bool)> {
    let (s, exclusive) = match s.first() {
        Some(b'(') => (&s[1..], true),
        _ => (s, false),
    };
    // Redis hands strtod a C string: it stops at an embedded NUL, and so does the end check.
    let s = s.split(|&b| b == 0).next().unwrap_or_default();
    let r = strtod(s);
    if r.end != s.len() || r.value.is_nan() {
        return None;
    }
    Some((r.value, exclusive))
}

/// `string2ll`: a strict 64-bit integer.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    // LONG_STR_SIZE is 21: longer strings are refused before any digit is read.
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if neg {
        if v > 1u64 << 63 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// C's `printf("%.17g", x)` as glibc prints it (`inf`, `-nan`, `1e+20`, `-0`, ...).
pub(crate) fn fmt_g17(x: f64) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // 17 significant digits, correctly rounded (ties to even, as glibc in the default rounding mode).
    let sci = format!("{:.16e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::with_capacity(24);
    if x < 0.0 {
        out.push('-');
    }
    if (-4..17).contains(&exp) {
        if exp >= 0 {
            let (int, frac) = digits.split_at(exp as usize + 1);
            out.push_str(int);
            let frac = frac.trim_end_matches('0');
            if !frac.is_empty() {
                out.push('.');
                out.push_str(frac);
            }
        } else {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(digits.trim_end_matches('0'));
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        let rest = rest.trim_end_matches('0');
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push('0');
        }
        out.push_str(&a.to_string());
    }
    out
}

/// `(long long)` of a Lua number, as x86-64 converts it: truncation, and the "integer indefinite"
/// value `i64::MIN` for NaN and anything out of range (Rust's `as` would saturate instead).
pub(crate) fn lua_number_to_int(x: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if x.is_nan() || !(-LIMIT..LIMIT).contains(&x) {
        i64::MIN
    } else {
        x as i64
    }
}

// The C library is the reference these tests compare against, called through FFI.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use std::ffi::{c_char, c_int, CStr, CString};

    extern "C" {
        fn snprintf(buf: *mut c_char, n: usize, fmt: *const c_char, ...) -> c_int;
        fn strtod(s: *const c_char, end: *mut *mut c_char) -> f64;
        fn __errno_location() -> *mut c_int;
    }

    fn c_g17(x: f64) -> String {
        let mut buf = [0 as c_char; 64];
        // SAFETY: the buffer is 64 bytes and snprintf writes at most that many, NUL included.
        unsafe {
            snprintf(buf.as_mut_ptr(), buf.len(), c"%.17g".as_ptr(), x);
            CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
        }
    }

    fn c_strtod(s: &str) -> Strtod {
        let c = CString::new(s).unwrap();
        let mut end: *mut c_char = std::ptr::null_mut();
        // SAFETY: `c` is a NUL-terminated string that outlives the call; errno is thread-local.
        unsafe {
            *__errno_location() = 0;
            let value = strtod(c.as_ptr(), &mut end);
            Strtod {
                value,
                end: end.offset_from(c.as_ptr()) as usize,
                range_error: *__errno_location() == 34,
            }
        }
    }

    /// A cheap deterministic generator, so the comparisons below cover many numbers every run.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn g17_matches_glibc_on_special_and_random_doubles() {
        let specials = [
            0.1,
            -0.0,
            0.0,
            1e20,
            1e21,
            1e16,
            1e17,
            123456789012345678.0,
            1.0 + 2f64.powi(-17),
            2f64.powi(-1074),
            f64::MAX,
            f64::MIN_POSITIVE,
            1e-5,
            0.0001,
            0.00001234,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -f64::NAN,
            f64::NAN,
            1.5,
            -2.5e-300,
            9007199254740993.0,
        ];
        for x in specials {
            assert_eq!(fmt_g17(x), c_g17(x), "{x:e}");
        }
        let mut s = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            let bits = xorshift(&mut s);
            let x = f64::from_bits(bits);
            assert_eq!(fmt_g17(x), c_g17(x), "bits {bits:#x}");
            let y = (bits % 2_000_001) as f64 / 8.0 - 125_000.0;
            assert_eq!(fmt_g17(y), c_g17(y), "{y}");
        }
    }

    #[test]
    fn strtod_matches_glibc_on_awkward_inputs() {
        let cases = [
            "",
            " ",
            "1",
            " 1",
            "\t-2.5e3x",
            "+.5",
            "5.",
            ".",
            "-.",
            "e5",
            "1e",
            "1e+",
            "1e+5",
            "1E-5",
            "inf",
            "-Infinity",
            "infin",
            "nan",
            "NaN(abc)",
            "nan(",
            "0x",
            "0x.",
            "0x1p3",
            "0x1.8p1",
            "0X.8",
            "0x10",
            "0x1p-1074",
            "0x1p-1075",
            "0x1.8p-1075",
            "0x1p1024",
            "0x1.fffffffffffff8p1023",
            "0x1.fffffffffffff7p1023",
            "0x123456789abcdef0123p-10",
            "0x0.0000000000000000000001p0",
            "1e400",
            "-1e400",
            "1e-400",
            "0e-400",
            "1e-310",
            "4.9e-324",
            "2.4e-324",
            "2.5e-324",
            "00012",
            "-0",
            "1_000",
            "0x1g",
            "0x1pz",
            "123456789012345678901234567890",
            "0.000000000000000000000000000001e30",
            "2.2250738585072011e-308",
            "1.7976931348623157e308",
            "1.7976931348623159e308",
        ];
        for c in cases {
            let ours = super::strtod(c.as_bytes());
            let theirs = c_strtod(c);
            assert_eq!(ours.end, theirs.end, "end of {c:?}");
            assert_eq!(
                ours.value.to_bits(),
                theirs.value.to_bits(),
                "value of {c:?}: {} vs {}",
                ours.value,
                theirs.value
            );
            // glibc also flags inexact subnormal results; Redis only looks at ERANGE for zero and
            // infinite results, which is what `range_error` must get right.
            if theirs.value == 0.0 || theirs.value.is_infinite() {
                assert_eq!(ours.range_error, theirs.range_error, "ERANGE of {c:?}");
            }
        }
        let mut s = 0x1234_5678_9ABC_DEF1;
        for _ in 0..50_000 {
            let x = f64::from_bits(xorshift(&mut s));
            for text in [
                format!("{x:e}"),
                format!("{x:?}"),
                c_g17(x),
                format!("{x:.3}"),
            ] {
                let ours = super::strtod(text.as_bytes());
                let theirs = c_strtod(&text);
                assert_eq!(ours.end, theirs.end, "{text}");
                assert_eq!(ours.value.to_bits(), theirs.value.to_bits(), "{text}");
            }
            let hex = format!(
                "0x{:x}.{:x}p{}",
                s >> 40,
                s & 0xffff_ffff,
                (s % 2200) as i64 - 1100
            );
            let ours = super::strtod(hex.as_bytes());
            let theirs = c_strtod(&hex);
            assert_eq!(ours.end, theirs.end, "{hex}");
            assert_eq!(ours.value.to_bits(), theirs.value.to_bits(), "{hex}");
        }
    }

    #[test]
    fn scores_are_read_as_redis_reads_zadd_scores() {
        assert_eq!(parse_score(b"1.5"), Some(1.5));
        assert_eq!(parse_score(b"0x10"), Some(16.0));
        assert_eq!(parse_score(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_score(b"Infinity"), Some(f64::INFINITY));
        assert_eq!(parse_score(b"1e-310"), Some(1e-310));
        assert_eq!(parse_score(b"0e-400"), Some(0.0));
        for bad in ["", " 1", "1 ", "nan", "1e400", "1e-400", "x", "1\0"] {
            assert_eq!(parse_score(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn bounds_accept_what_zsl_parse_range_accepts() {
        assert_eq!(parse_bound(b"(1"), Some((1.0, true)));
        assert_eq!(parse_bound(b"("), Some((0.0, true)));
        assert_eq!(parse_bound(b""), Some((0.0, false)));
        assert_eq!(parse_bound(b" 2"), Some((2.0, false)));
        assert_eq!(parse_bound(b"+inf"), Some((f64::INFINITY, false)));
        assert_eq!(parse_bound(b"1e400"), Some((f64::INFINITY, false)));
        assert_eq!(parse_bound(b"3\0junk"), Some((3.0, false)));
        for bad in [&b"(("[..], b"nan", b"(nan", b"x", b"1 "] {
            assert_eq!(parse_bound(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn integers_are_read_as_string2ll_reads_them() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-0",
            b"+1",
            b"01",
            b"1.0",
            b" 1",
            b"9223372036854775808",
            b"-",
            b"1e3",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lua_numbers_become_integers_as_redis_casts_them() {
        assert_eq!(lua_number_to_int(3.7), 3);
        assert_eq!(lua_number_to_int(-3.7), -3);
        assert_eq!(lua_number_to_int(1e300), i64::MIN);
        assert_eq!(lua_number_to_int(-1e300), i64::MIN);
        assert_eq!(lua_number_to_int(f64::NAN), i64::MIN);
        assert_eq!(lua_number_to_int(-(2f64.powi(63))), i64::MIN);
    }
}
