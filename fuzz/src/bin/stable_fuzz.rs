//! Stable-toolchain fuzz runner: for when libFuzzer (nightly + cargo-fuzz) is not at hand.
//!
//! `stable_fuzz <target|all> [seconds] [seed]` mutates the target's seed corpus
//! (`fuzz/corpus/<target>/`) with a seeded PRNG (bit flips, byte sets, interesting values,
//! inserts, deletes, splices, truncation) and runs the target function on each input for the
//! given time, then prints executions and executions per second. A panic is caught, the input
//! saved to `fuzz/artifacts/<target>/crash-<hex>` and the exit code set to 1. No coverage
//! feedback: cruder than libFuzzer, but it runs everywhere, deterministically per seed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u8; 10] = [0x00, 0x01, 0x7f, 0x80, 0xff, b'\n', b':', b'{', b'[', b'"'];

fn mutate(rng: &mut Prng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                input.drain(i..i + n);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + rng.below(other.len() - a + 1);
                    let i = rng.below(len + 1);
                    input.splice(i..i, other[a..b].iter().copied());
                }
            }
            6 if len > 0 => input.truncate(rng.below(len)),
            7 if len > 1 => {
                // Duplicate a slice (repetition finds length and nesting bugs).
                let a = rng.below(len);
                let b = a + rng.below((len - a).min(64)) + 1;
                let copy = input[a..b.min(len)].to_vec();
                input.splice(b.min(len)..b.min(len), copy);
            }
            _ => input.push(rng.next() as u8),
        }
    }
    // Keep inputs small, like libFuzzer's default -max_len.
    input.truncate(64 * 1024);
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let mut out: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    if out.is_empty() {
        out.push(Vec::new());
    }
    out
}

/// Runs one target for `secs`; returns (executions, crashes).
fn run_target(root: &Path, target: &str, secs: f64, seed: u64) -> (u64, u64) {
    let corpus = load_corpus(&root.join("corpus").join(target));
    let mut rng = Prng(seed ^ (target.len() as u64).wrapping_mul(0x9e37_79b9) | 1);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut execs = 0u64;
    let mut crashes = 0u64;
    // Every seed as is first, then mutations.
    let mut queue: Vec<Vec<u8>> = corpus.clone();
    while Instant::now() < deadline {
        let input = match queue.pop() {
            Some(i) => i,
            None => {
                let mut i = corpus[rng.below(corpus.len())].clone();
                mutate(&mut rng, &mut i, &corpus);
                i
            }
        };
        let ok = std::panic::catch_unwind(|| gitamp_fuzz::run(target, &input)).is_ok();
        execs += 1;
        if !ok {
            crashes += 1;
            let dir = root.join("artifacts").join(target);
            let _ = std::fs::create_dir_all(&dir);
            let name = format!("crash-{:016x}", fnv(&input));
            let _ = std::fs::write(dir.join(&name), &input);
            eprintln!(
                "{target}: panic, input saved to {}",
                dir.join(name).display()
            );
        }
    }
    (execs, crashes)
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `stable_fuzz seeds`: (re)writes the protobuf seeds, which are easier to build with prost
/// than by hand. The YAML and webhook seeds are plain files in the corpus folders.
fn write_seeds(root: &Path) -> std::io::Result<()> {
    use gitamp_opamp::proto::{self, AgentToServer};
    use prost::Message as _;
    let kv = |k: &str, v: &str| proto::KeyValue {
        key: k.into(),
        value: Some(proto::AnyValue {
            value: Some(proto::any_value::Value::StringValue(v.into())),
        }),
    };
    let uid = bytes::Bytes::from_static(&[7; 16]);
    let full = AgentToServer {
        instance_uid: uid.clone(),
        sequence_num: 1,
        capabilities: gitamp_opamp::agent::caps::FULL,
        agent_description: Some(proto::AgentDescription {
            identifying_attributes: vec![kv("service.name", "seed")],
            non_identifying_attributes: vec![kv("host.name", "h"), kv("os.type", "linux")],
        }),
        health: Some(proto::ComponentHealth {
            healthy: true,
            status: "ok".into(),
            ..Default::default()
        }),
        remote_config_status: Some(proto::RemoteConfigStatus {
            last_remote_config_hash: bytes::Bytes::from_static(&[1; 32]),
            status: proto::RemoteConfigStatuses::Applied as i32,
            error_message: String::new(),
        }),
        ..Default::default()
    };
    let heartbeat = AgentToServer {
        instance_uid: uid.clone(),
        sequence_num: 2,
        capabilities: gitamp_opamp::agent::caps::FULL,
        ..Default::default()
    };
    let disconnect = AgentToServer {
        instance_uid: uid.clone(),
        sequence_num: 3,
        agent_disconnect: Some(proto::AgentDisconnect {}),
        ..Default::default()
    };
    let request_uid = AgentToServer {
        instance_uid: uid,
        flags: proto::AgentToServerFlags::RequestInstanceUid as u64,
        ..Default::default()
    };
    let msgs = [
        ("full", full),
        ("heartbeat", heartbeat),
        ("disconnect", disconnect),
        ("request-uid", request_uid),
    ];
    for (name, m) in &msgs {
        let raw = m.encode_to_vec();
        std::fs::write(root.join("corpus/opamp_decode").join(name), &raw)?;
        let mut frame = vec![0u8];
        frame.extend_from_slice(&raw);
        std::fs::write(root.join("corpus/ws_frame").join(name), frame)?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("seeds") {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        if let Err(e) = write_seeds(&root) {
            eprintln!("writing seeds: {e}");
            std::process::exit(1);
        }
        return;
    }
    let which = args.first().map(String::as_str).unwrap_or("all");
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let targets: Vec<&str> = if which == "all" {
        gitamp_fuzz::TARGETS.to_vec()
    } else if gitamp_fuzz::TARGETS.contains(&which) {
        vec![which]
    } else {
        eprintln!(
            "unknown target {which}; one of {:?} or all",
            gitamp_fuzz::TARGETS
        );
        std::process::exit(2);
    };
    // Panics are expected to be caught and reported once, not printed per input.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let mut failed = false;
    for t in targets {
        let started = Instant::now();
        let (execs, crashes) = run_target(&root, t, secs, seed);
        let el = started.elapsed().as_secs_f64();
        println!(
            "{t}: {execs} executions in {el:.1} s ({:.0}/s), {crashes} crash(es), seed {seed}",
            execs as f64 / el.max(1e-9)
        );
        failed |= crashes > 0;
    }
    if failed {
        std::process::exit(1);
    }
}
