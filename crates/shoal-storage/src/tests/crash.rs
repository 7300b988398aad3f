//! Power loss and I/O errors under group commit, on a [`CrashDisk`].
//!
//! Writer threads submit random batches through the real group-commit path; every batch gets a
//! sequence number in the order it entered the commit queue, and the model replays them in that
//! order. At random points the disk stops the commit thread, and the test "pulls the plug": it
//! takes crash images of every [`ImageKind`], reopens each through `RedbStorage` on a fresh disk,
//! and checks that
//!
//! * the database opens, and no record reads as corrupted;
//! * what it holds equals the model after some prefix of the batches that includes every
//!   acknowledged one (so no acknowledged batch is lost, and none is half applied);
//! * the images of one crash point recover to at most two states, before and after the commit
//!   in flight (a commit is all or nothing);
//! * every partition's tictac tree equals a rebuild from its records;
//! * a crash during recovery recovers to the same state, and a recovered database takes writes.
//!
//! With EIO or ENOSPC injected, every batch of the failed commit (and, since redb then refuses
//! further commits, every later one) is told so, none of them is acknowledged, and reopening
//! from what reached the disk keeps everything acknowledged.
//!
//! `SHOAL_CRASH_IMAGES` and `SHOAL_IO_ERROR_ROUNDS` make the runs longer, `SHOAL_SEED` replays a
//! seed's batches and crash points (how batches group into commits depends on thread timing).

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use super::*;
use crate::crash::{
    CrashDisk, FaultPlan, ImageKind, IoFault, Op, PausePoint, Rng, Snapshot, Trigger,
};

/// The incarnation the crashed database was created with; no reopen after a crash may keep it.
const INCARNATION: Incarnation = Incarnation::new(0xc0ffee);
/// Keys the writers choose from: few enough that batches overwrite and merge each other.
const CRASH_KEYS: usize = 40;
/// Writer threads.
const WRITERS: usize = 3;
/// Batches one writer has submitted and not yet seen answered.
const IN_FLIGHT: usize = 3;
/// Crash images checked by default (several per crash point).
const DEFAULT_CRASH_IMAGES: usize = 400;
/// I/O-error rounds run by default.
const DEFAULT_IO_ERROR_ROUNDS: usize = 40;
/// How long a test waits for the workload to reach a point before it fails.
const DEADLINE: Duration = Duration::from_secs(120);

// ---- the workload -----------------------------------------------------------------------------

/// What the writers submitted, in queue order, and what each batch was told.
#[derive(Debug, Default)]
struct Journal {
    /// Batches by sequence number: the order in which they entered the commit queue. Held while
    /// submitting, so that the two orders agree.
    batches: Mutex<Vec<WriteBatch>>,
    /// Each batch's answer, once its callback ran.
    outcomes: Mutex<Vec<Option<Result<(), CommitError>>>>,
    /// Callbacks that ran for a batch already answered.
    repeated_answers: AtomicUsize,
    /// Writers submit no batch past this many.
    limit: AtomicUsize,
    stop: AtomicBool,
}

impl Journal {
    fn new(limit: usize) -> Arc<Journal> {
        let journal = Journal::default();
        journal.limit.store(limit, Ordering::SeqCst);
        Arc::new(journal)
    }

    /// Submits `batch` under the next sequence number; the receiver hears when it is answered.
    fn submit(self: &Arc<Self>, s: &RedbStorage, batch: WriteBatch) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        let mut batches = self.batches.lock().unwrap();
        let seq = batches.len();
        batches.push(batch.clone());
        self.outcomes.lock().unwrap().push(None);
        let journal = Arc::clone(self);
        s.submit(
            batch,
            Box::new(move |result| {
                let mut outcomes = journal.outcomes.lock().unwrap();
                if outcomes[seq].is_some() {
                    journal.repeated_answers.fetch_add(1, Ordering::SeqCst);
                }
                outcomes[seq] = Some(result);
                let _ = tx.send(());
            }),
        );
        rx
    }

    fn len(&self) -> usize {
        self.batches.lock().unwrap().len()
    }

    /// How many batches are acknowledged, checking that they are exactly the first ones: commits
    /// are applied and answered in queue order.
    fn acked_prefix(&self) -> usize {
        let outcomes = self.outcomes.lock().unwrap();
        let acked = outcomes
            .iter()
            .take_while(|o| matches!(o, Some(Ok(()))))
            .count();
        let stray: Vec<usize> = (acked..outcomes.len())
            .filter(|&i| matches!(outcomes[i], Some(Ok(()))))
            .collect();
        assert!(
            stray.is_empty(),
            "batches {stray:?} were acknowledged while batch {acked} was not"
        );
        acked
    }

    fn batches(&self, range: std::ops::Range<usize>) -> Vec<WriteBatch> {
        self.batches.lock().unwrap()[range].to_vec()
    }
}

