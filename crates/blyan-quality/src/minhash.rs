//! Near duplicates: MinHash signatures of a sample's shingles, and the index of accepted samples
//! that finds the nearest one by locality-sensitive hashing (LSH) over bands of the signature.
//!
//! A sample's [`normalize`](crate::normalize)d text is cut into shingles: runs of
//! [`SHINGLE_WORDS`] words, or of [`SHINGLE_CHARS`] characters for text written without spaces
//! between words (Chinese, Japanese, Thai) or too short to hold one run of words. Each shingle is
//! hashed once (FNV-1a of each word, folded by splitmix64), then by [`MINHASH_PERMUTATIONS`]
//! seeded multiply-add-shift functions; the minimum of each is the signature. Two signatures agree
//! at a position with probability equal to the Jaccard similarity of the shingle sets, so the
//! share of agreeing positions estimates it.
//!
//! Every seed is a constant: every node computes the same signature for the same text, and a
//! validator can repeat any refusal bit for bit.
//!
//! Memory: the index keeps 16 bits of each signature position (b-bit MinHash: two unrelated
//! texts agree by chance on a 16-bit value with probability 2⁻¹⁶, which changes no estimate
//! that matters) and one 32-bit key and one 32-bit link per band: about 256 + 32 × 8 bytes per
//! accepted sample beside the exact-hash map, ≈ 60 MB for 100,000 samples.

use std::collections::HashMap;

use blyan_chain::BlockHash;

use crate::sample::Sample;

/// MinHash functions per signature.
pub const MINHASH_PERMUTATIONS: usize = 128;
/// LSH bands per signature.
pub const LSH_BANDS: usize = 32;
/// Signature positions per band.
pub const LSH_ROWS: usize = MINHASH_PERMUTATIONS / LSH_BANDS;
// Bands tile the signature exactly. With b = 32 bands of r = 4 rows, a pair at Jaccard s becomes
// a candidate with probability 1 - (1 - s⁴)³²: 0.9998 at s = 0.7, 0.9999999 at s = 0.8, so a
// near duplicate at the default threshold is almost never missed; candidates below it are
// checked against their full signature and dropped.
const _: () = assert!(LSH_BANDS * LSH_ROWS == MINHASH_PERMUTATIONS);
/// Words per shingle.
pub const SHINGLE_WORDS: usize = 3;
/// Characters per shingle, for text without word spacing.
pub const SHINGLE_CHARS: usize = 5;
/// Mean characters per word above which text is shingled by characters: no language written
/// with spaces between words averages this much, text without spaces does.
const SPACED_WORD_CHARS_MAX: usize = 16;
/// Most samples one index holds: entries are numbered with `u32` (and one value is the end of
/// a chain).
pub const ACCEPTED_SAMPLES_MAX: usize = u32::MAX as usize - 1;

/// Marks the end of a band's chain of entries.
const CHAIN_END: u32 = u32::MAX;

/// A sample's MinHash signature: the minimum of each seeded hash over its shingles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature([u32; MINHASH_PERMUTATIONS]);

impl Signature {
    /// The signature of `normalized` text (as [`Sample::normalized_text`] gives it).
    pub fn of(normalized: &str) -> Self {
        let mut minimums = [u32::MAX; MINHASH_PERMUTATIONS];
        let permutations = permutations();
        for_each_shingle(normalized, |shingle| {
            for (minimum, (multiplier, increment)) in minimums.iter_mut().zip(permutations) {
                // Multiply-add-shift: a strongly universal family over 64-bit keys.
                let value =
                    (shingle.wrapping_mul(*multiplier).wrapping_add(*increment) >> 32) as u32;
                if value < *minimum {
                    *minimum = value;
                }
            }
        });
        Signature(minimums)
    }

    /// The estimated Jaccard similarity of two texts' shingle sets.
    pub fn similarity(&self, other: &Signature) -> f64 {
        let agree = self.0.iter().zip(&other.0).filter(|(a, b)| a == b).count();
        agree as f64 / MINHASH_PERMUTATIONS as f64
    }

    fn band_key(&self, band: usize) -> u32 {
        let rows = &self.0[band * LSH_ROWS..(band + 1) * LSH_ROWS];
        let mut key = band as u64;
        for row in rows {
            key = splitmix64(key ^ u64::from(*row));
        }
        key as u32
    }

    fn sketch(&self) -> [u16; MINHASH_PERMUTATIONS] {
        self.0.map(|value| value as u16)
    }
}

