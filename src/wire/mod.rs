//! DNS protocol numbers and sizes, in one place: opcodes, RCODEs, record types, classes,
//! EDNS option codes, message size limits, and how a message travelled.
//!
//! Everything that reads or writes DNS messages (the request handler, zone transfers,
//! NOTIFY, TSIG, the counters) takes its numbers from here. Nothing here knows zones,
//! services or sockets.

pub mod name;
pub mod subnet;
pub mod tsig;

/// DNS header length (RFC 1035 section 4.1.1).
pub const HEADER_LEN: usize = 12;
/// RFC 1035 section 3.1: a name is at most 255 octets in wire format.
pub const MAX_NAME_LEN: usize = 255;

/// Largest UDP payload we send, whatever the requester offers: the 2020 DNS flag day value,
/// which avoids IP fragmentation on practically every path.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Largest UDP payload without EDNS (RFC 1035 section 4.2.1).
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// Largest DNS message over TCP: the two-byte length prefix (RFC 1035 section 4.2.2).
pub const MAX_TCP_MESSAGE: usize = 65535;

pub const OPCODE_QUERY: u8 = 0;
pub const OPCODE_NOTIFY: u8 = 4;
pub const OPCODE_UPDATE: u8 = 5;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;
/// RFC 8945 section 5.2: a TSIG problem (the TSIG error field says which).
pub const RCODE_NOTAUTH: u8 = 9;
/// Extended RCODE 16 (RFC 6891 section 9): the high bits travel in the OPT record.
pub const RCODE_BADVERS: u16 = 16;

pub const CLASS_IN: u16 = 1;
pub const CLASS_CH: u16 = 3;
/// QCLASS ANY (RFC 1035 section 3.2.5); TSIG records carry it (RFC 8945 section 4.2).
pub const CLASS_ANY: u16 = 255;

pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_TSIG: u16 = 250;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;

/// EDNS option codes (IANA "DNS EDNS0 Option Codes").
pub const OPTION_NSID: u16 = 3;
/// EDNS Client Subnet (RFC 7871).
pub const OPTION_CLIENT_SUBNET: u16 = 8;

/// How a message travelled; decides the response size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp = 0,
    Tcp = 1,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Udp, Transport::Tcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Why a packet got no reply at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Shorter than a DNS header: there is no ID to answer to.
    Short = 0,
    /// QR is set: it is a response, and answering responses can loop between servers.
    Response = 1,
}

impl Dropped {
    pub const ALL: [Dropped; 2] = [Dropped::Short, Dropped::Response];

    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Short => "short",
            Dropped::Response => "response",
        }
    }
}

/// The mnemonic of an RCODE, for counters and logs.
pub fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        9 => "NOTAUTH",
        16 => "BADVERS",
        _ => "OTHER",
    }
}