/// Starts the writer threads; each submits random batches, at most [`IN_FLIGHT`] unanswered,
/// until the journal says stop or reaches its limit.
fn start_writers(
    s: &RedbStorage,
    journal: &Arc<Journal>,
    seed: u64,
) -> Vec<thread::JoinHandle<()>> {
    (0..WRITERS)
        .map(|t| {
            let s = s.clone();
            let journal = Arc::clone(journal);
            let mut rng = Rng::new(seed ^ (0x51ed_270b_2f1d_4e33_u64.wrapping_mul(t as u64 + 1)));
            thread::spawn(move || {
                let mut waiting: VecDeque<mpsc::Receiver<()>> = VecDeque::new();
                while !journal.stop.load(Ordering::SeqCst)
                    && journal.len() < journal.limit.load(Ordering::SeqCst)
                {
                    if waiting.len() >= IN_FLIGHT
                        && let Some(rx) = waiting.pop_front()
                    {
                        rx.recv_timeout(DEADLINE)
                            .expect("a batch was never answered");
                    }
                    waiting.push_back(journal.submit(&s, random_batch(&mut rng)));
                }
                for rx in waiting {
                    rx.recv_timeout(DEADLINE)
                        .expect("a batch was never answered");
                }
            })
        })
        .collect()
}

fn stop_writers(journal: &Journal, writers: Vec<thread::JoinHandle<()>>) {
    journal.stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
}

/// One to four writes of every kind, on [`CRASH_KEYS`] keys.
fn random_batch(rng: &mut Rng) -> WriteBatch {
    (0..1 + rng.below(4))
        .map(|_| {
            let k = rng.below(CRASH_KEYS as u64) as usize;
            let (partition, key) = (part((k % Q as usize) as u32), key(k));
            let target = node(TARGETS[rng.below(TARGETS.len() as u64) as usize]);
            match rng.below(10) {
                0..=2 => Write::Object {
                    partition,
                    key,
                    object: random_object(rng),
                },
                3..=5 => Write::MergeObject {
                    partition,
                    key,
                    object: random_object(rng),
                },
                6 => match rng.below(3) {
                    0 => Write::RemoveObject { partition, key },
                    // Reaps: with a random object's vector (mostly refused, or over nothing),
                    // or a tombstone's that covers many of the objects written.
                    1 => Write::Reap {
                        partition,
                        key,
                        vv: random_object(rng).version_vector().clone(),
                        reaped_at_unix_ms: rng.below(1_000_000),
                    },
                    _ => Write::ForgetReaped {
                        partition,
                        key,
                        reaped_before_unix_ms: rng.below(1_000_000),
                    },
                },
                7 | 8 => Write::Hint {
                    target,
                    partition,
                    key,
                    object: random_object(rng),
                    stored_at_unix_ms: rng.below(1_000_000),
                },
                _ => Write::RemoveHint {
                    target,
                    partition,
                    key,
                    // Unconditional, or with a digest that does not match.
                    if_digest: rng.chance(0.5).then(|| ObjectDigest::from_bytes([7; 16])),
                },
            }
        })
        .collect()
}