/// The seeded (multiplier, increment) pairs, the same on every machine.
fn permutations() -> &'static [(u64, u64); MINHASH_PERMUTATIONS] {
    static PERMUTATIONS: std::sync::LazyLock<[(u64, u64); MINHASH_PERMUTATIONS]> =
        std::sync::LazyLock::new(|| {
            let mut state = 0x626c_7961_6e2d_6d68; // "blyan-mh"
            std::array::from_fn(|_| {
                state = splitmix64(state);
                let multiplier = state | 1;
                state = splitmix64(state);
                (multiplier, state)
            })
        });
    &PERMUTATIONS
}

/// splitmix64's finalizer: a bijective 64-bit mix.
fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Calls `visit` with the 64-bit hash of each shingle of `normalized` (at least one: a text too
/// short for one full shingle is one shingle).
fn for_each_shingle(normalized: &str, mut visit: impl FnMut(u64)) {
    let words: Vec<u64> = normalized
        .split(' ')
        .map(|word| fnv1a(word.as_bytes()))
        .collect();
    let chars = normalized.chars().count();
    let by_words = words.len() >= SHINGLE_WORDS && chars <= words.len() * SPACED_WORD_CHARS_MAX;
    let (units, width) = if by_words {
        (words, SHINGLE_WORDS)
    } else {
        let chars: Vec<u64> = normalized
            .chars()
            .map(|ch| u64::from(u32::from(ch)))
            .collect();
        (chars, SHINGLE_CHARS)
    };
    let fold = |window: &[u64]| window.iter().fold(0, |acc, unit| splitmix64(acc ^ unit));
    if units.len() <= width {
        visit(fold(&units));
        return;
    }
    for window in units.windows(width) {
        visit(fold(window));
    }
}

/// Everything accepted so far, by exact content hash and by MinHash bands: what L0 judges a new
/// sample's duplicates against.
///
/// Two ways to fill it: [`AcceptedIndex::insert`] keeps one entry per content hash (an index
/// rebuilt from the samples that count now), [`AcceptedIndex::insert_every`] keeps every sample
/// in the order given, and the `_where` queries skip the entries a caller's predicate says no
/// longer count (an index kept up to date as samples arrive, whose samples may be refused later).
///
/// Invariant: entry `i` has `ids[i]`, `sketches[i]` and links `next[i * LSH_BANDS + band]`; each
/// band's map points at the newest entry with that key, each link at the next older one; each
/// exact list holds entries in insertion order.
#[derive(Debug, Default)]
pub struct AcceptedIndex {
    exact: HashMap<[u8; 32], Vec<u32>>,
    ids: Vec<BlockHash>,
    sketches: Vec<[u16; MINHASH_PERMUTATIONS]>,
    bands: Vec<HashMap<u32, u32>>,
    next: Vec<u32>,
}

/// An accepted sample found near a new one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NearMatch {
    /// The accepted sample's block.
    pub of: BlockHash,
    /// Estimated Jaccard similarity of their shingle sets, in [0, 1].
    pub similarity: f64,
}

