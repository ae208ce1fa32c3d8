//! An order-statistic B+ tree of member ids: the ordered half of a sorted set.
//!
//! Leaves hold ids in order; each inner node keeps, per child, the size of its subtree and the first
//! id in it. The order itself lives outside the tree (the caller passes a comparison of two ids, which
//! looks their score and member up), so every member's bytes are stored once, in the sorted set's slab.
//!
//! With up to 128 ids per leaf and 64 children per inner node, a million members sit three levels
//! deep. Locating an id, the rank of an id, the id at a rank and the number of ids before a
//! (monotone) bound are all O(log n); a run of k consecutive ids costs O(log n + k).
//!
//! Every node but the root stays at least a quarter full: an underfull node borrows from a sibling or
//! merges with it, and a root left with a single child is replaced by that child.

use std::cmp::Ordering;

const LEAF_CAP: usize = 128;
const INNER_CAP: usize = 64;
const LEAF_MIN: usize = LEAF_CAP / 4;
const INNER_MIN: usize = INNER_CAP / 4;

#[derive(Debug)]
enum Node {
    Leaf(Vec<u32>),
    Inner(Vec<Child>),
}

#[derive(Debug)]
struct Child {
    /// Ids in the subtree.
    len: u32,
    /// The subtree's first id, to route searches without descending into it.
    first: u32,
    node: Box<Node>,
}

impl Child {
    fn of(node: Node) -> Self {
        Self {
            len: node.total() as u32,
            first: node.first(),
            node: Box::new(node),
        }
    }
}

/// Grows a node's vector one step at a time up to `cap + 1` entries (the transient overflow before a
/// split), so that no node ever carries twice the room it can use.
fn reserve_one<T>(v: &mut Vec<T>, cap: usize) {
    if v.len() == v.capacity() {
        let want = (v.capacity() * 2).clamp(4, cap + 1);
        v.reserve_exact(want - v.len());
    }
}

impl Node {
    fn width(&self) -> usize {
        match self {
            Node::Leaf(v) => v.len(),
            Node::Inner(c) => c.len(),
        }
    }

    fn total(&self) -> usize {
        match self {
            Node::Leaf(v) => v.len(),
            Node::Inner(c) => c.iter().map(|c| c.len as usize).sum(),
        }
    }

    /// The first id; the node must not be empty.
    fn first(&self) -> u32 {
        match self {
            Node::Leaf(v) => v[0],
            Node::Inner(c) => c[0].first,
        }
    }

    fn min_width(&self) -> usize {
        match self {
            Node::Leaf(_) => LEAF_MIN,
            Node::Inner(_) => INNER_MIN,
        }
    }

    fn max_width(&self) -> usize {
        match self {
            Node::Leaf(_) => LEAF_CAP,
            Node::Inner(_) => INNER_CAP,
        }
    }

    /// Moves every entry of `other` (a node of the same kind, after this one) to the end of this one.
    fn append(&mut self, other: Node) {
        match (self, other) {
            (Node::Leaf(a), Node::Leaf(b)) => a.extend(b),
            (Node::Inner(a), Node::Inner(b)) => a.extend(b),
            _ => unreachable!("siblings are of one kind"),
        }
    }

    /// Evens out two adjacent siblings of the same kind.
    fn balance(left: &mut Node, right: &mut Node) {
        fn even<T>(l: &mut Vec<T>, r: &mut Vec<T>) {
            let target = (l.len() + r.len()) / 2;
            if l.len() < target {
                let k = target - l.len();
                l.extend(r.drain(..k));
            } else {
                let moved: Vec<T> = l.drain(target..).collect();
                r.splice(0..0, moved);
            }
        }
        match (left, right) {
            (Node::Leaf(a), Node::Leaf(b)) => even(a, b),
            (Node::Inner(a), Node::Inner(b)) => even(a, b),
            _ => unreachable!("siblings are of one kind"),
        }
    }
}

/// The tree. Ids are `u32` slab indexes; the order is given by the comparison passed to each call.
#[derive(Debug)]
pub(crate) struct Tree {
    root: Node,
    len: usize,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

/// The child of `cs` whose range holds `id`'s key: the last child whose first id is not after it.
fn child_for(cs: &[Child], id: u32, cmp: &impl Fn(u32, u32) -> Ordering) -> usize {
    cs.partition_point(|c| cmp(c.first, id) != Ordering::Greater)
        .saturating_sub(1)
}

fn sum_len(cs: &[Child]) -> usize {
    cs.iter().map(|c| c.len as usize).sum()
}

impl Tree {
    /// An empty tree.
    pub(crate) fn new() -> Self {
        Self {
            root: Node::Leaf(Vec::new()),
            len: 0,
        }
    }

