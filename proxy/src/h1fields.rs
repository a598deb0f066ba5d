//! The HTTP/1 header values that framing depends on, read one way everywhere:
//! by the request guard (`h1scan`), the own server (`h1server`) and the own
//! client (`h1client`), so the three can never disagree on where a body ends.
//! Plus the two numbers those modules write into heads (decimal lengths, hex
//! chunk sizes), appended without building a `String` per message.

/// The value of a `Content-Length` field: ASCII digits only (RFC 9110 §8.6,
/// `1*DIGIT`), with optional whitespace around them. A sign, hex, an empty
/// value or one past `u64` is no length at all (`None`), as hyper reads it:
/// Rust's own `u64` parser would take `+5`, and a proxy that frames `+5` as
/// five bytes while the next hop refuses it is a smuggling gap.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Whether a comma-separated header value (`Connection`) holds `token`, in
/// any case.
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `n` in upper-case hexadecimal (a chunk size).
pub fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_takes_digits_only() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b" 1024 "), Some(1024));
        assert_eq!(content_length(b"\t42"), Some(42));
        assert_eq!(content_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b" ",
            b"+5",
            b"-5",
            b"0x5",
            b"5 5",
            b"5,5",
            b"1e3",
            b"18446744073709551616",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tokens_are_matched_whole_and_in_any_case() {
        assert!(has_token(b"close", b"close"));
        assert!(has_token(b"Upgrade, CLOSE", b"close"));
        assert!(has_token(b" keep-alive ,te", b"keep-alive"));
        assert!(!has_token(b"closed", b"close"));
        assert!(!has_token(b"keep-alive", b"close"));
        assert!(!has_token(b"", b"close"));
    }

    #[test]
    fn numbers_are_written_as_std_formats_them() {
        for n in [0u64, 7, 10, 255, 4096, 65_535, 1_000_000, u64::MAX] {
            let mut dec = b"x".to_vec();
            push_decimal(&mut dec, n);
            assert_eq!(dec, format!("x{n}").into_bytes());
            let mut hex = Vec::new();
            push_hex(&mut hex, n);
            assert_eq!(hex, format!("{n:X}").into_bytes());
        }
    }
}
