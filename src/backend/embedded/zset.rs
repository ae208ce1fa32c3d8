//! The sorted set: member → score with ranks, rank ranges and score ranges in O(log n).
//!
//! Three parts share one copy of each member:
//!
//! - a slab of slots (`score` + member bytes, members of up to 22 bytes stored inline, longer ones in
//!   one heap allocation), addressed by `u32` ids and reused through a free list;
//! - a hash index, member → id: a [`hashbrown::HashTable`] of bare `u32` ids (one control byte and
//!   one id per bucket, at most 7/8 full), hashed and compared through the member bytes in the slab;
//! - an order-statistic B+ tree of ids ([`super::tree`]) ordered by (score, member bytes), as Redis
//!   orders a sorted set (equal scores by `memcmp` of the members, shorter first on a common prefix).
//!
//! At a million members of up to 22 bytes that is about 53 bytes per member asked of the allocator
//! (32 in the slot plus the slab's growth slack, 10.5 in the index, about 6 in the tree), 56 held by
//! mimalloc with its size classes, against about 110 for Redis 7.0.15 with jemalloc (skiplist node,
//! dict entry, sds member); 36-byte members cost about 104 held against 142.
//! `cargo bench --bench embedded_memory` measures both in one run.
//!
//! Scores are never NaN (the commands refuse NaN before reaching here); `-0.0` and `0.0` compare
//! equal, as in Redis.

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use hashbrown::HashTable;

use super::tree::{self, Tree};

/// Members up to this many bytes live inside their slot.
const INLINE: usize = 22;

#[derive(Clone)]
enum Name {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Name {
    fn new(b: &[u8]) -> Self {
        if b.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..b.len()].copy_from_slice(b);
            Name::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            Name::Heap(b.into())
        }
    }

    fn vacant() -> Self {
        Name::Inline {
            len: 0,
            buf: [0; INLINE],
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline { len, buf } => &buf[..*len as usize],
            Name::Heap(b) => b,
        }
    }
}

struct Slot {
    score: f64,
    name: Name,
}

impl Slot {
    fn vacant() -> Self {
        Self {
            score: 0.0,
            name: Name::vacant(),
        }
    }
}

fn cmp_ids(slots: &[Slot], a: u32, b: u32) -> Ordering {
    let (x, y) = (&slots[a as usize], &slots[b as usize]);
    x.score
        .partial_cmp(&y.score)
        .unwrap_or(Ordering::Equal)
        .then_with(|| x.name.as_bytes().cmp(y.name.as_bytes()))
}

/// SipHash with one random key per process, so members cannot be chosen to collide.
fn hash_of(member: &[u8]) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(member)
}

/// The hash of an id's member, for the index to move its ids when it grows or shrinks.
fn rehash(slots: &[Slot]) -> impl Fn(&u32) -> u64 + '_ {
    |&id| hash_of(slots[id as usize].name.as_bytes())
}

/// member → slot id. Only the `u32` id is stored: hashing and comparing go through the slab, so each
/// member's bytes are kept once.
struct Index(HashTable<u32>);

impl Index {
    fn new() -> Self {
        Self(HashTable::new())
    }

    /// Room for `n` members without growing.
    fn with_capacity(n: usize) -> Self {
        Self(HashTable::with_capacity(n))
    }

    /// The id of `member`.
    fn find(&self, slots: &[Slot], member: &[u8], hash: u64) -> Option<u32> {
        self.0
            .find(hash, |&id| slots[id as usize].name.as_bytes() == member)
            .copied()
    }

    /// Adds `id`, whose member is absent.
    fn insert(&mut self, slots: &[Slot], hash: u64, id: u32) {
        self.0.insert_unique(hash, id, rehash(slots));
    }

    /// Removes `member`. Returns its id.
    fn remove(&mut self, slots: &[Slot], member: &[u8], hash: u64) -> Option<u32> {
        let entry = self
            .0
            .find_entry(hash, |&id| slots[id as usize].name.as_bytes() == member)
            .ok()?;
        let (id, _) = entry.remove();
        // Give the room back once the table is at most 1/8 full, as it would have been sized for
        // the members left.
        if self.0.capacity() > 8 && self.0.len() * 8 < self.0.capacity() {
            self.0.shrink_to(self.0.len(), rehash(slots));
        }
        Some(id)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A sorted set. See the module documentation for its layout.
pub struct ZSet {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: Index,
    tree: Tree,
    /// Whether Redis 7.0 would still hold this set as a listpack (at most 128 members of at most 64
    /// bytes since it was created). A listpack stores integral scores as integers, which turns `-0`
    /// into `0`; the ZADD command reproduces that while this is set. Once false, it stays false, as
    /// Redis never converts a skiplist back.
    pub(crate) listpack: bool,
}

impl Default for ZSet {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ZSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(m, s)| (String::from_utf8_lossy(m).into_owned(), s)),
            )
            .finish()
    }
}