    /// A tree of `ids`, which must already be in order. O(n).
    pub(crate) fn from_sorted(mut ids: Vec<u32>) -> Self {
        let len = ids.len();
        if len <= LEAF_CAP {
            ids.shrink_to_fit();
            return Self {
                root: Node::Leaf(ids),
                len,
            };
        }
        // Nodes about three quarters full, so that both inserts and removals have room before
        // they split or merge, each level spread evenly: a short last node would be below the fill
        // every node but the root keeps (a level of 49 leaves into nodes of 48 left one child).
        let mut level: Vec<Child> = even_groups(ids.len(), LEAF_CAP * 3 / 4)
            .scan(0, |at, n| {
                let mut v = Vec::with_capacity(LEAF_CAP + 1);
                v.extend_from_slice(&ids[*at..*at + n]);
                *at += n;
                Some(Child::of(Node::Leaf(v)))
            })
            .collect();
        while level.len() > 1 {
            let sizes: Vec<usize> = even_groups(level.len(), INNER_CAP * 3 / 4).collect();
            let mut next = Vec::with_capacity(sizes.len());
            let mut it = level.into_iter();
            for n in sizes {
                let mut group = Vec::with_capacity(INNER_CAP + 1);
                group.extend(it.by_ref().take(n));
                next.push(Child::of(Node::Inner(group)));
            }
            level = next;
        }
        let root = *level.pop().expect("at least one leaf").node;
        Self { root, len }
    }

    /// Ids in the tree.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Inserts `id`, which must not be in the tree, at its place by `cmp`.
    pub(crate) fn insert(&mut self, id: u32, cmp: &impl Fn(u32, u32) -> Ordering) {
        if let Some(right) = Self::insert_rec(&mut self.root, id, cmp) {
            let left = std::mem::replace(&mut self.root, Node::Leaf(Vec::new()));
            let mut cs = Vec::with_capacity(4);
            cs.push(Child::of(left));
            cs.push(Child::of(right));
            self.root = Node::Inner(cs);
        }
        self.len += 1;
    }

    /// Returns the new right sibling when `node` split.
    fn insert_rec(node: &mut Node, id: u32, cmp: &impl Fn(u32, u32) -> Ordering) -> Option<Node> {
        match node {
            Node::Leaf(v) => {
                let pos = v.partition_point(|&x| cmp(x, id) == Ordering::Less);
                reserve_one(v, LEAF_CAP);
                v.insert(pos, id);
                (v.len() > LEAF_CAP).then(|| {
                    let mut right = Vec::with_capacity(LEAF_CAP + 1);
                    right.extend(v.drain(v.len() / 2..));
                    Node::Leaf(right)
                })
            }
            Node::Inner(cs) => {
                let i = child_for(cs, id, cmp);
                let split = Self::insert_rec(&mut cs[i].node, id, cmp);
                cs[i].len += 1;
                cs[i].first = cs[i].node.first();
                let right = split?;
                let r = Child::of(right);
                cs[i].len -= r.len;
                reserve_one(cs, INNER_CAP);
                cs.insert(i + 1, r);
                (cs.len() > INNER_CAP).then(|| {
                    let mut right = Vec::with_capacity(INNER_CAP + 1);
                    right.extend(cs.drain(cs.len() / 2..));
                    Node::Inner(right)
                })
            }
        }
    }

    /// Removes `id`, found by `cmp` (its key must still be readable). False when it is absent.
    pub(crate) fn remove(&mut self, id: u32, cmp: &impl Fn(u32, u32) -> Ordering) -> bool {
        if !Self::remove_rec(&mut self.root, id, cmp) {
            return false;
        }
        self.len -= 1;
        while let Node::Inner(cs) = &mut self.root {
            if cs.len() != 1 {
                break;
            }
            let only = cs.pop().expect("one child");
            self.root = *only.node;
        }
        true
    }

    fn remove_rec(node: &mut Node, id: u32, cmp: &impl Fn(u32, u32) -> Ordering) -> bool {
        match node {
            Node::Leaf(v) => {
                let pos = v.partition_point(|&x| cmp(x, id) == Ordering::Less);
                if v.get(pos) == Some(&id) {
                    v.remove(pos);
                    true
                } else {
                    false
                }
            }
            Node::Inner(cs) => {
                let i = child_for(cs, id, cmp);
                if !Self::remove_rec(&mut cs[i].node, id, cmp) {
                    return false;
                }
                cs[i].len -= 1;
                Self::rebalance(cs, i);
                true
            }
        }
    }

