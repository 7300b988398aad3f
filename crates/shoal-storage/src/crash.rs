//! A disk that knows what a power cut would keep: the fault-injecting redb backend of the crash
//! tests (compiled for tests only).
//!
//! [`CrashDisk`] keeps the **durable image** (the bytes as of the last completed `sync_data`)
//! and every write and resize made since (**pending**). Reads see everything, as a page cache
//! would. A [`Snapshot`] of the two turns into crash images ([`ImageKind`]): none of the pending
//! operations, all of them, a random subset (the device reorders and drops unsynced writes), or
//! one write torn at sector granularity. A crash image is reopened by giving it to a fresh
//! `CrashDisk` ([`CrashDisk::from_image`]).
//!
//! Faults: an operation can be made to fail with EIO or ENOSPC after a countdown or with a
//! probability ([`FaultPlan`]), and the disk can stop a caller inside an operation
//! ([`CrashDisk::pause_at`]) so that a test sees the process exactly at that point: the commit
//! thread stands still while the test takes a snapshot and reads what was acknowledged.
//!
//! The model follows redb's stated assumptions about media (its `docs/design.md`): a completed
//! sync makes every earlier write durable; an unsynced write may or may not survive, in part
//! (single bytes are atomic; here, whole sectors); writes never change bytes outside their range.
//! A failed operation has no effect; a failed sync leaves the pending operations pending.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// An in-memory disk for redb that records durable and pending state and injects faults.
/// Clones share the disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct CrashDisk {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The bytes as of the last completed sync.
    durable: Vec<u8>,
    /// Writes and resizes since then, in order.
    pending: Vec<Pending>,
    /// What reads see: `durable` with every pending operation applied.
    live: Vec<u8>,
    counts: OpCounts,
    pause: Option<Stop>,
    /// A caller is stopped at the pause point.
    paused: bool,
    faults: Option<Faults>,
    injected: u64,
}

/// One operation made since the last sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// `data` written at `offset`.
    Write {
        /// Where.
        offset: u64,
        /// What.
        data: Vec<u8>,
    },
    /// The file resized to this many bytes.
    SetLen(u64),
}

/// How many operations of each kind the disk has seen (failed ones included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OpCounts {
    /// `write` calls.
    pub(crate) writes: u64,
    /// `set_len` calls.
    pub(crate) set_lens: u64,
    /// `sync_data` calls.
    pub(crate) syncs: u64,
}

impl OpCounts {
    /// Writes, resizes and syncs together.
    pub(crate) fn total(&self) -> u64 {
        self.writes + self.set_lens + self.syncs
    }

    fn of(&self, op: Op) -> u64 {
        match op {
            Op::Write => self.writes,
            Op::SetLen => self.set_lens,
            Op::Sync => self.syncs,
        }
    }

    fn count(&mut self, op: Op) {
        match op {
            Op::Write => self.writes += 1,
            Op::SetLen => self.set_lens += 1,
            Op::Sync => self.syncs += 1,
        }
    }
}

/// A kind of disk operation that changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `write`.
    Write,
    /// `set_len`.
    SetLen,
    /// `sync_data`.
    Sync,
}

/// Where a caller is stopped, counted from when the pause is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PausePoint {
    /// Before the n-th operation from now (1 = the next one).
    Op(u64),
    /// Before the n-th sync from now.
    Sync(u64),
    /// Before the first injected fault returns its error.
    Fault,
}

/// A pause point made absolute when it was set, so that operations made meanwhile by other
/// threads cannot overtake it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// When [`OpCounts::total`] reaches this.
    Op(u64),
    /// When [`OpCounts::syncs`] reaches this, on a sync.
    Sync(u64),
    Fault,
}

/// The error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoFault {
    /// An I/O error (the device failed).
    Eio,
    /// No space left on the device.
    Enospc,
}

impl IoFault {
    fn error(self) -> io::Error {
        let errno = match self {
            IoFault::Eio => libc::EIO,
            IoFault::Enospc => libc::ENOSPC,
        };
        let os = io::Error::from_raw_os_error(errno);
        io::Error::new(os.kind(), format!("injected: {os}"))
    }
}

