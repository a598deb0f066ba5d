//! TLS 1.3 record protection (RFC 8446 §5) for mesh connections once rustls
//! has finished the handshake: the traffic keys rustls hands over seal and
//! open records in place in the connection's own buffers. rustls' own record
//! layer copies each record into a fresh allocation on the way out and
//! through a plaintext queue on the way in; for a sidecar's small request
//! and answer records that bookkeeping cost more than the cipher.
//!
//! Only what a sidecar needs after the handshake: application data, alerts
//! and post-handshake handshake messages, with the three AEADs of TLS 1.3
//! that rustls negotiates.

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

/// Outer content type of every protected record.
pub const APPLICATION_DATA: u8 = 23;
/// Inner content types.
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
/// The largest plaintext a record carries.
pub const MAX_FRAGMENT: usize = 16 * 1024;
/// Record header length.
pub const HEADER: usize = 5;
/// AEAD tag length (the same for all three suites).
pub const TAG: usize = 16;
/// The largest ciphertext a peer may send (RFC 8446 §5.2).
pub const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
/// Records sealed under one key before we update it ourselves: AES-GCM's
/// confidentiality limit is 2^24.5 records (RFC 8446 §5.5).
pub const REKEY_AFTER: u64 = 1 << 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("TLS record with outer content type {0} (want 23, application data)")]
    OuterType(u8),
    #[error("TLS record of {0} bytes exceeds the limit of {MAX_CIPHERTEXT}")]
    TooLong(usize),
    #[error("TLS record failed to decrypt (bad record MAC)")]
    BadMac,
    #[error("TLS record has no content type (all padding)")]
    NoContentType,
    #[error("unsupported TLS cipher suite for the mesh record layer")]
    Suite,
    #[error("TLS sequence number exhausted")]
    Sequence,
}

/// One direction's traffic key, IV and sequence number.
pub struct Keys {
    key: LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Keys {
    pub fn new(secrets: ConnectionTrafficSecrets, seq: u64) -> Result<Self, RecordError> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(RecordError::Suite),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| RecordError::Suite)?;
        let iv: [u8; aead::NONCE_LEN] = iv.as_ref().try_into().map_err(|_| RecordError::Suite)?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// Records protected with this key so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The per-record nonce: the IV XOR the sequence number (RFC 8446 §5.3).
    fn next_nonce(&mut self) -> Result<Nonce, RecordError> {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(RecordError::Sequence)?;
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Appends one record holding `parts` (at most [`MAX_FRAGMENT`] bytes in
    /// all) of content type `typ` to `out`.
    pub fn seal(&mut self, typ: u8, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let plain: usize = parts.iter().map(|p| p.len()).sum();
        debug_assert!(plain <= MAX_FRAGMENT);
        let len = plain + 1 + TAG;
        let start = out.len();
        out.reserve(HEADER + len);
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        out.extend_from_slice(&header);
        for p in parts {
            out.extend_from_slice(p);
        }
        out.push(typ);
        let nonce = self.next_nonce()?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..])
            .map_err(|_| RecordError::Sequence)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens the record that fills `record` (header included) in place:
    /// its inner content type and where its content now lies in `record`.
    pub fn open(&mut self, record: &mut [u8]) -> Result<(u8, Range<usize>), RecordError> {
        let header: [u8; HEADER] = record[..HEADER].try_into().expect("a whole record");
        if header[0] != APPLICATION_DATA {
            return Err(RecordError::OuterType(header[0]));
        }
        let nonce = self.next_nonce()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(header), &mut record[HEADER..])
            .map_err(|_| RecordError::BadMac)?;
        // Padding is zeros after the content type (RFC 8446 §5.4).
        let end = plain
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(RecordError::NoContentType)?;
        Ok((plain[end], HEADER..HEADER + end))
    }
}

/// The length of the record at the front of `buf` (header included), once
/// its header is there.
pub fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if len > MAX_CIPHERTEXT {
        return Err(RecordError::TooLong(len));
    }
    Ok(Some(HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn keys(seq: u64) -> Keys {
        let key = AeadKey::from([7u8; 32]);
        let iv = Iv::from([9u8; 12]);
        Keys::new(ConnectionTrafficSecrets::Aes256Gcm { key, iv }, seq).unwrap()
    }

    #[test]
    fn a_sealed_record_opens_to_its_content_and_type() {
        let (mut tx, mut rx) = (keys(3), keys(3));
        let mut out = Vec::new();
        tx.seal(APPLICATION_DATA, &[b"GET / ", b"HTTP/1.1\r\n"], &mut out)
            .unwrap();
        tx.seal(ALERT, &[&[1, 0]], &mut out).unwrap();
        let n = record_len(&out).unwrap().unwrap();
        assert_eq!(n, HEADER + 16 + 1 + TAG);
        let (typ, r) = rx.open(&mut out[..n]).unwrap();
        assert_eq!(
            (typ, &out[r]),
            (APPLICATION_DATA, &b"GET / HTTP/1.1\r\n"[..])
        );
        let (typ, r) = rx.open(&mut out[n..]).unwrap();
        assert_eq!((typ, &out[r.start + n..r.end + n]), (ALERT, &[1u8, 0][..]));
        assert_eq!((tx.seq(), rx.seq()), (5, 5));
    }

    #[test]
    fn tampering_replay_and_wrong_sequence_fail() {
        let mut tx = keys(0);
        let mut out = Vec::new();
        tx.seal(APPLICATION_DATA, &[b"hello"], &mut out).unwrap();
        let mut flipped = out.clone();
        flipped[HEADER + 1] ^= 1;
        assert_eq!(keys(0).open(&mut flipped), Err(RecordError::BadMac));
        // The same record at the next sequence number (a replay) fails.
        assert_eq!(keys(1).open(&mut out.clone()), Err(RecordError::BadMac));
        let mut header = out.clone();
        header[4] ^= 1; // the header is authenticated too
        assert_eq!(keys(0).open(&mut header), Err(RecordError::BadMac));
        out[0] = 22;
        assert_eq!(keys(0).open(&mut out), Err(RecordError::OuterType(22)));
    }

    #[test]
    fn oversized_records_are_refused_from_the_header() {
        assert_eq!(record_len(&[23, 3, 3, 0]), Ok(None));
        assert_eq!(record_len(&[23, 3, 3, 0x41, 0]), Ok(Some(HEADER + 0x4100)));
        assert_eq!(
            record_len(&[23, 3, 3, 0x41, 1]),
            Err(RecordError::TooLong(0x4101))
        );
    }
}
