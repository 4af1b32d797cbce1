//! Observations packed for the trip from a receive loop to the ledger task.
//!
//! The bytes a receive loop writes are read by the ledger task on another core; each cache
//! line that crosses costs more than answering the query did. So an observation is packed
//! into 16 bytes (an IPv4 resolver without a client subnet, the common case: four to a cache
//! line), followed by one 16-byte chunk for an IPv6 resolver and one for a client subnet.
//!
//! Chunk layout: resolver IPv4 (4) | service, low 16 bits (2) | TTL (4) | milliseconds after
//! the batch's base time (2) | flags (1) | subnet prefix (1) | flip tag (1) | service, high
//! 8 bits (1): service ids are below [`crate::config::MAX_SERVICES`], under 2^24. A client
//! subnet's family (1 or 2, the only ones a request may carry) is a flag. Batches carry the
//! query path's own answers only: `via` is always this server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::answers::{NameKind, Observation};
use crate::color::Color;
use crate::wire::subnet::ClientSubnet;

/// Chunks a batch holds: room for [`super::answers::BATCH`] observations of the common size, fewer
/// of the larger ones.
pub const CHUNKS: usize = super::answers::BATCH;

const GREEN: u8 = 1;
const COLOR_NAME: u8 = 2;
const V6: u8 = 4;
const SUBNET: u8 = 8;
/// The client subnet is IPv6 (family 2); without it, IPv4 (family 1).
const SUBNET_V6: u8 = 16;