/// When an injected fault fires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Trigger {
    /// On the n-th operation of the planned kind from when the plan is set (1 = the next one),
    /// and only then.
    Countdown(u64),
    /// On each operation of the planned kind with this probability, drawn from `seed`.
    Probability {
        /// Chance of failure per operation, 0.0 ..= 1.0.
        chance: f64,
        /// Seed of the draws.
        seed: u64,
    },
}

/// Which operations fail, with what, and when.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct FaultPlan {
    /// The kind of operation that fails.
    pub(crate) op: Op,
    /// The error it returns.
    pub(crate) error: IoFault,
    /// When.
    pub(crate) trigger: Trigger,
}

#[derive(Debug)]
struct Faults {
    plan: FaultPlan,
    /// For a countdown: the count of the planned kind at which it fires.
    fire_at: u64,
    rng: Rng,
}

/// The durable image and the pending operations at one instant: everything a power cut at that
/// instant could leave behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The bytes as of the last completed sync.
    pub(crate) durable: Vec<u8>,
    /// The operations since, in order.
    pub(crate) pending: Vec<Pending>,
}

/// Which of the pending operations a crash image keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ImageKind {
    /// None: the durable image.
    Durable,
    /// All of them, as if the sync had completed.
    Everything,
    /// Each operation kept or dropped at random (the device reordered and lost some).
    Subset,
    /// The operations before one pending write, and a whole-sector prefix of that write (power
    /// failed while it was being written, in order).
    TornPrefix {
        /// Sector size in bytes.
        sector: u64,
    },
    /// A random subset in which writes longer than a sector also keep only a random subset of
    /// their sectors.
    TornSubset {
        /// Sector size in bytes.
        sector: u64,
    },
}

impl ImageKind {
    /// Every kind, with 512-byte and 4 KiB sectors for the torn ones.
    pub(crate) const ALL: [ImageKind; 7] = [
        ImageKind::Durable,
        ImageKind::Everything,
        ImageKind::Subset,
        ImageKind::TornPrefix { sector: 512 },
        ImageKind::TornPrefix { sector: 4096 },
        ImageKind::TornSubset { sector: 512 },
        ImageKind::TornSubset { sector: 4096 },
    ];
}

impl CrashDisk {
    /// An empty disk.
    pub(crate) fn new() -> CrashDisk {
        CrashDisk::default()
    }

    /// A disk whose durable contents are `image` (a crash image), with nothing pending.
    pub(crate) fn from_image(image: Vec<u8>) -> CrashDisk {
        let disk = CrashDisk::new();
        {
            let mut s = disk.lock();
            s.live = image.clone();
            s.durable = image;
        }
        disk
    }

