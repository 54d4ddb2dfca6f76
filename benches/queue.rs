//! Micro-benchmarks of the hot paths below the actors: validating and storing a batch,
//! claiming and completing jobs in the in-memory store.
//!
//! `cargo bench --bench queue`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use jobyard::job::record::{json_from_str, json_null};
use jobyard::job::spec::{plan, SpecDefaults};
use jobyard::job::{JobSpec, Registry};
use jobyard::queue::memory::Store;
use jobyard::queue::{Claim, Completion, Outcome};

const BATCH: usize = 1_000;

fn registry() -> Registry {
    let mut registry = Registry::new();
    jobyard::kinds::register_builtins(&mut registry);
    registry
}

fn specs() -> Vec<JobSpec> {
    let payload = json_from_str(r#"{"source":"bench"}"#).unwrap();
    vec![JobSpec { payload: Some(payload), ..JobSpec::new("noop") }; BATCH]
}

fn claim() -> Claim {
    Claim {
        workers: (0..BATCH).map(|i| Arc::from(format!("bench/w{i}"))).collect(),
        lease: Duration::from_secs(30),
        kinds: Arc::from(vec![Arc::from("noop")]),
    }
}

fn queue(c: &mut Criterion) {
    let registry = registry();
    let defaults = SpecDefaults::default();
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("plan_1000", |b| {
        b.iter(|| plan(black_box(specs()), true, &registry, &defaults, Utc::now()).unwrap())
    });
    group.bench_function("submit_1000", |b| {
        b.iter_batched(
            || (Store::new(), plan(specs(), true, &registry, &defaults, Utc::now()).unwrap()),
            |(mut store, jobs)| store.submit(jobs, Utc::now()).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("dequeue_complete_1000", |b| {
        b.iter_batched(
            || {
                let mut store = Store::new();
                let jobs = plan(specs(), true, &registry, &defaults, Utc::now()).unwrap();
                store.submit(jobs, Utc::now()).unwrap();
                (store, claim())
            },
            |(mut store, claim)| {
                let now = Utc::now();
                let done = store
                    .dequeue(&claim, now)
                    .into_iter()
                    .map(|c| Completion {
                        lease: c.lease,
                        outcome: Outcome::Succeeded(json_null()),
                    })
                    .collect();
                store.complete(done, now)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