/// An object of one to three updates by three actors; values mostly small, some spanning pages.
fn random_object(rng: &mut Rng) -> Object {
    let mut o = Object::new();
    for _ in 0..1 + rng.below(3) {
        let len = match rng.below(20) {
            0 => 4096 + rng.below(36 * 1024),
            1..=3 => 600 + rng.below(3500),
            _ => rng.below(600),
        } as usize;
        let sibling = if rng.chance(0.1) {
            Sibling::Tombstone
        } else {
            let mut bytes = vec![0u8; len];
            for chunk in bytes.chunks_mut(8) {
                let r = rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            Sibling::Value(Bytes::from(bytes))
        };
        let ctx = if rng.chance(0.5) {
            o.context()
        } else {
            CausalContext::empty()
        };
        o = o
            .update(&ctx, sibling, &actor(rng.below(3) as usize), 64)
            .unwrap();
    }
    o
}

// ---- recovery ---------------------------------------------------------------------------------

/// Opens a crash image on a fresh disk and reads everything in it.
fn recover(image: Vec<u8>) -> Result<(Model, CrashDisk), String> {
    let disk = CrashDisk::from_image(image);
    let state = open_and_read(disk.clone())?;
    Ok((state, disk))
}

fn open_and_read(disk: CrashDisk) -> Result<Model, String> {
    let (s, incarnation) =
        RedbStorage::open_with_backend(disk, &node("n1"), q(), Incarnation::new(1))
            .map_err(|e| format!("the database did not open: {e}"))?;
    // A crash is never a clean stop; the node recovers under its incarnation (coordinators send
    // only durable dots, so the disk knows every dot the node made that anyone holds).
    match s.run_start() {
        RunStart::Recovered if incarnation == INCARNATION => {}
        other => {
            return Err(format!(
                "after a crash the run began {other:?} with incarnation {incarnation}"
            ));
        }
    }
    // The trees are built beside serving; the check below compares them once built.
    match s.wait_for_trees(Duration::from_secs(20)) {
        TreesStatus::Ready => {}
        other => return Err(format!("the trees were not built: {other:?}")),
    }
    read_state(&s)
}

/// Everything a storage holds, checked as it is read: nothing corrupted, point reads agree with
/// listings, and every tree equals a rebuild from the records.
fn read_state(s: &RedbStorage) -> Result<Model, String> {
    let err = |e: ReadError| format!("a read failed: {e}");
    let mut state = Model::default();
    for p in q().partitions() {
        let mut after: Option<Key> = None;
        loop {
            let page = s.partition_objects(p, after.as_ref(), 16).map_err(err)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (k, outcome) in page {
                match outcome {
                    ReadOutcome::Found(o) => {
                        state.objects.insert((p, SegmentId::of(&k, q()), k), o);
                    }
                    other => return Err(format!("{p}/{k:?} listed as {other:?}")),
                }
            }
        }
        if s.tree(p).map_err(err)? != state.tree(p) {
            return Err(format!("the tree of partition {p} differs from a rebuild"));
        }
    }
    let mut after: Option<(PartitionId, Key)> = None;
    loop {
        let page = s
            .reaped_records(after.as_ref().map(|(p, k)| (*p, k)), 16)
            .map_err(err)?;
        let Some((p, k, _)) = page.last() else { break };
        after = Some((*p, k.clone()));
        for (p, k, r) in page {
            let slot = (p, SegmentId::of(&k, q()), k);
            state.reaped.insert(slot, (r.vv, r.reaped_at_unix_ms));
        }
    }
    for k in 0..CRASH_KEYS {
        let p = part((k % Q as usize) as u32);
        let read = s.object(p, &key(k)).map_err(err)?;
        if read != state.object(p, &key(k)) {
            return Err(format!(
                "{p}/{:?} reads as {read:?} but lists otherwise",
                key(k)
            ));
        }
    }
    for t in TARGETS {
        let target = node(t);
        let mut after: Option<(PartitionId, Key)> = None;
        loop {
            let page = s
                .hints(&target, after.as_ref().map(|(p, k)| (*p, k)), 16)
                .map_err(err)?;
            if page.is_empty() {
                break;
            }
            for entry in page {
                match entry {
                    HintEntry::Found(h) => {
                        after = Some((h.partition, h.key.clone()));
                        state.hints.insert(
                            (h.target, h.partition, h.key),
                            (h.object, h.stored_at_unix_ms),
                        );
                    }
                    HintEntry::Corrupted { partition, key } => {
                        return Err(format!("hint {t}/{partition}/{key:?} is corrupted"));
                    }
                }
            }
        }
    }
    if s.stats().corrupt_objects != 0 {
        return Err(format!("corruption counted: {:?}", s.stats()));
    }
    Ok(state)
}

/// The model after each of `batches`, starting from `base`: element i holds the first i.
fn prefix_states(base: &Model, batches: &[WriteBatch]) -> Vec<Model> {
    let mut states = vec![base.clone()];
    let mut m = base.clone();
    for b in batches {
        for w in b.writes() {
            m.apply(w);
        }
        states.push(m.clone());
    }
    states
}

/// Which of `states` (prefixes `first ..`) `recovered` equals.
fn matching(states: &[Model], first: usize, recovered: &Model) -> Vec<usize> {
    (0..states.len())
        .filter(|&i| states[i] == *recovered)
        .map(|i| first + i)
        .collect()
}

/// The most batches `recovered` can be a prefix of, searching from the start (for reporting a
/// loss); `None` if it is no prefix at all.
fn longest_prefix_matching(journal: &Journal, upto: usize, recovered: &Model) -> Option<usize> {
    let states = prefix_states(&Model::default(), &journal.batches(0..upto));
    matching(&states, 0, recovered).into_iter().max()
}

// ---- tallies ----------------------------------------------------------------------------------

/// What the crash images showed.
#[derive(Debug, Default)]
struct Tally {
    images: usize,
    crash_points: usize,
    /// Acknowledged batches missing from recovered images, summed.
    acked_lost: usize,
    /// Everything that went wrong, described.
    violations: Vec<String>,
    by_kind: BTreeMap<String, usize>,
    /// Images that recovered to the state before the commit in flight / after it.
    before_commit: usize,
    after_commit: usize,
    nested: usize,
    extended: usize,
}

impl Tally {
    fn violation(&mut self, seed: u64, what: String, image: Option<&[u8]>) {
        let mut line = format!("seed {seed}: {what}");
        if let Some(image) = image
            && self.violations.len() < 5
        {
            let path = std::env::temp_dir()
                .join(format!("shoal-crash-{seed}-{}.img", self.violations.len()));
            if std::fs::write(&path, image).is_ok() {
                line.push_str(&format!(" (image saved to {})", path.display()));
            }
        }
        eprintln!("{line}");
        self.violations.push(line);
    }
}

fn seed() -> u64 {
    std::env::var("SHOAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
        })
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

// ---- power loss -------------------------------------------------------------------------------

/// What a crash point knows: the batches acknowledged (a prefix) and the states the database may
/// recover to.
struct CrashPoint<'a> {
    seed: u64,
    journal: &'a Journal,
    acked: usize,
    /// The model after `acked + i` batches, for every batch submitted so far.
    states: Vec<Model>,
    what: String,
}

