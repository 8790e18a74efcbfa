//! Deterministic mutation of inputs, for the tests that feed untrusted bytes to the
//! parsers: no new dependency, the same cases on every run, and enough of them (tens of
//! thousands per parser) to reach the odd corners a hand-written case misses.

/// A small xorshift generator: reproducible, and good enough to pick bytes and places.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed` (zero is replaced, xorshift needs a nonzero state).
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to JSON and to the repairs: structure, escapes, surrogates, numbers.
const SPICE: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\u",
    b"\\udc00",
    b"\\ud83d",
    b"1e400",
    b"NaN",
    b"-Infinity",
    b"\x00",
    b"\t",
    b"\xff",
    b"\xc3",
    b"[[[[[[[[",
    b"]]]]",
    b"null",
    b"0000",
    b"-",
    b".",
    b"e",
];

/// `count` variants of the `seeds`: each with a few bytes flipped, spliced in, cut out or
/// duplicated, or truncated.
pub(crate) fn mutations(seeds: &[Vec<u8>], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let mut v = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(v.len() + 1);
                match rng.below(6) {
                    0 if !v.is_empty() => {
                        let i = rng.below(v.len());
                        v[i] = rng.next() as u8;
                    }
                    1 => {
                        let s = SPICE[rng.below(SPICE.len())];
                        v.splice(at..at, s.iter().copied());
                    }
                    2 if at < v.len() => {
                        let end = (at + 1 + rng.below(16)).min(v.len());
                        v.drain(at..end);
                    }
                    3 if at < v.len() => {
                        let end = (at + 1 + rng.below(64)).min(v.len());
                        let dup: Vec<u8> = v[at..end].to_vec();
                        v.splice(at..at, dup);
                    }
                    4 => v.truncate(at),
                    _ => {}
                }
            }
            v
        })
        .collect()
}