    /// The durable image and the pending operations now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let s = self.lock();
        Snapshot {
            durable: s.durable.clone(),
            pending: s.pending.clone(),
        }
    }

    /// Operations seen so far.
    pub(crate) fn counts(&self) -> OpCounts {
        self.lock().counts
    }

    /// Faults injected so far.
    pub(crate) fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// Stops the next caller that reaches `point` until [`CrashDisk::resume`]. Replaces any
    /// earlier pause point; `None` lets everyone through.
    pub(crate) fn pause_at(&self, point: Option<PausePoint>) {
        let mut s = self.lock();
        s.pause = point.map(|p| match p {
            PausePoint::Op(n) => Stop::Op(s.counts.total() + n.max(1)),
            PausePoint::Sync(n) => Stop::Sync(s.counts.syncs + n.max(1)),
            PausePoint::Fault => Stop::Fault,
        });
        if point.is_none() {
            s.paused = false;
        }
        drop(s);
        self.shared.changed.notify_all();
    }

    /// Waits until a caller is stopped at the pause point; false if `timeout` passes first.
    pub(crate) fn wait_paused(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while !s.paused {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .shared
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Lets the stopped caller go on, and clears the pause point.
    pub(crate) fn resume(&self) {
        self.pause_at(None);
    }

    /// Makes operations fail as `plan` says (replacing any earlier plan).
    pub(crate) fn inject(&self, plan: FaultPlan) {
        let mut s = self.lock();
        let fire_at = match plan.trigger {
            Trigger::Countdown(n) => s.counts.of(plan.op) + n.max(1),
            Trigger::Probability { .. } => 0,
        };
        let seed = match plan.trigger {
            Trigger::Probability { seed, .. } => seed,
            Trigger::Countdown(_) => 0,
        };
        s.faults = Some(Faults {
            plan,
            fire_at,
            rng: Rng::new(seed),
        });
    }

    /// Stops injecting faults.
    pub(crate) fn heal(&self) {
        self.lock().faults = None;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `op`, stops at the pause point if it is this operation, and says whether an
    /// injected fault fails it. Returns the guard to go on with.
    fn enter(&self, op: Op) -> (MutexGuard<'_, State>, Option<io::Error>) {
        let mut s = self.lock();
        s.counts.count(op);
        let seen = s.counts.of(op);
        let fault = s.faults.as_mut().and_then(|f| {
            if f.plan.op != op {
                return None;
            }
            let fires = match f.plan.trigger {
                Trigger::Countdown(_) => seen == f.fire_at,
                Trigger::Probability { chance, .. } => f.rng.chance(chance),
            };
            fires.then_some(f.plan.error)
        });
        let stop_here = match s.pause {
            Some(Stop::Op(n)) => s.counts.total() == n,
            Some(Stop::Sync(n)) => op == Op::Sync && s.counts.syncs == n,
            Some(Stop::Fault) => fault.is_some() && s.injected == 0,
            None => false,
        };
        if fault.is_some() {
            s.injected += 1;
        }
        if stop_here {
            s.paused = true;
            self.shared.changed.notify_all();
            while s.paused {
                s = self
                    .shared
                    .changed
                    .wait(s)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        (s, fault.map(IoFault::error))
    }
}

impl redb::StorageBackend for CrashDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.lock().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let s = self.lock();
        let range = byte_range(offset, out.len())?;
        let source = s
            .live
            .get(range)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let (mut s, fault) = self.enter(Op::SetLen);
        if let Some(e) = fault {
            return Err(e);
        }
        let op = Pending::SetLen(len);
        apply(&mut s.live, &op)?;
        s.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let (mut s, fault) = self.enter(Op::Sync);
        if let Some(e) = fault {
            return Err(e);
        }
        s.durable = s.live.clone();
        s.pending.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let (mut s, fault) = self.enter(Op::Write);
        if let Some(e) = fault {
            return Err(e);
        }
        let op = Pending::Write {
            offset,
            data: data.to_vec(),
        };
        apply(&mut s.live, &op)?;
        s.pending.push(op);
        Ok(())
    }
}

impl Snapshot {
    /// How many pending writes (not resizes) there are.
    pub(crate) fn pending_writes(&self) -> usize {
        self.pending
            .iter()
            .filter(|p| matches!(p, Pending::Write { .. }))
            .count()
    }

    /// The bytes a power cut would leave, keeping the pending operations `kind` says, drawing
    /// any random choice from `rng`.
    pub(crate) fn image(&self, kind: ImageKind, rng: &mut Rng) -> Vec<u8> {
        let mut image = self.durable.clone();
        let keep = |image: &mut Vec<u8>, op: &Pending| {
            // A pending operation already succeeded once on a larger-or-equal image, so it
            // cannot fail here; an impossible offset would only make the image shorter.
            let _ = apply(image, op);
        };
        match kind {
            ImageKind::Durable => {}
            ImageKind::Everything => self.pending.iter().for_each(|op| keep(&mut image, op)),
            ImageKind::Subset => {
                for op in &self.pending {
                    if rng.chance(0.5) {
                        keep(&mut image, op);
                    }
                }
            }
            ImageKind::TornPrefix { sector } => {
                let writes: Vec<usize> = (0..self.pending.len())
                    .filter(|&i| matches!(self.pending[i], Pending::Write { .. }))
                    .collect();
                // Prefer a write that spans a sector boundary: only those can tear.
                let tearable: Vec<usize> = writes
                    .iter()
                    .copied()
                    .filter(|&i| sector_cuts(&self.pending[i], sector).len() > 1)
                    .collect();
                let pool = if tearable.is_empty() {
                    &writes
                } else {
                    &tearable
                };
                let torn = if pool.is_empty() {
                    self.pending.len()
                } else {
                    pool[rng.below(pool.len() as u64) as usize]
                };
                for op in &self.pending[..torn] {
                    keep(&mut image, op);
                }
                if let Some(Pending::Write { offset, data }) = self.pending.get(torn) {
                    let cuts = sector_cuts(&self.pending[torn], sector);
                    // Keep the bytes up to a sector boundary strictly inside the write (or none).
                    let cut = cuts[rng.below(cuts.len() as u64) as usize];
                    let len = (cut - offset) as usize;
                    keep(
                        &mut image,
                        &Pending::Write {
                            offset: *offset,
                            data: data[..len].to_vec(),
                        },
                    );
                }
            }
            ImageKind::TornSubset { sector } => {
                for op in &self.pending {
                    if !rng.chance(0.5) {
                        continue;
                    }
                    let cuts = sector_cuts(op, sector);
                    match op {
                        Pending::Write { offset, data } if cuts.len() > 1 && rng.chance(0.5) => {
                            // Sector pieces: [cuts[i], cuts[i + 1]), and the last to the end.
                            let end = offset + data.len() as u64;
                            for (i, &from) in cuts.iter().enumerate() {
                                let to = cuts.get(i + 1).copied().unwrap_or(end);
                                if rng.chance(0.5) {
                                    let a = (from - offset) as usize;
                                    let b = (to - offset) as usize;
                                    keep(
                                        &mut image,
                                        &Pending::Write {
                                            offset: from,
                                            data: data[a..b].to_vec(),
                                        },
                                    );
                                }
                            }
                        }
                        _ => keep(&mut image, op),
                    }
                }
            }
        }
        image
    }
}

/// A small seeded generator (SplitMix64): the crash tests print their seed, and the same seed
/// draws the same choices.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator drawing from `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0 .. n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// The byte range `offset .. offset + len` as indices, if it fits in memory.
fn byte_range(offset: u64, len: usize) -> Result<std::ops::Range<usize>, io::Error> {
    let start =
        usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(start..end)
}

/// Applies one operation to an image. A write past the end extends the file (with zeros up to
/// the write), as it does on a real file system.
fn apply(image: &mut Vec<u8>, op: &Pending) -> Result<(), io::Error> {
    match op {
        Pending::Write { offset, data } => {
            let range = byte_range(*offset, data.len())?;
            if image.len() < range.end {
                image.resize(range.end, 0);
            }
            image[range].copy_from_slice(data);
        }
        Pending::SetLen(len) => {
            let len =
                usize::try_from(*len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            image.resize(len, 0);
        }
    }
    Ok(())
}

/// Where a write may be cut at `sector` granularity: its start, then every sector boundary
/// strictly inside it. A write inside one sector has just its start.
fn sector_cuts(op: &Pending, sector: u64) -> Vec<u64> {
    let Pending::Write { offset, data } = op else {
        return Vec::new();
    };
    let end = offset + data.len() as u64;
    let mut cuts = vec![*offset];
    let mut next = (offset / sector + 1) * sector;
    while next < end {
        cuts.push(next);
        next += sector;
    }
    cuts
}

#[cfg(test)]
mod tests {
    use redb::StorageBackend;

    use super::*;

    fn write(disk: &CrashDisk, offset: u64, byte: u8, len: usize) {
        disk.write(offset, &vec![byte; len]).unwrap();
    }

    #[test]
    fn a_sync_makes_pending_writes_durable() {
        let disk = CrashDisk::new();
        disk.set_len(8).unwrap();
        write(&disk, 0, 1, 4);
        let before = disk.snapshot();
        assert_eq!(before.durable, Vec::<u8>::new());
        assert_eq!(before.pending.len(), 2);
        disk.sync_data().unwrap();
        write(&disk, 4, 2, 4);
        let after = disk.snapshot();
        assert_eq!(after.durable, vec![1, 1, 1, 1, 0, 0, 0, 0]);
        assert_eq!(after.pending_writes(), 1);
        let mut out = [0; 8];
        disk.read(0, &mut out).unwrap();
        assert_eq!(out, [1, 1, 1, 1, 2, 2, 2, 2], "reads see pending writes");
        let mut rng = Rng::new(1);
        assert_eq!(after.image(ImageKind::Durable, &mut rng), after.durable);
        assert_eq!(after.image(ImageKind::Everything, &mut rng), out.to_vec());
    }

    #[test]
    fn subsets_keep_each_pending_write_or_not() {
        let disk = CrashDisk::new();
        for i in 0..8u8 {
            write(&disk, u64::from(i), i + 1, 1);
        }
        let snap = disk.snapshot();
        let mut rng = Rng::new(7);
        let mut seen_partial = false;
        for _ in 0..50 {
            let image = snap.image(ImageKind::Subset, &mut rng);
            // Every byte is either unwritten (0, or the file is shorter) or its write's value.
            for (i, b) in image.iter().enumerate() {
                assert!(*b == 0 || *b == i as u8 + 1);
            }
            seen_partial |= image.contains(&0) && image.iter().any(|b| *b != 0);
        }
        assert!(seen_partial);
    }

    #[test]
    fn torn_writes_keep_whole_sectors_only() {
        let disk = CrashDisk::new();
        disk.set_len(8192).unwrap();
        disk.sync_data().unwrap();
        write(&disk, 100, 9, 3000);
        let snap = disk.snapshot();
        let mut rng = Rng::new(3);
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let image = snap.image(ImageKind::TornPrefix { sector: 512 }, &mut rng);
            let kept = image.iter().filter(|b| **b == 9).count();
            lengths.insert(kept);
            // A prefix that ends on a sector boundary, and never the whole write.
            assert!(kept < 3000);
            assert!(kept == 0 || (100 + kept) % 512 == 0, "kept {kept}");
            assert!(image[100..100 + kept].iter().all(|b| *b == 9));
        }
        assert!(lengths.len() > 2, "{lengths:?}");
        for _ in 0..100 {
            let image = snap.image(ImageKind::TornSubset { sector: 512 }, &mut rng);
            // Runs of kept bytes start and end on sector boundaries or at the write's ends.
            for i in 1..image.len() {
                if (image[i] == 9) != (image[i - 1] == 9) {
                    assert!(i % 512 == 0 || i == 100 || i == 3100, "edge at {i}");
                }
            }
        }
    }

    #[test]
    fn a_countdown_fault_fails_exactly_one_operation_and_changes_nothing() {
        let disk = CrashDisk::new();
        disk.inject(FaultPlan {
            op: Op::Sync,
            error: IoFault::Eio,
            trigger: Trigger::Countdown(2),
        });
        write(&disk, 0, 1, 4);
        disk.sync_data().unwrap();
        write(&disk, 0, 2, 4);
        let err = disk.sync_data().unwrap_err();
        assert_eq!(err.raw_os_error(), None);
        assert!(err.to_string().contains("injected"), "{err}");
        assert_eq!(disk.injected(), 1);
        assert_eq!(
            disk.snapshot().durable,
            vec![1; 4],
            "the failed sync made nothing durable"
        );
        assert_eq!(disk.snapshot().pending_writes(), 1);
        disk.sync_data().unwrap();
        assert_eq!(disk.snapshot().durable, vec![2; 4]);

        disk.inject(FaultPlan {
            op: Op::Write,
            error: IoFault::Enospc,
            trigger: Trigger::Countdown(1),
        });
        let err = disk.write(0, &[3; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        let mut out = [0; 4];
        disk.read(0, &mut out).unwrap();
        assert_eq!(out, [2; 4], "the failed write changed nothing");
    }

    #[test]
    fn a_paused_caller_waits_until_resumed() {
        let disk = CrashDisk::new();
        disk.pause_at(Some(PausePoint::Sync(1)));
        let writer = {
            let disk = disk.clone();
            std::thread::spawn(move || {
                disk.write(0, &[5; 4]).unwrap();
                disk.sync_data().unwrap();
            })
        };
        assert!(disk.wait_paused(Duration::from_secs(20)));
        let snap = disk.snapshot();
        assert!(snap.durable.is_empty(), "stopped before the sync");
        assert_eq!(snap.pending_writes(), 1);
        disk.resume();
        writer.join().unwrap();
        assert_eq!(disk.snapshot().durable, vec![5; 4]);
        assert_eq!(disk.counts().total(), 2);
    }
}