impl CrashPoint<'_> {
    /// Reopens one crash image and checks it; returns the state it recovered to when that state
    /// is allowed.
    fn check_image(&self, tally: &mut Tally, kind: ImageKind, image: Vec<u8>) -> Option<Recovered> {
        let label = format!("{kind:?}");
        tally.images += 1;
        *tally.by_kind.entry(label.clone()).or_default() += 1;
        let (recovered, disk) = match recover(image.clone()) {
            Ok(r) => r,
            Err(why) => {
                tally.acked_lost += self.acked;
                let what = format!("{}, {label} image: {why}", self.what);
                tally.violation(self.seed, what, Some(image.as_slice()));
                return None;
            }
        };
        let found = matching(&self.states, self.acked, &recovered);
        if found.is_empty() {
            let longest = longest_prefix_matching(self.journal, self.acked, &recovered);
            let lost = longest.map_or(self.acked, |k| self.acked - k);
            tally.acked_lost += lost;
            let what = format!(
                "{}, {label} image: recovered state is not the model after {} or more batches \
                 (longest matching prefix: {longest:?}; {lost} acknowledged batches missing)",
                self.what, self.acked
            );
            tally.violation(self.seed, what, Some(image.as_slice()));
            return None;
        }
        if found.contains(&self.acked) {
            tally.before_commit += 1;
        } else {
            tally.after_commit += 1;
        }
        Some(Recovered {
            kind,
            image,
            state: recovered,
            found,
            disk,
        })
    }
}

