//! Two processes, one ring file: the parent posts descriptors on a submission ring, a child
//! process (this test binary re-executed) echoes each as a completion on a completion ring in the
//! same region. Both directions carry sequence numbers and checksums. A second test kills the child
//! mid-stream; the parent notices within a bounded wait, resets both rings and reuses them with a
//! new child.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vnic::abi::io::{RxCompletion, TxDesc, rx_cq_field};
use vnic::ring::{
    CompletionConsumer, CompletionProducer, CompletionRing, RingError, SharedRegion,
    SubmissionConsumer, SubmissionProducer, SubmissionRing,
};

const DEPTH: u32 = 1024;
const CQ_OFFSET: usize = SubmissionRing::<TxDesc>::bytes(DEPTH);
const REGION_BYTES: usize = CQ_OFFSET + CompletionRing::<RxCompletion>::bytes(DEPTH);
const CHILD_ENV: &str = "VNIC_RING_PEER_REGION";
const CHILD_COUNT_ENV: &str = "VNIC_RING_PEER_COUNT";
/// The longest any wait in these tests may last before it is a failure.
const DEADLINE: Duration = Duration::from_secs(60);

fn checksum(seq: u64) -> u16 {
    let x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 48) ^ (x >> 16)) as u16
}

fn request(seq: u64) -> TxDesc {
    TxDesc::new(seq, checksum(seq), seq as u16).with_first(true).with_last(true)
}

fn reply(seq: u64) -> RxCompletion {
    RxCompletion {
        hash: seq as u32,
        req_id: (seq >> 32) as u16,
        length: checksum(seq) ^ 0xA5A5,
        sub_qid: 1,
        ..Default::default()
    }
}

fn region_path(tag: &str) -> PathBuf {
    let dir = Path::new("/dev/shm");
    let dir = if dir.is_dir() { dir.to_path_buf() } else { std::env::temp_dir() };
    dir.join(format!("vnic-xproc-{tag}-{}", std::process::id()))
}

/// The child's side: echo `count` requests (or until killed).
#[test]
#[ignore = "the child half of the cross-process tests; the parent runs it"]
fn ring_peer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let count: u64 = std::env::var(CHILD_COUNT_ENV).unwrap().parse().unwrap();
    let region = Arc::new(SharedRegion::open(&path).unwrap());
    let mut sq = SubmissionConsumer::<TxDesc>::attach(region.clone(), 0).unwrap();
    let mut cq = CompletionProducer::<RxCompletion>::attach(region, CQ_OFFSET).unwrap();
    let mut next = 0u64;
    let mut requests = [TxDesc::default(); 32];
    let mut replies = [RxCompletion::default(); 32];
    let parent = std::os::unix::process::parent_id();
    let start = Instant::now();
    let mut idle_rounds = 0u32;
    while next < count {
        // Never take more requests than there is room to answer.
        let room = cq.free_slots().min(requests.len());
        let n = sq.pop_burst(&mut requests[..room]);
        for (i, d) in requests[..n].iter().enumerate() {
            let seq = next + i as u64;
            assert_eq!(d.addr(), seq & 0xFFFF_FFFF_FFFF, "sequence");
            assert_eq!(d.len(), checksum(seq), "checksum of request {seq}");
            assert_eq!(d.req_id(), seq as u16);
            replies[i] = reply(seq);
        }
        assert_eq!(cq.push_burst(&replies[..n]), n, "room was checked");
        next += n as u64;
        if n == 0 {
            idle_rounds += 1;
            if idle_rounds.is_multiple_of(4096) {
                assert!(start.elapsed() < DEADLINE, "child stalled at {next}");
                // The parent died (we were re-parented): nobody is left to talk to.
                if std::os::unix::process::parent_id() != parent {
                    return;
                }
            }
            std::hint::spin_loop();
        }
    }
}