    /// Restores the fill of child `i` after a removal, merging it with or borrowing from a sibling.
    fn rebalance(cs: &mut Vec<Child>, i: usize) {
        let w = cs[i].node.width();
        if w >= cs[i].node.min_width() || cs.len() == 1 {
            // A lone child only happens at the root, which `remove` collapses right after.
            if w > 0 {
                cs[i].first = cs[i].node.first();
            }
            return;
        }
        let (l, r) = if i + 1 < cs.len() {
            (i, i + 1)
        } else {
            (i - 1, i)
        };
        if cs[l].node.width() + cs[r].node.width() <= cs[l].node.max_width() {
            let right = cs.remove(r);
            cs[l].node.append(*right.node);
            cs[l].len += right.len;
            cs[l].first = cs[l].node.first();
        } else {
            let (a, b) = cs.split_at_mut(r);
            let (left, right) = (&mut a[l], &mut b[0]);
            Node::balance(&mut left.node, &mut right.node);
            for c in [left, right] {
                c.len = c.node.total() as u32;
                c.first = c.node.first();
            }
        }
    }

    /// The 0-based rank of `id`, or `None` when it is absent.
    pub(crate) fn rank(&self, id: u32, cmp: &impl Fn(u32, u32) -> Ordering) -> Option<usize> {
        let mut node = &self.root;
        let mut acc = 0;
        loop {
            match node {
                Node::Inner(cs) => {
                    let i = child_for(cs, id, cmp);
                    acc += sum_len(&cs[..i]);
                    node = &cs[i].node;
                }
                Node::Leaf(v) => {
                    let pos = v.partition_point(|&x| cmp(x, id) == Ordering::Less);
                    return (v.get(pos) == Some(&id)).then_some(acc + pos);
                }
            }
        }
    }

    /// How many ids satisfy `before`, which must hold for a prefix of the order and fail after it.
    pub(crate) fn count_before(&self, before: impl Fn(u32) -> bool) -> usize {
        let mut node = &self.root;
        let mut acc = 0;
        loop {
            match node {
                Node::Inner(cs) => {
                    let j = cs.partition_point(|c| before(c.first));
                    if j == 0 {
                        return acc;
                    }
                    acc += sum_len(&cs[..j - 1]);
                    node = &cs[j - 1].node;
                }
                Node::Leaf(v) => return acc + v.partition_point(|&x| before(x)),
            }
        }
    }

    /// The id at 0-based `rank`.
    pub(crate) fn get(&self, mut rank: usize) -> Option<u32> {
        if rank >= self.len {
            return None;
        }
        let mut node = &self.root;
        loop {
            match node {
                Node::Inner(cs) => {
                    let mut next = None;
                    for c in cs {
                        if rank < c.len as usize {
                            next = Some(&c.node);
                            break;
                        }
                        rank -= c.len as usize;
                    }
                    node = next?;
                }
                Node::Leaf(v) => return v.get(rank).copied(),
            }
        }
    }

    /// Appends to `out` up to `count` ids from 0-based rank `start` on, in order.
    pub(crate) fn range(&self, start: usize, count: usize, out: &mut Vec<u32>) {
        fn walk(node: &Node, skip: &mut usize, take: &mut usize, out: &mut Vec<u32>) {
            match node {
                Node::Leaf(v) => {
                    let s = (*skip).min(v.len());
                    *skip -= s;
                    let t = (*take).min(v.len() - s);
                    out.extend_from_slice(&v[s..s + t]);
                    *take -= t;
                }
                Node::Inner(cs) => {
                    for c in cs {
                        if *take == 0 {
                            return;
                        }
                        if *skip >= c.len as usize {
                            *skip -= c.len as usize;
                            continue;
                        }
                        walk(&c.node, skip, take, out);
                    }
                }
            }
        }
        let (mut skip, mut take) = (start, count);
        out.reserve(count.min(self.len.saturating_sub(start)));
        walk(&self.root, &mut skip, &mut take, out);
    }

    /// Every id, in order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        let mut it = Iter {
            stack: Vec::new(),
            leaf: [].iter(),
        };
        it.descend(&self.root);
        it
    }

    /// Checks every invariant (tests only): order, subtree sizes, first ids, fill and equal depth.
    #[cfg(test)]
    pub(crate) fn check(&self, cmp: &impl Fn(u32, u32) -> Ordering) {
        fn walk(node: &Node, root: bool, out: &mut Vec<u32>) -> usize {
            if !root {
                let min = match node {
                    Node::Leaf(_) => LEAF_MIN,
                    Node::Inner(_) => INNER_MIN,
                };
                assert!(
                    node.width() >= min,
                    "a non-root node of {} below {min}",
                    node.width()
                );
            }
            match node {
                Node::Leaf(v) => {
                    assert!(v.len() <= LEAF_CAP);
                    assert!(
                        v.capacity() <= LEAF_CAP + 1,
                        "leaf capacity {}",
                        v.capacity()
                    );
                    out.extend_from_slice(v);
                    1
                }
                Node::Inner(cs) => {
                    assert!(cs.len() <= INNER_CAP);
                    let mut depth = None;
                    for c in cs {
                        let before = out.len();
                        let d = walk(&c.node, false, out);
                        assert_eq!(c.len as usize, out.len() - before, "subtree size");
                        assert_eq!(c.first, out[before], "first id");
                        assert!(*depth.get_or_insert(d) == d, "unequal depth");
                    }
                    depth.unwrap_or(0) + 1
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, true, &mut out);
        assert_eq!(out.len(), self.len);
        for w in out.windows(2) {
            assert_eq!(cmp(w[0], w[1]), Ordering::Less, "order");
        }
    }
}

/// The sizes of the fewest groups of at most `target` that `n` items make, as equal as can be:
/// each at least half of `target` once there are two or more.
fn even_groups(n: usize, target: usize) -> impl Iterator<Item = usize> {
    let groups = n.div_ceil(target).max(1);
    (0..groups).map(move |g| n / groups + usize::from(g < n % groups))
}

/// An in-order walk of a [`Tree`].
pub(crate) struct Iter<'a> {
    stack: Vec<std::slice::Iter<'a, Child>>,
    leaf: std::slice::Iter<'a, u32>,
}

