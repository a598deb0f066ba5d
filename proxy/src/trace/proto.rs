//! A minimal protobuf (proto3 wire format) writer: just the field kinds the
//! OTLP trace export needs (varint, fixed64, length-delimited bytes/strings,
//! embedded messages). Written by hand so the sidecar does not link a
//! protobuf code generator's runtime for one message type.
//!
//! An embedded message is written in place: its length is written as one
//! byte first and, when the body turns out to be 128 bytes or longer, the
//! body is shifted to make room for the longer varint (each nesting level
//! copies its body at most once).

/// Wire types (the low three bits of a field key).
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// Appends protobuf fields to a byte buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

/// The bytes `v` takes as a varint.
fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 still takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Writer {
    pub fn with_capacity(n: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn key(&mut self, field: u32, wire: u8) {
        put_varint(&mut self.buf, (u64::from(field) << 3) | u64::from(wire));
    }

    /// An unsigned integer or enum field (`uint32`, `uint64`, `int64` ≥ 0, enums ≥ 0).
    pub fn varint(&mut self, field: u32, v: u64) {
        self.key(field, VARINT);
        put_varint(&mut self.buf, v);
    }

    /// A `fixed64` field (little-endian, 8 bytes).
    pub fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, FIXED64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `bytes` field.
    pub fn bytes(&mut self, field: u32, v: &[u8]) {
        self.key(field, LEN);
        put_varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// A `string` field.
    pub fn string(&mut self, field: u32, v: &str) {
        self.bytes(field, v.as_bytes());
    }

    /// An embedded message field whose body `body` writes.
    pub fn message(&mut self, field: u32, body: impl FnOnce(&mut Writer)) {
        self.key(field, LEN);
        let at = self.buf.len();
        self.buf.push(0);
        body(self);
        let len = self.buf.len() - at - 1;
        let n = varint_len(len as u64);
        if n > 1 {
            // Make room for the longer length varint in front of the body.
            self.buf
                .splice(at + 1..at + 1, std::iter::repeat_n(0, n - 1));
        }
        let mut v = Vec::with_capacity(n);
        put_varint(&mut v, len as u64);
        self.buf[at..at + n].copy_from_slice(&v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::default();
        f(&mut w);
        w.finish()
    }

    #[test]
    fn encodes_the_protobuf_documentation_examples() {
        // "message Test1 { int32 a = 1; }" with a = 150.
        assert_eq!(written(|w| w.varint(1, 150)), [0x08, 0x96, 0x01]);
        // "message Test2 { string b = 2; }" with b = "testing".
        assert_eq!(
            written(|w| w.string(2, "testing")),
            [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']
        );
        // "message Test3 { Test1 c = 3; }" with c.a = 150.
        assert_eq!(
            written(|w| w.message(3, |w| w.varint(1, 150))),
            [0x1a, 0x03, 0x08, 0x96, 0x01]
        );
        assert_eq!(
            written(|w| w.fixed64(7, 0x0102030405060708)),
            [0x39, 8, 7, 6, 5, 4, 3, 2, 1]
        );
        // A field number past 15 takes a two-byte key.
        assert_eq!(written(|w| w.varint(16, 1)), [0x80, 0x01, 0x01]);
        assert_eq!(written(|w| w.varint(1, u64::MAX)).len(), 1 + 10);
    }

    #[test]
    fn varint_lengths_at_the_boundaries() {
        for (v, n) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
            (u64::MAX, 10),
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!((b.len(), varint_len(v)), (n, n), "{v}");
        }
    }

    #[test]
    fn a_long_embedded_message_gets_a_multi_byte_length() {
        for len in [127usize, 128, 300, 20_000] {
            let body = vec![b'x'; len];
            let got = written(|w| {
                w.message(1, |w| w.bytes(2, &body));
                w.varint(3, 1);
            });
            let inner = 1 + varint_len(len as u64) + len;
            let mut want = vec![0x0a];
            put_varint(&mut want, inner as u64);
            want.push(0x12);
            put_varint(&mut want, len as u64);
            want.extend_from_slice(&body);
            want.extend_from_slice(&[0x18, 0x01]);
            assert_eq!(got, want, "body of {len}");
        }
        // Nested: both levels' lengths grow.
        let got = written(|w| w.message(1, |w| w.message(1, |w| w.bytes(1, &[7; 200]))));
        assert_eq!(&got[..3], &[0x0a, 0xce, 0x01]); // 206 = 1 + 2 + 203
        assert_eq!(&got[3..6], &[0x0a, 0xcb, 0x01]); // 203 = 1 + 2 + 200
        assert_eq!(got.len(), 3 + 206);
    }
}