/// A crash image that reopened to an allowed state.
struct Recovered {
    kind: ImageKind,
    image: Vec<u8>,
    /// What it holds.
    state: Model,
    /// The prefixes of the batches it equals.
    found: Vec<usize>,
    /// The disk it was reopened on, as the recovery left it.
    disk: CrashDisk,
}

#[test]
fn power_loss_never_loses_an_acknowledged_batch() {
    let seed = seed();
    let wanted = env_count("SHOAL_CRASH_IMAGES", DEFAULT_CRASH_IMAGES);
    println!("power loss: seed {seed} (SHOAL_SEED={seed} replays it), {wanted} crash images");
    let mut rng = Rng::new(seed);
    let disk = CrashDisk::new();
    let (s, _) =
        RedbStorage::open_with_backend(disk.clone(), &node("n1"), q(), INCARNATION).unwrap();
    let journal = Journal::new(usize::MAX);
    let writers = start_writers(&s, &journal, seed);
    let mut tally = Tally::default();
    // The model after the first `base_len` batches, advanced as batches are acknowledged.
    let mut base = Model::default();
    let mut base_len = 0;

    while tally.images < wanted {
        // Half the crash points are just before a commit's fsync, when all of its writes are
        // pending; the others are anywhere (inside a commit's writes, or between commits).
        let point = if rng.chance(0.5) {
            PausePoint::Sync(1 + rng.below(3))
        } else {
            PausePoint::Op(1 + rng.below(80))
        };
        disk.pause_at(Some(point));
        assert!(
            disk.wait_paused(DEADLINE),
            "seed {seed}: the workload never reached {point:?}"
        );
        // The commit thread is stopped inside the disk: no batch is answered meanwhile.
        let acked = journal.acked_prefix();
        let submitted = journal.len();
        let snap = disk.snapshot();
        let counts = disk.counts();
        let behind = journal.batches(base_len..acked);
        base = prefix_states(&base, &behind).pop().unwrap_or(base);
        base_len = acked;
        let crash = CrashPoint {
            seed,
            journal: &journal,
            acked,
            states: prefix_states(&base, &journal.batches(acked..submitted)),
            what: format!(
                "crash point {} at {point:?} ({} ops, {} pending writes, {acked} of {submitted} \
                 batches acknowledged)",
                tally.crash_points,
                counts.total(),
                snap.pending_writes()
            ),
        };
        pull_the_plug(&crash, &snap, &mut rng, &mut tally);
        tally.crash_points += 1;
        disk.resume();
    }

    stop_writers(&journal, writers);
    drop(s);
    // Every batch was acknowledged once, and a clean shutdown keeps them all.
    let all = journal.len();
    assert_eq!(journal.acked_prefix(), all, "every batch is acknowledged");
    assert_eq!(journal.repeated_answers.load(Ordering::SeqCst), 0);
    let everything = prefix_states(&base, &journal.batches(base_len..all)).pop();
    match recover(disk.snapshot().durable) {
        Ok((last, _)) if Some(&last) == everything.as_ref() => {}
        other => {
            let what = format!(
                "after a clean shutdown: {:?}",
                other.map(|_| "another state")
            );
            tally.violation(seed, what, None);
        }
    }

    println!(
        "power loss: {} batches, {} crash points, images by kind {:?}",
        all, tally.crash_points, tally.by_kind
    );
    println!(
        "power loss: recovered to before the commit in flight {}, after it {}; {} crashes \
         during recovery, {} recovered databases written again",
        tally.before_commit, tally.after_commit, tally.nested, tally.extended
    );
    // The hint store is in every image too: how much of what was acknowledged was hints.
    let (mut hints_stored, mut hints_removed) = (0, 0);
    for write in journal.batches(0..all).into_iter().flatten() {
        match write {
            Write::Hint { .. } => hints_stored += 1,
            Write::RemoveHint { .. } => hints_removed += 1,
            _ => {}
        }
    }
    println!(
        "power loss: of the acknowledged writes, {hints_stored} hint stores and {hints_removed} \
         hint removals (checked in every image with the objects)"
    );
    println!(
        "acked commits lost: {} over {} crash images",
        tally.acked_lost, tally.images
    );
    assert!(tally.violations.is_empty(), "{:#?}", tally.violations);
    assert!(
        tally.after_commit > 0 && tally.before_commit > 0,
        "{tally:?}"
    );
}

