//! Feeds arbitrary bytes to the MQTT decoder, before and after CONNECT, for every protocol:
//! it must return packets or errors, never panic, and whatever it decodes must re-encode to
//! something that decodes to the same packet.
//!
//! `cargo fuzz run decode` from `broker/` (cargo install cargo-fuzz).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use vmq_broker::mqtt::{MqttCodec, Packet, Protocol, encode_packet};

fuzz_target!(|data: &[u8]| {
    let mut server = MqttCodec::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = server.decode(&mut buf) {}

    for p in [Protocol::V31, Protocol::V311, Protocol::V5] {
        let mut codec = MqttCodec::for_client(p, 64 * 1024);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = codec.decode(&mut buf) {
            let protocol = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => p,
            };
            let mut again = BytesMut::new();
            encode_packet(&packet, protocol, &mut again);
            let mut check = MqttCodec::for_client(protocol, usize::MAX);
            let back = check.decode(&mut again).expect("re-encoded packet decodes");
            assert_eq!(back, Some(packet));
        }
    }
});
