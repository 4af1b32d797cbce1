//! Bytes -> request path -> bytes, over both transports: the handler must not panic, and
//! every reply must be a well-formed response to the packet it answers.
#![no_main]

use std::net::SocketAddr;
use std::sync::LazyLock;

use flipdns::dns::Handler;
use flipdns::wire::Transport;
use flipdns::observed::answers::Recorder;
use libfuzzer_sys::fuzz_target;

static HANDLER: LazyLock<Handler> = LazyLock::new(flipdns::fixture::handler);

fuzz_target!(|packet: &[u8]| {
    let client: SocketAddr = "192.0.2.1:5300".parse().unwrap();
    let mut out = Vec::with_capacity(65535);
    let mut recorder = Recorder::off();
    for transport in [Transport::Udp, Transport::Tcp] {
        if !HANDLER.handle(packet, client, transport, &mut out, &mut recorder) {
            assert!(packet.len() < 12 || packet[2] & 0x80 != 0, "only short packets and responses go unanswered");
            continue;
        }
        assert!(out.len() >= 12 && out[..2] == packet[..2] && out[2] & 0x80 != 0);
        if transport == Transport::Udp {
            assert!(out.len() <= 1232);
        }
        hickory_proto::op::Message::from_vec(&out).expect("a well-formed reply");
    }
});