/// Takes every kind of crash image at one crash point and checks each, then crashes one of the
/// recoveries and writes to another.
fn pull_the_plug(crash: &CrashPoint<'_>, snap: &Snapshot, rng: &mut Rng, tally: &mut Tally) {
    let recovered: Vec<Recovered> = ImageKind::ALL
        .into_iter()
        .filter_map(|kind| crash.check_image(tally, kind, snap.image(kind, rng)))
        .collect();
    // A commit is all or nothing: every image recovers to the state before the commit in flight
    // or to the one after it.
    let mut distinct: Vec<&Model> = Vec::new();
    for r in &recovered {
        if !distinct.contains(&&r.state) {
            distinct.push(&r.state);
        }
    }
    if distinct.len() > 2 {
        let found: Vec<_> = recovered
            .iter()
            .map(|r| (r.kind, r.found.clone()))
            .collect();
        let what = format!(
            "{}: images recovered to {} states: {found:?}",
            crash.what,
            distinct.len()
        );
        tally.violation(crash.seed, what, None);
    }
    if recovered.is_empty() {
        return;
    }
    let r = &recovered[rng.below(recovered.len() as u64) as usize];
    crash_during_recovery(crash, r, rng, tally);
    let r = &recovered[rng.below(recovered.len() as u64) as usize];
    write_after_recovery(crash, &r.state, &r.disk, rng, tally);
}

/// Reopens `image` again, cuts the power at a random operation of the recovery, and checks that
/// the image left then recovers to the same state.
fn crash_during_recovery(
    crash: &CrashPoint<'_>,
    first: &Recovered,
    rng: &mut Rng,
    tally: &mut Tally,
) {
    let (kind, image, expected) = (first.kind, first.image.as_slice(), &first.state);
    let recovery_ops = first.disk.counts().total();
    if recovery_ops == 0 {
        return;
    }
    let disk = CrashDisk::from_image(image.to_vec());
    let at = 1 + rng.below(recovery_ops);
    disk.pause_at(Some(PausePoint::Op(at)));
    let opener = {
        let disk = disk.clone();
        thread::spawn(move || open_and_read(disk))
    };
    let deadline = Instant::now() + DEADLINE;
    let mut snap = None;
    while snap.is_none() && !opener.is_finished() {
        assert!(
            Instant::now() < deadline,
            "recovery neither paused nor finished"
        );
        if disk.wait_paused(Duration::from_millis(5)) {
            snap = Some(disk.snapshot());
        }
    }
    disk.resume();
    let why = match opener.join() {
        Ok(Ok(_)) => None,
        Ok(Err(why)) => Some(why),
        Err(_) => Some("the recovery panicked".to_owned()),
    };
    if let Some(why) = why {
        let what = format!("{}, {kind:?} image, second recovery: {why}", crash.what);
        tally.violation(crash.seed, what, Some(image));
        return;
    }
    let Some(snap) = snap else { return };
    let nested_kind = ImageKind::ALL[rng.below(ImageKind::ALL.len() as u64) as usize];
    let nested = snap.image(nested_kind, rng);
    tally.images += 1;
    tally.nested += 1;
    *tally
        .by_kind
        .entry("crash during recovery".into())
        .or_default() += 1;
    match recover(nested.clone()) {
        Ok((state, _)) if state == *expected => {}
        Ok(_) => {
            let what = format!(
                "{}, {kind:?} image crashed at recovery op {at}, {nested_kind:?}: recovered to \
                 another state than the uninterrupted recovery",
                crash.what
            );
            tally.violation(crash.seed, what, Some(nested.as_slice()));
        }
        Err(why) => {
            let what = format!(
                "{}, {kind:?} image crashed at recovery op {at}, {nested_kind:?}: {why}",
                crash.what
            );
            tally.violation(crash.seed, what, Some(nested.as_slice()));
        }
    }
}

