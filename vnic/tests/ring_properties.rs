//! Property tests: arbitrary sequences of bulk, burst, single and zero-copy operations on the two
//! sides of a ring, run on two threads, deliver every entry exactly once and in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use vnic::abi::io::{RxCompletion, TxDesc};
use vnic::ring::{CompletionRing, SubmissionRing};

#[derive(Debug, Clone)]
enum ProducerOp {
    Push,
    Bulk(usize),
    Burst(usize),
    /// Reserve up to `.0` slots in place and publish the first `.1` of them.
    Reserve(usize, usize),
}

#[derive(Debug, Clone)]
enum ConsumerOp {
    Pop,
    Bulk(usize),
    Burst(usize),
}

fn producer_op() -> impl Strategy<Value = ProducerOp> {
    prop_oneof![
        Just(ProducerOp::Push),
        (0usize..80).prop_map(ProducerOp::Bulk),
        (0usize..80).prop_map(ProducerOp::Burst),
        (0usize..80, 0usize..80).prop_map(|(n, k)| ProducerOp::Reserve(n, k)),
    ]
}

fn consumer_op() -> impl Strategy<Value = ConsumerOp> {
    prop_oneof![
        Just(ConsumerOp::Pop),
        (0usize..80).prop_map(ConsumerOp::Bulk),
        (1usize..80).prop_map(ConsumerOp::Burst),
    ]
}

fn desc(seq: u64) -> TxDesc {
    TxDesc::new(seq, (seq.wrapping_mul(0x9E37_79B9) >> 16) as u16, seq as u16)
}

fn completion(seq: u64) -> RxCompletion {
    RxCompletion {
        hash: seq as u32,
        length: (seq.wrapping_mul(0x9E37_79B9) >> 16) as u16,
        req_id: (seq >> 32) as u16,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn submission_ring_delivers_everything_once_in_order(
        p_ops in proptest::collection::vec(producer_op(), 1..200),
        c_ops in proptest::collection::vec(consumer_op(), 1..50),
    ) {
        let (mut p, mut c) = SubmissionRing::<TxDesc>::in_process(64).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let producer_done = done.clone();
        let producer = std::thread::spawn(move || {
            let mut seq = 0u64;
            for op in p_ops {
                match op {
                    ProducerOp::Push => {
                        if p.push(desc(seq)) {
                            seq += 1;
                        }
                    }
                    ProducerOp::Bulk(n) => {
                        let batch: Vec<_> = (seq..seq + n as u64).map(desc).collect();
                        if p.push_bulk(&batch) {
                            seq += n as u64;
                        }
                    }
                    ProducerOp::Burst(n) => {
                        let batch: Vec<_> = (seq..seq + n as u64).map(desc).collect();
                        seq += p.push_burst(&batch) as u64;
                    }
                    ProducerOp::Reserve(n, k) => {
                        let mut r = p.reserve_up_to(n);
                        let len = r.len();
                        let (a, b) = r.as_mut_slices();
                        for (i, slot) in a.iter_mut().chain(b.iter_mut()).enumerate() {
                            *slot = desc(seq + i as u64);
                        }
                        r.commit_first(k);
                        seq += k.min(len) as u64;
                    }
                }
            }
            producer_done.store(true, Ordering::Release);
            seq
        });
        let mut received = Vec::new();
        let mut buf = vec![TxDesc::default(); 80];
        'outer: loop {
            for op in &c_ops {
                let finished = done.load(Ordering::Acquire);
                match *op {
                    ConsumerOp::Pop => received.extend(c.pop()),
                    ConsumerOp::Bulk(n) => {
                        if c.pop_bulk(&mut buf[..n]) {
                            received.extend_from_slice(&buf[..n]);
                        }
                    }
                    ConsumerOp::Burst(n) => {
                        let got = c.pop_burst(&mut buf[..n]);
                        received.extend_from_slice(&buf[..got]);
                    }
                }
                if finished {
                    // Ops such as a bulk larger than what is left may never succeed: drain.
                    loop {
                        let got = c.pop_burst(&mut buf);
                        if got == 0 {
                            break 'outer;
                        }
                        received.extend_from_slice(&buf[..got]);
                    }
                }
            }
        }
        let sent = producer.join().unwrap();
        prop_assert_eq!(received.len() as u64, sent);
        for (i, d) in received.iter().enumerate() {
            prop_assert_eq!(*d, desc(i as u64));
        }
    }

    #[test]
    fn completion_ring_delivers_everything_once_in_order(
        bursts in proptest::collection::vec(0usize..80, 1..200),
        pops in proptest::collection::vec(1usize..80, 1..50),
    ) {
        let (mut p, mut c) = CompletionRing::<RxCompletion>::in_process(64).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let producer_done = done.clone();
        let producer = std::thread::spawn(move || {
            let mut seq = 0u64;
            for (i, n) in bursts.into_iter().enumerate() {
                let batch: Vec<_> = (seq..seq + n as u64).map(completion).collect();
                if i % 3 == 0 {
                    if p.push_bulk(&batch) {
                        seq += n as u64;
                    }
                } else {
                    seq += p.push_burst(&batch) as u64;
                }
            }
            producer_done.store(true, Ordering::Release);
            seq
        });
        let mut received = Vec::new();
        let mut buf = vec![RxCompletion::default(); 80];
        'outer: loop {
            for &n in &pops {
                let finished = done.load(Ordering::Acquire);
                let got = c.pop_burst(&mut buf[..n]);
                received.extend_from_slice(&buf[..got]);
                if finished && !c.has_ready() {
                    break 'outer;
                }
            }
        }
        let sent = producer.join().unwrap();
        prop_assert_eq!(received.len() as u64, sent);
        for (i, e) in received.iter().enumerate() {
            let want = completion(i as u64);
            prop_assert_eq!((e.hash, e.length, e.req_id), (want.hash, want.length, want.req_id));
        }
    }
}
