//! The EDNS Client Subnet of a query (RFC 7871): which clients a resolver asks for.
//!
//! The request parser reads it, the answer echoes it, and the straggler ledger keys its
//! entries by it, so it lives apart from all three.

use std::net::{Ipv4Addr, Ipv6Addr};

/// An EDNS Client Subnet option of a query (RFC 7871 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientSubnet {
    /// 1 for IPv4, 2 for IPv6 (IANA address family numbers).
    pub family: u16,
    pub source_prefix: u8,
    /// The address bits, zero beyond the source prefix.
    pub address: [u8; 16],
}

impl ClientSubnet {
    /// `192.0.2.0/24` or `2001:db8::/56`.
    pub fn display(&self) -> String {
        let a = &self.address;
        match self.family {
            1 => format!(
                "{}/{}",
                Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                self.source_prefix
            ),
            _ => format!("{}/{}", Ipv6Addr::from(*a), self.source_prefix),
        }
    }
}