impl ZSet {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: Index::new(),
            tree: Tree::new(),
            listpack: true,
        }
    }

    /// Members in the set.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when the set has no member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn cmp(&self) -> impl Fn(u32, u32) -> Ordering + '_ {
        |a, b| cmp_ids(&self.slots, a, b)
    }

    /// The score of `member`.
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        let id = self.index.find(&self.slots, member, hash_of(member))?;
        Some(self.slots[id as usize].score)
    }

    /// Sets the score of `member`, adding it when absent. Returns the previous score.
    pub fn insert(&mut self, member: &[u8], score: f64) -> Option<f64> {
        debug_assert!(
            !score.is_nan(),
            "NaN scores are refused before they get here"
        );
        let hash = hash_of(member);
        if let Some(id) = self.index.find(&self.slots, member, hash) {
            let old = self.slots[id as usize].score;
            if old == score {
                // Same place in the order (-0 and 0 compare equal): only the stored bits change.
                self.slots[id as usize].score = score;
            } else {
                let slots = &self.slots;
                self.tree.remove(id, &|a, b| cmp_ids(slots, a, b));
                self.slots[id as usize].score = score;
                let slots = &self.slots;
                self.tree.insert(id, &|a, b| cmp_ids(slots, a, b));
            }
            return Some(old);
        }
        let slot = Slot {
            score,
            name: Name::new(member),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                let id = u32::try_from(self.slots.len()).expect("at most 2^32 members per set");
                self.slots.push(slot);
                id
            }
        };
        self.index.insert(&self.slots, hash, id);
        let slots = &self.slots;
        self.tree.insert(id, &|a, b| cmp_ids(slots, a, b));
        None
    }

    /// Removes `member`. Returns its score.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let id = self.index.remove(&self.slots, member, hash_of(member))?;
        let slots = &self.slots;
        self.tree.remove(id, &|a, b| cmp_ids(slots, a, b));
        let slot = std::mem::replace(&mut self.slots[id as usize], Slot::vacant());
        self.free.push(id);
        if self.free.len() > 32 && self.free.len() * 2 > self.slots.len() {
            self.compact();
        }
        Some(slot.score)
    }

    /// Rebuilds the slab without holes, after many removals, and the tree and index over it. O(n).
    fn compact(&mut self) {
        let order: Vec<u32> = self.tree.iter().collect();
        let mut slots = Vec::with_capacity(order.len());
        for &id in &order {
            slots.push(std::mem::replace(
                &mut self.slots[id as usize],
                Slot::vacant(),
            ));
        }
        self.slots = slots;
        self.free = Vec::new();
        let n = self.slots.len() as u32;
        self.tree = Tree::from_sorted((0..n).collect());
        self.index = Index::with_capacity(n as usize);
        for id in 0..n {
            let hash = hash_of(self.slots[id as usize].name.as_bytes());
            self.index.insert(&self.slots, hash, id);
        }
    }

    /// The 0-based rank of `member` in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let id = self.index.find(&self.slots, member, hash_of(member))?;
        self.tree.rank(id, &self.cmp())
    }

    /// Members whose score is below `score` (or at most `score`, when `inclusive`).
    pub fn count_below(&self, score: f64, inclusive: bool) -> usize {
        let slots = &self.slots;
        if inclusive {
            self.tree
                .count_before(|id| slots[id as usize].score <= score)
        } else {
            self.tree
                .count_before(|id| slots[id as usize].score < score)
        }
    }

    /// The member and score at 0-based ascending `rank`.
    pub fn get_by_rank(&self, rank: usize) -> Option<(&[u8], f64)> {
        self.tree.get(rank).map(|id| self.entry(id))
    }

    fn entry(&self, id: u32) -> (&[u8], f64) {
        let s = &self.slots[id as usize];
        (s.name.as_bytes(), s.score)
    }

    /// Up to `count` members and scores from 0-based ascending rank `start` on.
    pub fn range(&self, start: usize, count: usize) -> Vec<(&[u8], f64)> {
        let mut ids = Vec::new();
        self.tree.range(start, count, &mut ids);
        ids.into_iter().map(|id| self.entry(id)).collect()
    }

    /// Every member and score, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], f64)> + '_ {
        let ids: tree::Iter<'_> = self.tree.iter();
        ids.map(|id| self.entry(id))
    }

    #[cfg(test)]
    fn check(&self) {
        self.tree.check(&self.cmp());
        assert_eq!(self.index.len(), self.len());
        assert_eq!(self.slots.len(), self.len() + self.free.len());
        for (m, s) in self.iter() {
            assert_eq!(self.score(m).map(f64::to_bits), Some(s.to_bits()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slots_stay_at_32_bytes() {
        assert_eq!(std::mem::size_of::<Name>(), 24);
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }

    #[test]
    fn equal_scores_order_by_member_bytes_shorter_first() {
        let mut z = ZSet::new();
        for m in ["b", "a", "ab", "", "B", "\u{e9}", "a\0"] {
            z.insert(m.as_bytes(), 1.0);
        }
        z.insert(b"low", -0.5);
        z.insert(b"top", f64::INFINITY);
        let order: Vec<&[u8]> = z.iter().map(|(m, _)| m).collect();
        let want: Vec<&[u8]> = vec![
            b"low",
            b"",
            b"B",
            b"a",
            b"a\0",
            b"ab",
            b"b",
            "\u{e9}".as_bytes(),
            b"top",
        ];
        assert_eq!(order, want);
        assert_eq!(z.rank(b"ab"), Some(5));
        assert_eq!(z.count_below(1.0, false), 1);
        assert_eq!(z.count_below(1.0, true), 8);
        z.check();
    }

    #[test]
    fn long_members_and_heavy_removal_compact_the_slab() {
        let mut z = ZSet::new();
        let name = |i: u32| format!("a-rather-long-member-name-{i:08}").into_bytes();
        for i in 0..5000 {
            assert_eq!(z.insert(&name(i), f64::from(i % 97)), None);
        }
        for i in 0..5000 {
            if i % 10 != 0 {
                assert_eq!(z.remove(&name(i)), Some(f64::from(i % 97)));
            }
        }
        assert_eq!(z.len(), 500);
        assert!(z.slots.len() < 1000, "slab compacted to {}", z.slots.len());
        z.check();
        assert_eq!(z.insert(&name(10), 1.5), Some(10.0));
        assert_eq!(z.score(&name(10)), Some(1.5));
        assert_eq!(z.score(&name(11)), None);
        z.check();
    }

    /// What the model and the set are asked to do.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, f64),
        Remove(u8),
        Rank(u8),
        Below(f64, bool),
        Range(usize, usize),
    }

    fn score() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-3i32..3).prop_map(f64::from),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            any::<i16>().prop_map(|i| f64::from(i) / 7.0),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), score()).prop_map(|(m, s)| Op::Insert(m, s)),
            2 => any::<u8>().prop_map(Op::Remove),
            1 => any::<u8>().prop_map(Op::Rank),
            1 => (score(), any::<bool>()).prop_map(|(s, i)| Op::Below(s, i)),
            1 => (0usize..300, 0usize..300).prop_map(|(a, b)| Op::Range(a, b)),
        ]
    }

    fn member(m: u8) -> Vec<u8> {
        // Some members share prefixes, some are long enough to live on the heap.
        match m % 4 {
            0 => vec![m],
            1 => format!("m{}", m / 3).into_bytes(),
            2 => format!("member-with-a-long-name-{m}").into_bytes(),
            _ => format!("m{m}").into_bytes(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn the_set_agrees_with_a_sorted_vec_model(ops in proptest::collection::vec(op(), 1..800)) {
            let mut z = ZSet::new();
            let mut model: Vec<(f64, Vec<u8>)> = Vec::new();
            let sort = |m: &mut Vec<(f64, Vec<u8>)>| {
                m.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then_with(|| a.1.cmp(&b.1)));
            };
            for op in ops {
                match op {
                    Op::Insert(m, s) => {
                        let m = member(m);
                        let old = model.iter().position(|e| e.1 == m).map(|i| model.remove(i).0);
                        model.push((s, m.clone()));
                        sort(&mut model);
                        prop_assert_eq!(z.insert(&m, s).map(f64::to_bits), old.map(f64::to_bits));
                    }
                    Op::Remove(m) => {
                        let m = member(m);
                        let old = model.iter().position(|e| e.1 == m).map(|i| model.remove(i).0);
                        prop_assert_eq!(z.remove(&m).map(f64::to_bits), old.map(f64::to_bits));
                    }
                    Op::Rank(m) => {
                        let m = member(m);
                        prop_assert_eq!(z.rank(&m), model.iter().position(|e| e.1 == m));
                    }
                    Op::Below(s, inclusive) => {
                        let n = model.iter().filter(|e| if inclusive { e.0 <= s } else { e.0 < s }).count();
                        prop_assert_eq!(z.count_below(s, inclusive), n);
                    }
                    Op::Range(start, count) => {
                        let got: Vec<(Vec<u8>, u64)> =
                            z.range(start, count).into_iter().map(|(m, s)| (m.to_vec(), s.to_bits())).collect();
                        let want: Vec<(Vec<u8>, u64)> = model.iter().skip(start).take(count)
                            .map(|(s, m)| (m.clone(), s.to_bits())).collect();
                        prop_assert_eq!(got, want);
                        if let Some((s, m)) = model.get(start) {
                            prop_assert_eq!(z.get_by_rank(start), Some((m.as_slice(), *s)));
                        }
                    }
                }
                prop_assert_eq!(z.len(), model.len());
            }
            z.check();
        }
    }

    #[test]
    fn thousands_of_members_keep_every_structure_consistent() {
        let mut z = ZSet::new();
        let mut x: u64 = 7;
        for round in 0..60_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let m = format!("p{}", (x >> 33) % 20_000);
            if round % 3 == 0 {
                z.remove(m.as_bytes());
            } else {
                z.insert(m.as_bytes(), ((x >> 20) % 1000) as f64);
            }
        }
        z.check();
    }
}
