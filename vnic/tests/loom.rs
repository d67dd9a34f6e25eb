//! loom model checks of both ring protocols: every interleaving of a producer and a consumer on
//! rings of 2–4 entries delivers each entry exactly once, in order, with no data race on a slot.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p vnic --test loom --release` (the README's test
//! command does this); in an ordinary build this file compiles to nothing.
#![cfg(loom)]

use loom::thread;
use vnic::abi::io::{TxCompletion, TxDesc};
use vnic::ring::{CompletionRing, SubmissionRing};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

fn desc(i: u16) -> TxDesc {
    TxDesc::new(u64::from(i) << 12, 64 + i, i)
}

#[test]
fn submission_ring_single_pushes() {
    model(|| {
        let (mut p, mut c) = SubmissionRing::<TxDesc>::in_process(2).unwrap();
        let producer = thread::spawn(move || {
            for i in 0..3 {
                while !p.push(desc(i)) {
                    thread::yield_now();
                }
            }
        });
        for i in 0..3 {
            loop {
                if let Some(d) = c.pop() {
                    assert_eq!(d, desc(i));
                    break;
                }
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert!(c.pop().is_none());
    });
}

#[test]
fn submission_ring_bursts_and_reservations() {
    model(|| {
        let (mut p, mut c) = SubmissionRing::<TxDesc>::in_process(4).unwrap();
        let producer = thread::spawn(move || {
            // A bulk of 3, then a zero-copy reservation of 2 that wraps the ring.
            while !p.push_bulk(&[desc(0), desc(1), desc(2)]) {
                thread::yield_now();
            }
            loop {
                if let Some(mut r) = p.reserve(2) {
                    r.set(0, desc(3));
                    r.set(1, desc(4));
                    r.commit();
                    break;
                }
                thread::yield_now();
            }
        });
        let mut got = Vec::new();
        let mut buf = [TxDesc::default(); 3];
        while got.len() < 5 {
            let n = c.pop_burst(&mut buf);
            got.extend_from_slice(&buf[..n]);
            if n == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..5).map(desc).collect::<Vec<_>>());
    });
}

#[test]
fn completion_ring_phase_protocol_across_a_wrap() {
    model(|| {
        let (mut p, mut c) = CompletionRing::<TxCompletion>::in_process(2).unwrap();
        let producer = thread::spawn(move || {
            let mut i = 0u16;
            while i < 3 {
                let entry = TxCompletion { req_id: i, sq_head_idx: i * 3, ..Default::default() };
                if p.push(entry) {
                    i += 1;
                } else {
                    thread::yield_now();
                }
            }
        });
        let mut next = 0u16;
        let mut buf = [TxCompletion::default(); 2];
        while next < 3 {
            let n = c.pop_burst(&mut buf);
            for e in &buf[..n] {
                assert_eq!((e.req_id, e.sq_head_idx), (next, next * 3));
                next += 1;
            }
            if n == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert!(c.pop().is_none());
    });
}

#[test]
fn completion_ring_whole_burst_fast_path_across_a_wrap() {
    model(|| {
        let (mut p, mut c) = CompletionRing::<TxCompletion>::in_process(4).unwrap();
        let producer = thread::spawn(move || {
            let mut i = 0u16;
            while i < 6 {
                let batch: Vec<_> = (i..6.min(i + 3))
                    .map(|r| TxCompletion { req_id: r, ..Default::default() })
                    .collect();
                let n = p.push_burst(&batch);
                i += n as u16;
                if n == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut next = 0u16;
        let mut buf = [TxCompletion::default(); 3];
        while next < 6 {
            let n = c.pop_burst(&mut buf);
            for e in &buf[..n] {
                assert_eq!(e.req_id, next);
                next += 1;
            }
            if n == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert!(c.pop().is_none());
    });
}