impl<'a> Iter<'a> {
    fn descend(&mut self, mut node: &'a Node) {
        loop {
            match node {
                Node::Leaf(v) => {
                    self.leaf = v.iter();
                    return;
                }
                Node::Inner(cs) => {
                    let mut it = cs.iter();
                    match it.next() {
                        Some(c) => {
                            self.stack.push(it);
                            node = &c.node;
                        }
                        None => return,
                    }
                }
            }
        }
    }
}

impl Iterator for Iter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        loop {
            if let Some(&id) = self.leaf.next() {
                return Some(id);
            }
            let next = loop {
                let top = self.stack.last_mut()?;
                match top.next() {
                    Some(c) => break &c.node,
                    None => {
                        self.stack.pop();
                    }
                }
            };
            self.descend(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_value(keys: &[i64]) -> impl Fn(u32, u32) -> Ordering + '_ {
        move |a, b| keys[a as usize].cmp(&keys[b as usize]).then(a.cmp(&b))
    }

    #[test]
    fn inserts_and_removals_keep_ranks_and_invariants_through_splits_and_merges() {
        let n = 20_000u32;
        let keys: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % 10_007).collect();
        let cmp = by_value(&keys);
        let mut t = Tree::new();
        for id in 0..n {
            t.insert(id, &cmp);
        }
        t.check(&cmp);
        let mut sorted: Vec<u32> = (0..n).collect();
        sorted.sort_by(|&a, &b| cmp(a, b));
        for (r, &id) in sorted.iter().enumerate().step_by(97) {
            assert_eq!(t.rank(id, &cmp), Some(r));
            assert_eq!(t.get(r), Some(id));
        }
        let mut out = Vec::new();
        t.range(5000, 300, &mut out);
        assert_eq!(out, sorted[5000..5300]);
        assert_eq!(t.iter().collect::<Vec<_>>(), sorted);
        // Remove all but a few, in an order unrelated to the tree's, checking as the tree shrinks.
        for (k, id) in (0..n).filter(|i| i % 13 != 0).enumerate() {
            assert!(t.remove(id, &cmp));
            if k % 2000 == 0 {
                t.check(&cmp);
            }
        }
        assert!(!t.remove(1, &cmp));
        t.check(&cmp);
        let left: Vec<u32> = sorted.iter().copied().filter(|i| i % 13 == 0).collect();
        assert_eq!(t.iter().collect::<Vec<_>>(), left);
        assert_eq!(t.count_before(|id| keys[id as usize] < 5000), {
            left.iter().filter(|&&i| keys[i as usize] < 5000).count()
        });
    }

    #[test]
    fn a_tree_built_from_sorted_ids_keeps_every_node_filled_at_any_size() {
        // 4,609 to 4,704 ids once made 49 leaves, grouped 48 and 1.
        for n in (0..300)
            .chain(4_600..4_710)
            .chain([96 * 48 * 48 + 1, 200_000])
        {
            let keys: Vec<i64> = (0..n as i64).collect();
            let cmp = by_value(&keys);
            let mut t = Tree::from_sorted((0..n as u32).collect());
            t.check(&cmp);
            assert_eq!(t.iter().count(), n);
            for id in (0..n as u32).step_by(2) {
                assert!(t.remove(id, &cmp));
            }
            t.check(&cmp);
        }
    }

    #[test]
    fn a_tree_built_from_sorted_ids_is_valid_and_accepts_changes() {
        let keys: Vec<i64> = (0..10_000).collect();
        let cmp = by_value(&keys);
        let mut t = Tree::from_sorted((0..10_000).collect());
        t.check(&cmp);
        for id in (0..10_000).step_by(3) {
            assert!(t.remove(id, &cmp));
        }
        t.check(&cmp);
        assert_eq!(t.len(), 10_000 - 3334);
    }
}