/// Writes a batch to a recovered database and reopens what is durable: the repaired database
/// takes writes and keeps them.
fn write_after_recovery(
    crash: &CrashPoint<'_>,
    state: &Model,
    disk: &CrashDisk,
    rng: &mut Rng,
    tally: &mut Tally,
) {
    let image = disk.snapshot().durable;
    let disk = CrashDisk::from_image(image);
    let batch = random_batch(rng);
    let mut expected = state.clone();
    for w in batch.writes() {
        expected.apply(w);
    }
    let result = RedbStorage::open_with_backend(disk.clone(), &node("n1"), q(), INCARNATION)
        .map_err(|e| format!("the recovered database did not open: {e}"))
        .and_then(|(s, _)| {
            s.write(batch)
                .map_err(|e| format!("the recovered database refused a write: {e}"))
        });
    tally.extended += 1;
    let outcome = match result {
        Ok(()) => recover(disk.snapshot().durable).map(|(s, _)| s == expected),
        Err(e) => Err(e),
    };
    if outcome != Ok(true) {
        let what = format!("{}: write after recovery: {outcome:?}", crash.what);
        tally.violation(crash.seed, what, None);
    }
}

// ---- I/O errors -------------------------------------------------------------------------------

/// What the I/O-error rounds showed.
#[derive(Debug, Default)]
struct IoTally {
    rounds: usize,
    fired: usize,
    /// Batches answered with an error.
    failed_batches: usize,
    /// Batches acknowledged although a commit before them (or theirs) had failed, or whose
    /// writes are missing after reopening.
    wrong_acks: usize,
    images: usize,
    plans: BTreeMap<String, usize>,
    violations: Vec<String>,
}

fn random_plan(rng: &mut Rng) -> FaultPlan {
    let error = if rng.chance(0.5) {
        IoFault::Eio
    } else {
        IoFault::Enospc
    };
    let (op, countdown) = match rng.below(5) {
        0 | 1 => (Op::Write, 1 + rng.below(60)),
        2 | 3 => (Op::Sync, 1 + rng.below(4)),
        _ => (Op::SetLen, 1),
    };
    let trigger = if rng.chance(0.25) {
        Trigger::Probability {
            chance: 0.02 + rng.below(20) as f64 / 100.0,
            seed: rng.next_u64(),
        }
    } else {
        Trigger::Countdown(countdown)
    };
    FaultPlan { op, error, trigger }
}

#[test]
fn io_errors_fail_the_commit_and_never_acknowledge_it() {
    let seed = seed();
    let rounds = env_count("SHOAL_IO_ERROR_ROUNDS", DEFAULT_IO_ERROR_ROUNDS);
    println!("I/O errors: seed {seed} (SHOAL_SEED={seed} replays it), {rounds} rounds");
    let mut rng = Rng::new(seed);
    let mut tally = IoTally::default();
    for round in 0..rounds {
        io_error_round(seed, round, &mut rng, &mut tally);
    }
    println!(
        "I/O errors: {} rounds, {} with a fault that fired, {} crash images reopened; faults {:?}",
        tally.rounds, tally.fired, tally.images, tally.plans
    );
    println!(
        "acks after injected I/O errors: {} of {}",
        tally.wrong_acks, tally.failed_batches
    );
    assert!(tally.violations.is_empty(), "{:#?}", tally.violations);
    assert_eq!(tally.wrong_acks, 0);
    assert!(
        tally.fired * 2 >= tally.rounds,
        "too few faults fired: {tally:?}"
    );
}