fn spawn_child(path: &Path, count: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "ring_peer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .env(CHILD_COUNT_ENV, count.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

struct Parent {
    sq: SubmissionProducer<TxDesc>,
    cq: CompletionConsumer<RxCompletion>,
}

enum Outcome {
    Done,
    /// The child exited before finishing; how many replies had arrived.
    ChildGone(u64),
}

impl Parent {
    fn new(path: &Path) -> Self {
        let region = Arc::new(SharedRegion::create(path, REGION_BYTES).unwrap());
        SubmissionRing::<TxDesc>::init(&region, 0, DEPTH).unwrap();
        CompletionRing::<RxCompletion>::init(&region, CQ_OFFSET, DEPTH).unwrap();
        Parent {
            sq: SubmissionProducer::attach(region.clone(), 0).unwrap(),
            cq: CompletionConsumer::attach(region, CQ_OFFSET).unwrap(),
        }
    }

    /// Sends `count` requests and checks every reply; `kill_at` kills the child once that many
    /// replies have arrived. Every wait is bounded: a stall is detected through the child's exit
    /// status or the deadline.
    fn exchange(&mut self, child: &mut Child, count: u64, kill_at: Option<u64>) -> Outcome {
        let (mut sent, mut received) = (0u64, 0u64);
        let mut batch = [TxDesc::default(); 32];
        let mut replies = [RxCompletion::default(); 32];
        let start = Instant::now();
        let mut idle_rounds = 0u32;
        while received < count {
            let in_flight = sent - received;
            let n = (count - sent).min(32).min(u64::from(DEPTH) - in_flight) as usize;
            for (i, d) in batch[..n].iter_mut().enumerate() {
                *d = request(sent + i as u64);
            }
            sent += self.sq.push_burst(&batch[..n]) as u64;
            let got = self.cq.pop_burst(&mut replies);
            for r in &replies[..got] {
                let mut r = *r;
                r.status &= !rx_cq_field::PHASE;
                assert_eq!(r, reply(received), "reply {received}");
                received += 1;
            }
            if kill_at.is_some_and(|k| received >= k) {
                // SAFETY: plain FFI call; the pid is our own child's, not yet reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            }
            if got == 0 {
                idle_rounds += 1;
                if idle_rounds.is_multiple_of(4096) {
                    if let Some(status) = child.try_wait().unwrap() {
                        assert!(kill_at.is_some(), "child failed: {status}");
                        return Outcome::ChildGone(received);
                    }
                    assert!(start.elapsed() < DEADLINE, "no reply for too long at {received}");
                }
                std::hint::spin_loop();
            }
        }
        Outcome::Done
    }
}

#[test]
fn a_million_descriptors_each_way_between_two_processes() {
    let path = region_path("million");
    let mut parent = Parent::new(&path);
    let mut child = spawn_child(&path, 1_000_000);
    let outcome = parent.exchange(&mut child, 1_000_000, None);
    let status = child.wait().unwrap();
    std::fs::remove_file(&path).ok();
    assert!(matches!(outcome, Outcome::Done));
    assert!(status.success(), "child: {status}");
    assert!(parent.cq.pop().is_none(), "no reply beyond the last request");
}

#[test]
fn a_killed_peer_is_noticed_and_the_rings_are_reset_and_reused() {
    let path = region_path("killed");
    let mut parent = Parent::new(&path);
    let mut child = spawn_child(&path, 1_000_000);
    let outcome = parent.exchange(&mut child, 1_000_000, Some(200_000));
    let Outcome::ChildGone(received) = outcome else { panic!("the child should have died") };
    assert!((200_000..1_000_000).contains(&received), "{received}");
    // The parent reaped the child (try_wait); its claims on the rings are stale now.
    parent.sq.reset().unwrap();
    parent.cq.reset().unwrap();

    let mut child = spawn_child(&path, 100_000);
    // While the new child lives, nobody can reset its rings from under it.
    let started = Instant::now();
    loop {
        match parent.sq.reset() {
            Err(RingError::PeerAlive { pid, .. }) => {
                assert_eq!(pid, child.id());
                break;
            }
            Ok(()) => {
                assert!(started.elapsed() < DEADLINE, "child never attached");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let outcome = parent.exchange(&mut child, 100_000, None);
    let status = child.wait().unwrap();
    std::fs::remove_file(&path).ok();
    assert!(matches!(outcome, Outcome::Done));
    assert!(status.success(), "second child: {status}");
}
