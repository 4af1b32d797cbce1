//! Raw DNS messages, for what dig cannot express: queries built by hand, UDP and TCP
//! exchanges, answers decoded with hickory-proto.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// A wire-format query: `name` (dotted), `qtype`, class IN, with the given ID and no flags.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut packet = flipdns::fixture::query(name, qtype);
    packet[..2].copy_from_slice(&id.to_be_bytes());
    packet[2] = 0;
    packet
}

/// Sends `packet` over UDP and returns the reply, or `None` after `wait`.
pub fn exchange(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65535];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

/// The IPv4 addresses in the answer section of a wire-format response.
pub fn a_records(response: &[u8]) -> Vec<std::net::Ipv4Addr> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RData;
    let message = Message::from_vec(response).expect("a well-formed response");
    message
        .answers
        .iter()
        .filter_map(|r| {
            if let RData::A(a) = &r.data {
                Some(a.0)
            } else {
                None
            }
        })
        .collect()
}

/// A wire-format query with an EDNS Client Subnet option for an IPv4 `subnet`/`prefix`.
pub fn query_with_subnet(
    id: u16,
    name: &str,
    qtype: u16,
    subnet: Option<([u8; 4], u8)>,
) -> Vec<u8> {
    let mut packet = query(id, name, qtype);
    let Some((address, prefix)) = subnet else {
        return packet;
    };
    let bytes = &address[..(prefix as usize).div_ceil(8)];
    packet[11] = 1;
    packet.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
    packet.extend_from_slice(&(8 + bytes.len() as u16).to_be_bytes());
    packet.extend_from_slice(&8u16.to_be_bytes());
    packet.extend_from_slice(&(4 + bytes.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 1, prefix, 0]);
    packet.extend_from_slice(bytes);
    packet
}

/// `packet` with the two-byte length prefix of DNS over TCP.
pub fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = (packet.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(packet);
    out
}

/// Reads one length-prefixed DNS message from a TCP stream.
pub fn read_reply(stream: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}