impl AcceptedIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            bands: (0..LSH_BANDS).map(|_| HashMap::new()).collect(),
            ..Self::default()
        }
    }

    /// Accepted samples held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds an accepted sample, stored in block `id`. Returns `false` (and changes nothing) when
    /// a sample of the same content hash is already held, or the index is full
    /// ([`ACCEPTED_SAMPLES_MAX`]).
    pub fn insert(&mut self, sample: &Sample, id: BlockHash) -> bool {
        let signature = Signature::of(&sample.normalized_text());
        self.insert_signed(sample, &signature, id)
    }

    /// [`AcceptedIndex::insert`] with the signature already computed (by a screen that just
    /// passed the sample).
    pub fn insert_signed(&mut self, sample: &Sample, signature: &Signature, id: BlockHash) -> bool {
        let Some(hash) = content_hash_bytes(sample) else {
            return false;
        };
        if self
            .exact
            .get(&hash)
            .is_some_and(|entries| !entries.is_empty())
        {
            return false;
        }
        self.push(hash, signature, id)
    }

    /// Adds sample `id` even when a sample of the same content hash is held: an index that
    /// keeps every sample in chain order and is queried with a predicate
    /// ([`AcceptedIndex::exact_where`], [`AcceptedIndex::nearest_where`]). Returns `false`
    /// (and changes nothing) only when the index is full ([`ACCEPTED_SAMPLES_MAX`]) or the
    /// sample has no valid content hash.
    pub fn insert_every(&mut self, sample: &Sample, signature: &Signature, id: BlockHash) -> bool {
        let Some(hash) = content_hash_bytes(sample) else {
            return false;
        };
        self.push(hash, signature, id)
    }

    fn push(&mut self, hash: [u8; 32], signature: &Signature, id: BlockHash) -> bool {
        if self.ids.len() >= ACCEPTED_SAMPLES_MAX {
            return false;
        }
        let entry = self.ids.len() as u32;
        self.exact.entry(hash).or_default().push(entry);
        self.ids.push(id);
        self.sketches.push(signature.sketch());
        if self.bands.len() != LSH_BANDS {
            self.bands = (0..LSH_BANDS).map(|_| HashMap::new()).collect();
        }
        for (band, map) in self.bands.iter_mut().enumerate() {
            let previous = map.insert(signature.band_key(band), entry);
            self.next.push(previous.unwrap_or(CHAIN_END));
        }
        debug_assert_eq!(self.next.len(), self.ids.len() * LSH_BANDS);
        debug_assert_eq!(self.sketches.len(), self.ids.len());
        true
    }

    /// The block holding an accepted sample of exactly this content hash.
    pub fn exact(&self, sample: &Sample) -> Option<BlockHash> {
        self.exact_where(sample, &|_| true)
    }

    /// The oldest held sample of exactly this content hash for which `counts` is true.
    pub fn exact_where(
        &self,
        sample: &Sample,
        counts: &dyn Fn(BlockHash) -> bool,
    ) -> Option<BlockHash> {
        let hash = content_hash_bytes(sample)?;
        self.exact
            .get(&hash)?
            .iter()
            .map(|entry| self.ids[*entry as usize])
            .find(|id| counts(*id))
    }

    /// The most similar accepted sample among the LSH candidates of `signature` whose estimated
    /// similarity is at least `threshold`.
    pub fn nearest(&self, signature: &Signature, threshold: f64) -> Option<NearMatch> {
        self.nearest_where(signature, threshold, &|_| true)
    }

    /// [`AcceptedIndex::nearest`] among the held samples for which `counts` is true.
    pub fn nearest_where(
        &self,
        signature: &Signature,
        threshold: f64,
        counts: &dyn Fn(BlockHash) -> bool,
    ) -> Option<NearMatch> {
        let sketch = signature.sketch();
        let mut candidates = Vec::new();
        for (band, map) in self.bands.iter().enumerate() {
            let mut entry = map.get(&signature.band_key(band)).copied();
            while let Some(current) = entry.filter(|entry| *entry != CHAIN_END) {
                candidates.push(current);
                entry = Some(self.next[current as usize * LSH_BANDS + band]);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .map(|entry| {
                let held = &self.sketches[entry as usize];
                let agree = held.iter().zip(&sketch).filter(|(a, b)| a == b).count();
                (entry, agree as f64 / MINHASH_PERMUTATIONS as f64)
            })
            .filter(|(entry, similarity)| {
                *similarity >= threshold && counts(self.ids[*entry as usize])
            })
            // Highest similarity first; among equals the oldest entry, so the answer is stable.
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(entry, similarity)| NearMatch {
                of: self.ids[entry as usize],
                similarity,
            })
    }
}

/// The 32 bytes of a sample's `content_hash` (validated samples always have them).
fn content_hash_bytes(sample: &Sample) -> Option<[u8; 32]> {
    blake3::Hash::from_hex(&sample.content_hash)
        .ok()
        .map(|hash| *hash.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize;

    fn signature(text: &str) -> Signature {
        Signature::of(&normalize(text))
    }

    const PROSE: &str = "It is a truth universally acknowledged, that a single man in possession \
        of a good fortune, must be in want of a wife. However little known the feelings or views \
        of such a man may be on his first entering a neighbourhood, this truth is so well fixed \
        in the minds of the surrounding families, that he is considered the rightful property of \
        some one or other of their daughters.";

    #[test]
    fn identical_texts_agree_everywhere_and_unrelated_ones_almost_nowhere() {
        assert_eq!(signature(PROSE).similarity(&signature(PROSE)), 1.0);
        let other = signature(
            "The quick brown fox jumps over the lazy dog while the cat sleeps by the \
             fire and the rain keeps falling on the old tin roof of the barn.",
        );
        assert!(signature(PROSE).similarity(&other) < 0.1);
    }

    #[test]
    fn one_changed_word_keeps_the_estimate_near_the_true_jaccard() {
        let edited = PROSE.replace("daughters", "sons");
        let similarity = signature(PROSE).similarity(&signature(&edited));
        // 66 word shingles, the last 3 of which change: Jaccard 63/69 = 0.913.
        assert!((0.8..=1.0).contains(&similarity), "{similarity}");
    }

    #[test]
    fn text_without_spaces_is_shingled_by_characters() {
        let text = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。";
        let edited = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかない。";
        assert!(signature(text).similarity(&signature(edited)) > 0.7);
    }

    #[test]
    fn the_hash_functions_match_their_reference_values() {
        // Every node must compute the same signatures: the building blocks are the published
        // functions, checked against their reference outputs.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert!(
            permutations()
                .iter()
                .all(|(multiplier, _)| multiplier & 1 == 1)
        );
    }
}
