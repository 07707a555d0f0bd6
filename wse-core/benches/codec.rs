//! Pack and unpack of both codecs, small and large payloads:
//! `cargo bench -p wse-core --bench codec`.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use wse_core::{Json, MsgPack, Protocol};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: f64,
}

fn large() -> Vec<Item> {
    (0..200)
        .map(|id| Item {
            id,
            name: format!("item number {id}"),
            tags: vec!["red".into(), "green".into(), "blue".into()],
            score: id as f64 / 7.0,
        })
        .collect()
}

fn codecs() -> [(&'static str, &'static dyn Protocol); 2] {
    [("json", &Json), ("msgpack", &MsgPack)]
}

fn pack(c: &mut Criterion) {
    let small = Add { a: 1, b: 2 };
    let large = large();
    for (name, codec) in codecs() {
        c.bench_function(&format!("pack/{name}/small"), |b| {
            b.iter(|| codec.encode("add", &small, Some("k1")).unwrap());
        });
        c.bench_function(&format!("pack/{name}/large"), |b| {
            b.iter(|| codec.encode("items", &large, Some("k1")).unwrap());
        });
    }
}

fn unpack(c: &mut Criterion) {
    let small = Add { a: 1, b: 2 };
    let large = large();
    for (name, codec) in codecs() {
        let small_frame = codec.encode("add", &small, Some("k1")).unwrap();
        let large_frame = codec.encode("items", &large, Some("k1")).unwrap();
        c.bench_function(&format!("unpack+decode/{name}/small"), |b| {
            b.iter_batched(
                || small_frame.clone(),
                |bytes| {
                    let frame = codec.unpack(&bytes).unwrap();
                    codec.decode::<Add>(frame.payload).unwrap()
                },
                BatchSize::SmallInput,
            );
        });
        c.bench_function(&format!("unpack+decode/{name}/large"), |b| {
            b.iter_batched(
                || large_frame.clone(),
                |bytes| {
                    let frame = codec.unpack(&bytes).unwrap();
                    codec.decode::<Vec<Item>>(frame.payload).unwrap()
                },
                BatchSize::SmallInput,
            );
        });
    }
}

criterion_group!(benches, pack, unpack);
criterion_main!(benches);
