//! What each request does: which operation, which key, which value. One [`Chooser`] per worker,
//! seeded from the phase's seed and the worker's number, so a run's choices are reproducible.

use std::io::Write as _;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};

use crate::spec::{Distribution, PhaseSpec};
use crate::target::Op;
use crate::zipf::Zipfian;

/// Values each worker writes, chosen among at random (they are random bytes, made once).
const VALUE_POOL: usize = 16;

/// The name of key `number`: `user{number:08}`, as WORKLOADS.md names W1's keys.
pub fn key_name(number: u64) -> Vec<u8> {
    let mut name = Vec::with_capacity(12);
    write_key_name(&mut name, number);
    name
}

fn write_key_name(buf: &mut Vec<u8>, number: u64) {
    buf.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "user{number:08}");
}

/// Key choice shared by the workers of a phase (the zipfian constant is computed once).
#[derive(Debug, Clone)]
pub(crate) enum KeyChoice {
    Uniform(u64),
    Zipfian(Zipfian),
}

impl KeyChoice {
    pub(crate) fn new(spec: &PhaseSpec) -> Result<KeyChoice, crate::BenchError> {
        Ok(match spec.distribution {
            Distribution::Uniform => KeyChoice::Uniform(spec.keys.get()),
            Distribution::Zipfian { theta } => {
                KeyChoice::Zipfian(Zipfian::new(spec.keys.get(), theta)?)
            }
        })
    }

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            KeyChoice::Uniform(keys) => rng.random_range(0..*keys),
            KeyChoice::Zipfian(zipf) => zipf.sample(rng),
        }
    }
}

/// One worker's source of operations.
#[derive(Debug)]
pub(crate) struct Chooser {
    keys: KeyChoice,
    read_ratio: f64,
    rng: SmallRng,
    values: Vec<Bytes>,
    name: Vec<u8>,
}

impl Chooser {
    pub(crate) fn new(
        keys: KeyChoice,
        read_ratio: f64,
        value_size: usize,
        seed: u64,
        worker: usize,
    ) -> Chooser {
        let mut rng =
            SmallRng::seed_from_u64(seed ^ (worker as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let values = (0..VALUE_POOL)
            .map(|_| random_value(&mut rng, value_size))
            .collect();
        Chooser {
            keys,
            read_ratio,
            rng,
            values,
            name: Vec::with_capacity(12),
        }
    }

    /// The next operation and key; the key's name is [`Chooser::name`] until the next call.
    pub(crate) fn next(&mut self) -> (Op, u64) {
        let op = if self.read_ratio >= 1.0
            || (self.read_ratio > 0.0 && self.rng.random::<f64>() < self.read_ratio)
        {
            Op::Read
        } else {
            Op::Update
        };
        let number = self.keys.sample(&mut self.rng);
        write_key_name(&mut self.name, number);
        (op, number)
    }

    pub(crate) fn name(&self) -> &[u8] {
        &self.name
    }

    /// A value to write.
    pub(crate) fn value(&mut self) -> Bytes {
        let i = self.rng.random_range(0..self.values.len());
        self.values[i].clone()
    }
}

/// `size` random bytes.
pub(crate) fn random_value<R: Rng + ?Sized>(rng: &mut R, size: usize) -> Bytes {
    let mut value = vec![0u8; size];
    rng.fill_bytes(&mut value);
    Bytes::from(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_as_in_w1() {
        assert_eq!(key_name(0), b"user00000000");
        assert_eq!(key_name(99_999), b"user00099999");
    }

    #[test]
    fn the_mix_follows_the_read_ratio() {
        let mut chooser = Chooser::new(KeyChoice::Uniform(1000), 0.95, 16, 3, 0);
        let reads = (0..20_000).filter(|_| chooser.next().0 == Op::Read).count();
        assert!((18_600..19_400).contains(&reads), "{reads} reads of 20000");
        let mut writes_only = Chooser::new(KeyChoice::Uniform(10), 0.0, 16, 3, 0);
        assert!((0..1000).all(|_| writes_only.next().0 == Op::Update));
        assert_eq!(writes_only.value().len(), 16);
    }
}