/// A batch of packed observations.
#[derive(Debug)]
pub struct Batch {
    /// Unix milliseconds of the first observation; the others are offsets from it.
    base_ms: u64,
    chunks: Vec<[u8; 16]>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            base_ms: 0,
            chunks: Vec::with_capacity(CHUNKS),
        }
    }

    /// Monotonic milliseconds of the first observation (meaningless when empty).
    pub fn since_ms(&self) -> u64 {
        self.base_ms
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
    }

    /// Appends `o`, or returns `false` when it does not fit: the batch is full, or `o` is
    /// not within 65 s after the base time (also when the clock stepped back). Flush and
    /// push again.
    #[inline]
    pub fn push(&mut self, o: &Observation) -> bool {
        if self.chunks.is_empty() {
            self.base_ms = o.at_ms;
        }
        let offset = o.at_ms.wrapping_sub(self.base_ms);
        let (v4, v6) = match o.resolver {
            IpAddr::V4(v4) => (v4.octets(), None),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (v4.octets(), None),
                None => ([0; 4], Some(v6.octets())),
            },
        };
        let needed = 1 + v6.is_some() as usize + o.subnet.is_some() as usize;
        if offset > u64::from(u16::MAX) || self.chunks.len() + needed > CHUNKS {
            return false;
        }
        let mut flags = 0;
        if o.color == Color::Green {
            flags |= GREEN;
        }
        if o.name == NameKind::Color {
            flags |= COLOR_NAME;
        }
        if v6.is_some() {
            flags |= V6;
        }
        let prefix = match o.subnet {
            Some(s) => {
                flags |= SUBNET;
                if s.family == 2 {
                    flags |= SUBNET_V6;
                }
                s.source_prefix
            }
            None => 0,
        };
        let mut chunk = [0u8; 16];
        chunk[..4].copy_from_slice(&v4);
        let service = o.service.to_le_bytes();
        chunk[4..6].copy_from_slice(&service[..2]);
        chunk[15] = service[2];
        chunk[6..10].copy_from_slice(&o.ttl.to_le_bytes());
        chunk[10..12].copy_from_slice(&(offset as u16).to_le_bytes());
        chunk[12] = flags;
        chunk[13] = prefix;
        chunk[14] = o.flip_tag;
        self.chunks.push(chunk);
        if let Some(v6) = v6 {
            self.chunks.push(v6);
        }
        if let Some(s) = o.subnet {
            self.chunks.push(s.address);
        }
        true
    }

    /// The observations, unpacked.
    pub fn iter(&self) -> impl Iterator<Item = Observation> + '_ {
        let mut chunks = self.chunks.iter();
        std::iter::from_fn(move || {
            let chunk = chunks.next()?;
            let flags = chunk[12];
            let resolver = if flags & V6 != 0 {
                IpAddr::V6(Ipv6Addr::from(*chunks.next()?))
            } else {
                IpAddr::V4(Ipv4Addr::new(chunk[0], chunk[1], chunk[2], chunk[3]))
            };
            let subnet = if flags & SUBNET != 0 {
                Some(ClientSubnet {
                    family: if flags & SUBNET_V6 != 0 { 2 } else { 1 },
                    source_prefix: chunk[13],
                    address: *chunks.next()?,
                })
            } else {
                None
            };
            Some(Observation {
                at_ms: self.base_ms + u64::from(u16::from_le_bytes([chunk[10], chunk[11]])),
                resolver,
                subnet,
                service: u32::from_le_bytes([chunk[4], chunk[5], chunk[15], 0]),
                color: if flags & GREEN != 0 {
                    Color::Green
                } else {
                    Color::Blue
                },
                name: if flags & COLOR_NAME != 0 {
                    NameKind::Color
                } else {
                    NameKind::Service
                },
                ttl: u32::from_le_bytes([chunk[6], chunk[7], chunk[8], chunk[9]]),
                flip_tag: chunk[14],
                via: super::answers::LOCAL,
            })
        })
    }
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(resolver: IpAddr, subnet: Option<ClientSubnet>, at_ms: u64) -> Observation {
        Observation {
            at_ms,
            resolver,
            subnet,
            service: 3,
            color: Color::Green,
            name: NameKind::Color,
            ttl: 86_400,
            flip_tag: 7,
            via: 0,
        }
    }

    #[test]
    fn observations_survive_the_trip() {
        let subnet = ClientSubnet {
            family: 2,
            source_prefix: 56,
            address: [0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let sent = [
            observation("192.0.2.1".parse().unwrap(), None, 1_000),
            observation("2001:db8::53".parse().unwrap(), Some(subnet), 1_005),
            observation("::ffff:192.0.2.9".parse().unwrap(), None, 66_535),
            Observation {
                color: Color::Blue,
                name: NameKind::Service,
                ..observation("192.0.2.2".parse().unwrap(), None, 1_000)
            },
            Observation {
                // Past 16 bits: a config of 100,000 services.
                service: 99_999,
                ..observation("192.0.2.3".parse().unwrap(), None, 1_001)
            },
            Observation {
                service: crate::config::MAX_SERVICES as u32 - 1,
                flip_tag: 255,
                ..observation("192.0.2.4".parse().unwrap(), None, 1_002)
            },
        ];
        let mut batch = Batch::new();
        for o in &sent {
            assert!(batch.push(o));
        }
        let got: Vec<Observation> = batch.iter().collect();
        assert_eq!(got[0], sent[0]);
        assert_eq!(got[1], sent[1]);
        assert_eq!(
            got[2].resolver,
            "192.0.2.9".parse::<IpAddr>().unwrap(),
            "mapped IPv4 resolvers travel as IPv4"
        );
        assert_eq!(got[3..], sent[3..]);
        assert_eq!(batch.chunks.len(), 8);
    }

    #[test]
    fn a_batch_refuses_what_does_not_fit() {
        let mut batch = Batch::new();
        assert!(batch.push(&observation("192.0.2.1".parse().unwrap(), None, 1_000)));
        assert!(
            !batch.push(&observation(
                "192.0.2.1".parse().unwrap(),
                None,
                1_000 + 65_536
            )),
            "too late after the base time"
        );
        for _ in 1..CHUNKS {
            assert!(batch.push(&observation("192.0.2.1".parse().unwrap(), None, 1_000)));
        }
        assert!(
            !batch.push(&observation("192.0.2.1".parse().unwrap(), None, 1_000)),
            "full"
        );
    }
}
