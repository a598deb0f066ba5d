//! Deleting an nf_tables table over netlink (`NETLINK_NETFILTER`), the one thing
//! the iptables-nft tools cannot do: they flush and delete chains but leave the
//! table itself behind. DEL must remove what ADD created, and it must not depend on
//! the `nft` command (the `nftables` package is on few nodes and in no CNI image),
//! so the plugin speaks the kernel's protocol directly: one batch
//! `BATCH_BEGIN, DELTABLE, BATCH_END`, acknowledged by the kernel.
//!
//! The messages are built by hand ([`delete_table_batch`], a pure function tested
//! byte for byte); only [`delete_table`] touches a socket.

use netlink_sys::{Socket, SocketAddr};

use crate::rules::Family;

/// `NETLINK_NETFILTER` (linux/netlink.h).
const NETLINK_NETFILTER: isize = 12;
/// `NFNL_SUBSYS_NFTABLES` (linux/netfilter/nfnetlink.h).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` / `_END` (`NLMSG_MIN_TYPE` and the next).
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFT_MSG_DELTABLE` (linux/netfilter/nf_tables.h).
const NFT_MSG_DELTABLE: u16 = 2;
/// `NFTA_TABLE_NAME`.
const NFTA_TABLE_NAME: u16 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 0x2;
/// `NFPROTO_IPV4` / `NFPROTO_IPV6`: the `ip` and `ip6` families of `nft`.
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// The sequence number of the DELTABLE message, whose acknowledgement we wait for.
const DELETE_SEQ: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("invalid nf_tables table name {0:?}: must be 1..=255 bytes without NUL")]
    Name(String),
    #[error("netlink socket (NETLINK_NETFILTER): {0}")]
    Socket(std::io::Error),
    #[error("deleting nf_tables table {family} {table}: {source}")]
    Delete {
        family: &'static str,
        table: String,
        source: std::io::Error,
    },
    #[error("deleting nf_tables table {family} {table}: unexpected kernel reply: {reason}")]
    Reply {
        family: &'static str,
        table: String,
        reason: String,
    },
}

fn nft_family(f: Family) -> (u8, &'static str) {
    match f {
        Family::V4 => (NFPROTO_IPV4, "ip"),
        Family::V6 => (NFPROTO_IPV6, "ip6"),
    }
}

/// Appends one netlink message: header, `nfgenmsg`, attributes (already padded).
fn push_msg(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = 16 + 4 + attrs.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
                                                // struct nfgenmsg { family, version = NFNETLINK_V0, res_id (big endian) }
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
}

/// The batch that deletes table `name` of family `f`.
pub fn delete_table_batch(f: Family, name: &str) -> Result<Vec<u8>, NftError> {
    if name.is_empty() || name.len() > 255 || name.contains('\0') {
        return Err(NftError::Name(name.to_string()));
    }
    // NFTA_TABLE_NAME: a NUL-terminated string, the attribute padded to 4 bytes.
    let payload_len = name.len() + 1;
    let mut attr = Vec::with_capacity(4 + payload_len + 3);
    attr.extend_from_slice(&((4 + payload_len) as u16).to_ne_bytes());
    attr.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
    attr.extend_from_slice(name.as_bytes());
    attr.push(0);
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let (family, _) = nft_family(f);
    let mut out = Vec::with_capacity(64 + attr.len());
    let batch = NFNL_SUBSYS_NFTABLES;
    push_msg(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        1,
        0,
        batch,
        &[],
    );
    let del = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE;
    push_msg(
        &mut out,
        del,
        NLM_F_REQUEST | NLM_F_ACK,
        DELETE_SEQ,
        family,
        0,
        &attr,
    );
    push_msg(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        3,
        0,
        batch,
        &[],
    );
    Ok(out)
}

/// What the kernel said about message `seq` in `reply`: `Some(0)` for an ACK,
/// `Some(errno)` for an error, `None` when the reply does not mention it.
pub fn ack_for(reply: &[u8], seq: u32) -> Option<i32> {
    let mut rest = reply;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        if len < 16 || len > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().ok()?);
        if kind == NLMSG_ERROR && msg_seq == seq && len >= 20 {
            let code = i32::from_ne_bytes(rest[16..20].try_into().ok()?);
            return Some(-code);
        }
        rest = &rest[(len + 3) & !3..];
    }
    None
}

/// Deletes table `name` (and whatever it still holds) of family `f` in the current
/// network namespace. A table that does not exist is not an error.
pub fn delete_table(f: Family, name: &str) -> Result<(), NftError> {
    let (_, family) = nft_family(f);
    let batch = delete_table_batch(f, name)?;
    let err = |source| NftError::Delete {
        family,
        table: name.to_string(),
        source,
    };
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
    sock.bind_auto().map_err(NftError::Socket)?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(NftError::Socket)?;
    sock.send(&batch, 0).map_err(err)?;
    // The kernel answers each message that asked for an ACK (and any that failed).
    for _ in 0..8 {
        let (reply, _) = sock.recv_from_full().map_err(err)?;
        match ack_for(&reply, DELETE_SEQ) {
            Some(0) => return Ok(()),
            Some(e) if e == libc::ENOENT => return Ok(()),
            Some(e) => return Err(err(std::io::Error::from_raw_os_error(e))),
            None => continue,
        }
    }
    Err(NftError::Reply {
        family,
        table: name.to_string(),
        reason: "no acknowledgement for the delete".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_layout() {
        let b = delete_table_batch(Family::V4, "nat").unwrap();
        // begin (20) + delete (20 + 8 for "nat\0") + end (20)
        assert_eq!(b.len(), 20 + 28 + 20);
        let kind = |off: usize| u16::from_ne_bytes([b[off + 4], b[off + 5]]);
        assert_eq!(kind(0), 0x10);
        assert_eq!(kind(20), 0x0a02);
        assert_eq!(kind(48), 0x11);
        // batch messages name the nftables subsystem in res_id (big endian)
        assert_eq!(&b[18..20], &[0, 10]);
        // the delete: family ip, flags request|ack, attribute NFTA_TABLE_NAME "nat\0"
        assert_eq!(b[36], NFPROTO_IPV4);
        assert_eq!(
            u16::from_ne_bytes([b[26], b[27]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        let mut attr = 8u16.to_ne_bytes().to_vec();
        attr.extend_from_slice(&1u16.to_ne_bytes());
        attr.extend_from_slice(b"nat\0");
        assert_eq!(&b[40..48], &attr[..]);
        let b6 = delete_table_batch(Family::V6, "mangle").unwrap();
        assert_eq!(b6[36], NFPROTO_IPV6);
        assert_eq!(b6.len() % 4, 0);
    }

    #[test]
    fn bad_names_refused() {
        assert!(delete_table_batch(Family::V4, "").is_err());
        assert!(delete_table_batch(Family::V4, "a\0b").is_err());
        assert!(delete_table_batch(Family::V4, &"x".repeat(256)).is_err());
    }

    #[test]
    fn ack_parsing() {
        let mut reply = Vec::new();
        // an error message for seq 2 carrying -EPERM
        reply.extend_from_slice(&36u32.to_ne_bytes());
        reply.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        reply.extend_from_slice(&0u16.to_ne_bytes());
        reply.extend_from_slice(&2u32.to_ne_bytes());
        reply.extend_from_slice(&0u32.to_ne_bytes());
        reply.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        reply.extend_from_slice(&[0u8; 16]);
        assert_eq!(ack_for(&reply, 2), Some(libc::EPERM));
        assert_eq!(ack_for(&reply, 3), None);
        assert_eq!(ack_for(&reply[..10], 2), None);
    }
}