fn io_error_round(seed: u64, round: usize, rng: &mut Rng, tally: &mut IoTally) {
    let round_seed = rng.next_u64();
    let plan = random_plan(rng);
    let trigger = match plan.trigger {
        Trigger::Countdown(_) => "countdown",
        Trigger::Probability { .. } => "probability",
    };
    let label = format!("{:?} {:?} {trigger}", plan.op, plan.error);
    let what = format!("seed {seed} round {round} ({plan:?})");
    tally.rounds += 1;

    let disk = CrashDisk::new();
    let (s, _) =
        RedbStorage::open_with_backend(disk.clone(), &node("n1"), q(), INCARNATION).unwrap();
    // A few hundred batches at most if the fault never fires.
    let journal = Journal::new(400);
    let writers = start_writers(&s, &journal, round_seed);
    wait_until("some acknowledged batches", || journal.acked_prefix() >= 5);

    disk.pause_at(Some(PausePoint::Fault));
    disk.inject(plan);
    let deadline = Instant::now() + DEADLINE;
    let mut at_fault = None;
    while at_fault.is_none() && journal.len() < 400 {
        assert!(Instant::now() < deadline, "{what}: neither fault nor limit");
        if disk.wait_paused(Duration::from_millis(5)) {
            // The commit thread is inside the failing operation: what is acknowledged now is
            // everything committed before the failed commit.
            at_fault = Some((journal.acked_prefix(), disk.snapshot(), journal.len()));
            // Let the writers submit a few more batches, which must fail too.
            journal.limit.store(journal.len() + 12, Ordering::SeqCst);
        }
    }
    disk.resume();
    stop_writers(&journal, writers);
    drop(s);
    disk.heal();
    let Some((acked_at_fault, snap_at_fault, _)) = at_fault else {
        return;
    };
    tally.fired += 1;
    *tally.plans.entry(label).or_default() += 1;

    let outcomes: Vec<Option<Result<(), CommitError>>> = journal.outcomes.lock().unwrap().clone();
    let answered = outcomes.iter().filter(|o| o.is_some()).count();
    if answered != outcomes.len() || journal.repeated_answers.load(Ordering::SeqCst) != 0 {
        tally
            .violations
            .push(format!("{what}: not every batch was answered exactly once"));
    }
    let first_error = outcomes.iter().position(|o| matches!(o, Some(Err(_))));
    let acked: Vec<usize> = (0..outcomes.len())
        .filter(|&i| matches!(outcomes[i], Some(Ok(()))))
        .collect();
    tally.failed_batches += outcomes
        .iter()
        .filter(|o| matches!(o, Some(Err(_))))
        .count();
    if let Some(first) = first_error {
        // redb refuses every commit after a failed one until reopened, so nothing after the
        // first failure may be acknowledged.
        let late = acked.iter().filter(|&&i| i > first).count();
        if late > 0 {
            tally.wrong_acks += late;
            tally.violations.push(format!(
                "{what}: {late} batches acknowledged after batch {first} failed"
            ));
        }
        match &outcomes[first] {
            // The engine's error is the source, and its message names the injected one.
            Some(Err(CommitError::Engine(e)))
                if std::error::Error::source(e)
                    .is_some_and(|s| s.to_string().contains("injected")) => {}
            other => tally.violations.push(format!(
                "{what}: the first failure does not name the injected error: {other:?}"
            )),
        }
        if first < acked_at_fault {
            tally.violations.push(format!(
                "{what}: batch {first} failed before the fault (at {acked_at_fault} acknowledged)"
            ));
        }
    }

    // Reopen on a healthy disk: from what a power cut at the fault would leave, and from what is
    // on disk after the failed storage was closed.
    let acked_count = acked.last().map_or(0, |&i| i + 1);
    let states = prefix_states(&Model::default(), &journal.batches(0..journal.len()));
    let mut images: Vec<(String, Vec<u8>)> = Vec::new();
    for kind in [
        ImageKind::Durable,
        ImageKind::Everything,
        ImageKind::Subset,
        ImageKind::TornSubset { sector: 512 },
    ] {
        images.push((
            format!("at the fault, {kind:?}"),
            snap_at_fault.image(kind, rng),
        ));
    }
    let closed = disk.snapshot();
    for kind in [ImageKind::Durable, ImageKind::Subset] {
        images.push((format!("after closing, {kind:?}"), closed.image(kind, rng)));
    }
    let mut distinct: Vec<Model> = Vec::new();
    for (label, image) in images {
        tally.images += 1;
        match recover(image) {
            Err(why) => tally.violations.push(format!("{what}, {label}: {why}")),
            Ok((state, _)) => {
                let found = matching(&states, 0, &state);
                match found.iter().max() {
                    Some(&k) if k >= acked_count => {}
                    Some(&k) => {
                        tally.wrong_acks += acked_count - k;
                        tally.violations.push(format!(
                            "{what}, {label}: holds {k} batches, {acked_count} were acknowledged"
                        ));
                    }
                    None => tally.violations.push(format!(
                        "{what}, {label}: recovered to no prefix of the batches"
                    )),
                }
                if !distinct.contains(&state) {
                    distinct.push(state);
                }
            }
        }
    }
    if distinct.len() > 2 {
        tally.violations.push(format!(
            "{what}: images recovered to {} states",
            distinct.len()
        ));
    }
}
