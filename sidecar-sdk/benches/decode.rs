//! Decode throughput of the frame codec, against the obvious implementation as a baseline
//! measured in the same run: `LengthDelimitedCodec`, then `prost_types::Any` (which copies the
//! value into a `Vec`), then the inner message from that copy.
//!
//! The SDK is measured twice: the owned [`Event`]s of `EventCodec`, and the borrowed
//! [`EventView`]s the server hands to handlers (frames of `FrameCodec`, nothing allocated).
//!
//! `cargo bench -p vmq-sidecar-sdk --bench decode`

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};
use vmq_sidecar_sdk::proto::{Any, OnPublish};
use vmq_sidecar_sdk::testing::publish;
use vmq_sidecar_sdk::{Event, EventCodec, EventView, FrameCodec, JsonRenderer};

const FRAMES: usize = 10_000;

fn wire(payload: usize) -> BytesMut {
    let mut codec = EventCodec::new();
    let mut buf = BytesMut::new();
    let event = publish(payload);
    for _ in 0..FRAMES {
        codec.encode(&event, &mut buf).unwrap();
    }
    buf
}

fn decode(c: &mut Criterion) {
    for payload in [64usize, 4096] {
        let input = wire(payload);
        for (unit, throughput) in [
            ("frames", Throughput::Elements(FRAMES as u64)),
            ("bytes", Throughput::Bytes(input.len() as u64)),
        ] {
            let mut group = c.benchmark_group(format!("decode_{unit}/onpublish_{payload}B"));
            group.throughput(throughput);
            group.bench_function("sdk_event_codec", |b| {
                b.iter_batched(
                    || input.clone(),
                    |mut buf| {
                        let mut codec = EventCodec::new();
                        let mut n = 0;
                        while let Some(event) = codec.decode(&mut buf).unwrap() {
                            black_box(&event);
                            n += 1;
                        }
                        assert_eq!(n, FRAMES);
                    },
                    BatchSize::LargeInput,
                )
            });
            group.bench_function("sdk_event_view", |b| {
                b.iter_batched(
                    || input.clone(),
                    |mut buf| {
                        let mut frames = FrameCodec::new();
                        let mut n = 0;
                        while let Some(frame) = frames.next_frame(&mut buf).unwrap() {
                            let view = EventView::decode_any(&frame).unwrap();
                            black_box(&view);
                            n += 1;
                        }
                        assert_eq!(n, FRAMES);
                    },
                    BatchSize::LargeInput,
                )
            });
            group.bench_function("baseline_prost_any", |b| {
                b.iter_batched(
                    || input.clone(),
                    |mut buf| {
                        let mut codec = LengthDelimitedCodec::new();
                        let mut n = 0;
                        while let Some(frame) = codec.decode(&mut buf).unwrap() {
                            let any = Any::decode(frame.freeze()).unwrap();
                            let event = OnPublish::decode(any.value.as_slice()).unwrap();
                            black_box(&event);
                            n += 1;
                        }
                        assert_eq!(n, FRAMES);
                    },
                    BatchSize::LargeInput,
                )
            });
            group.finish();
        }
    }
}

fn encode_and_render(c: &mut Criterion) {
    let event = publish(64);
    let mut group = c.benchmark_group("per_event/onpublish_64B");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_frame", |b| {
        let mut codec = EventCodec::new();
        let mut buf = BytesMut::with_capacity(1 << 20);
        b.iter(|| {
            if buf.len() > (1 << 20) - 512 {
                buf.clear();
            }
            codec.encode(black_box(&event), &mut buf).unwrap();
        })
    });
    let renderer = JsonRenderer::new();
    let mut line = Vec::with_capacity(1024);
    group.bench_function("render_json", |b| {
        b.iter(|| {
            line.clear();
            renderer.write(&mut line, black_box(&event)).unwrap();
        })
    });
    let any = Bytes::from(event.encode_any_to_vec());
    group.bench_function("decode_any", |b| {
        b.iter(|| Event::decode_any(black_box(any.clone())).unwrap())
    });
    group.bench_function("decode_view", |b| {
        b.iter(|| {
            EventView::decode_any(black_box(&any))
                .map(|v| v.hook())
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, decode, encode_and_render);
criterion_main!(benches);
