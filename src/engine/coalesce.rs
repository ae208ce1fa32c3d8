//! Coalescing: concurrent reads of one key become one script call, and so do concurrent single
//! writes to one board ([`Coalescer::run_detached`]).
//!
//! A read that finds no call for its key in flight makes the call at once, alone. Reads that arrive
//! while a call is in flight queue, and when it returns they go out together as the next call, made
//! by the first of them. A read never joins a call sent before it arrived, so its answer reflects
//! every write that completed before it began (read-your-writes holds, as without coalescing). An
//! idle server adds nothing to a read's latency; a busy one makes one call per key per round trip
//! instead of one per read, which is what keeps Redis and the connection from paying per request.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Coalesces calls that take a list of items on the same key `K` and answer one `O` per item.
pub(crate) struct Coalescer<K, I, O> {
    /// Items per call, at most.
    max: usize,
    /// Per key with a call in flight: the reads waiting for the next call.
    queues: Mutex<HashMap<K, VecDeque<Waiter<I, O>>>>,
}

struct Waiter<I, O> {
    item: I,
    tx: oneshot::Sender<Turn<I, O>>,
}

/// What a waiting read is told.
enum Turn<I, O> {
    /// Its answer.
    Done(O),
    /// It makes the next call, for its own item (handed back) and these.
    Lead(I, Vec<Waiter<I, O>>),
}

impl<K: Hash + Eq + Clone, I: Clone, O> Coalescer<K, I, O> {
    /// A coalescer making calls of at most `max` items (at least 1).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Answers `item` through `call`, which is handed a list of items (this one first) and must
    /// answer one output per item, in order.
    pub(crate) async fn run<F, Fut>(&self, key: &K, item: I, call: F) -> O
    where
        F: Fn(Vec<I>) -> Fut,
        Fut: Future<Output = Vec<O>>,
    {
        loop {
            let (tx, rx) = oneshot::channel();
            let lead = {
                let mut queues = self.queues();
                match queues.get_mut(key) {
                    Some(q) => {
                        q.push_back(Waiter {
                            item: item.clone(),
                            tx,
                        });
                        None
                    }
                    None => {
                        queues.insert(key.clone(), VecDeque::new());
                        Some(Vec::new())
                    }
                }
            };
            let others = match lead {
                Some(others) => others,
                None => match rx.await {
                    Ok(Turn::Done(o)) => return o,
                    Ok(Turn::Lead(_, others)) => others,
                    // The read that was making our call went away (its request was dropped):
                    // ask again.
                    Err(_) => continue,
                },
            };
            // From here this read leads: however its future ends, the queue passes on.
            let _handoff = Handoff { owner: self, key };
            let mut items = Vec::with_capacity(1 + others.len());
            let mut txs = Vec::with_capacity(others.len());
            items.push(item.clone());
            for w in others {
                items.push(w.item);
                txs.push(w.tx);
            }
            let mut outs = call(items).await.into_iter();
            let mine = outs.next();
            for (tx, o) in txs.into_iter().zip(outs) {
                // A read that went away meanwhile just misses its answer.
                let _ = tx.send(Turn::Done(o));
            }
            match mine {
                Some(o) => return o,
                // `call` answered too few: the waiters left unanswered ask again; so does this one.
                None => continue,
            }
        }
    }
}

impl<K: Hash + Eq + Clone, I, O> Coalescer<K, I, O> {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<K, VecDeque<Waiter<I, O>>>> {
        // Nothing panics while the lock is held; a poisoned map is still consistent.
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Passes `key`'s queue to its next leader, or forgets the key when nobody waits.
    fn pass_on(&self, key: &K) {
        let mut queues = self.queues();
        let Some(q) = queues.get_mut(key) else {
            return;
        };
        loop {
            let Some(next) = q.pop_front() else {
                queues.remove(key);
                return;
            };
            let take = q.len().min(self.max - 1);
            let rest: Vec<Waiter<I, O>> = q.drain(..take).collect();
            match next.tx.send(Turn::Lead(next.item, rest)) {
                Ok(()) => return,
                // That caller went away: the next one leads instead.
                Err(Turn::Lead(_, rest)) => {
                    for w in rest.into_iter().rev() {
                        q.push_front(w);
                    }
                }
                Err(Turn::Done(_)) => unreachable!("a lead was sent"),
            }
        }
    }
}

impl<K, I, O> Coalescer<K, I, O>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    /// As [`Coalescer::run`], for calls that must run to their end once made and answer every item
    /// they carry (writes): the call runs in a task of its own, so that the items it carries are
    /// answered even when the future of the caller that made it is dropped (a client gone), and the
    /// next call is made when it ends. An item whose call ended without answering it (a panic) gets
    /// `lost()`: it may have been applied, so it is never sent again.
    pub(crate) async fn run_detached<F, Fut>(
        self: &Arc<Self>,
        key: &K,
        item: I,
        call: F,
        lost: impl Fn() -> O,
    ) -> O
    where
        F: FnOnce(Vec<I>) -> Fut,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let queued = {
            let mut queues = self.queues();
            match queues.get_mut(key) {
                Some(q) => {
                    q.push_back(Waiter { item, tx });
                    None
                }
                None => {
                    queues.insert(key.clone(), VecDeque::new());
                    Some(item)
                }
            }
        };
        let (item, others) = match queued {
            Some(item) => (item, Vec::new()),
            None => match rx.await {
                Ok(Turn::Done(o)) => return o,
                Ok(Turn::Lead(item, others)) => (item, others),
                Err(_) => return lost(),
            },
        };
        let mut items = Vec::with_capacity(1 + others.len());
        let mut txs = Vec::with_capacity(others.len());
        items.push(item);
        for w in others {
            items.push(w.item);
            txs.push(w.tx);
        }
        let made = call(items);
        let (mine_tx, mine_rx) = oneshot::channel();
        let (owner, key) = (self.clone(), key.clone());
        tokio::spawn(async move {
            // However the call ends, a panic included, the queue passes on.
            let _handoff = OwnedHandoff { owner, key };
            let mut outs = made.await.into_iter();
            let mine = outs.next();
            for (tx, o) in txs.into_iter().zip(outs) {
                let _ = tx.send(Turn::Done(o));
            }
            if let Some(o) = mine {
                let _ = mine_tx.send(o);
            }
        });
        mine_rx.await.unwrap_or_else(|_| lost())
    }
}

/// [`Handoff`] for a call running in a task of its own.
struct OwnedHandoff<K: Hash + Eq + Clone, I, O> {
    owner: Arc<Coalescer<K, I, O>>,
    key: K,
}

impl<K: Hash + Eq + Clone, I, O> Drop for OwnedHandoff<K, I, O> {
    fn drop(&mut self) {
        self.owner.pass_on(&self.key);
    }
}

/// Passes a key's queue to its next leader, or forgets the key when nobody waits.
struct Handoff<'a, K: Hash + Eq + Clone, I: Clone, O> {
    owner: &'a Coalescer<K, I, O>,
    key: &'a K,
}

impl<K: Hash + Eq + Clone, I: Clone, O> Drop for Handoff<'_, K, I, O> {
    fn drop(&mut self) {
        self.owner.pass_on(self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    /// A call that records each batch and waits for a permit before answering each item doubled.
    struct Gated {
        batches: Mutex<Vec<Vec<u32>>>,
        gate: Semaphore,
    }

    impl Gated {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                batches: Mutex::new(Vec::new()),
                gate: Semaphore::new(0),
            })
        }

        async fn call(&self, items: Vec<u32>) -> Vec<u32> {
            self.batches.lock().unwrap().push(items.clone());
            self.gate.acquire().await.unwrap().forget();
            items.into_iter().map(|i| i * 2).collect()
        }

        fn batches(&self) -> Vec<Vec<u32>> {
            self.batches.lock().unwrap().clone()
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn spawn_read(
        c: &Arc<Coalescer<&'static str, u32, u32>>,
        g: &Arc<Gated>,
        item: u32,
    ) -> tokio::task::JoinHandle<u32> {
        let (c, g) = (c.clone(), g.clone());
        tokio::spawn(async move { c.run(&"k", item, |items| g.call(items)).await })
    }

    #[tokio::test]
    async fn a_lone_read_calls_at_once_and_a_queued_one_waits_for_the_next_call() {
        let c = Arc::new(Coalescer::new(8));
        let g = Gated::new();
        let a = spawn_read(&c, &g, 1);
        settle().await;
        // B and C arrive while A's call is in flight: they must not ride on it.
        let b = spawn_read(&c, &g, 2);
        let other_key = {
            let (c, g) = (c.clone(), g.clone());
            tokio::spawn(async move { c.run(&"other", 7, |items| g.call(items)).await })
        };
        let cc = spawn_read(&c, &g, 3);
        settle().await;
        assert_eq!(g.batches(), vec![vec![1], vec![7]]);
        g.gate.add_permits(2);
        assert_eq!(a.await.unwrap(), 2);
        assert_eq!(other_key.await.unwrap(), 14);
        settle().await;
        assert_eq!(g.batches(), vec![vec![1], vec![7], vec![2, 3]]);
        g.gate.add_permits(1);
        assert_eq!(b.await.unwrap(), 4);
        assert_eq!(cc.await.unwrap(), 6);
        assert!(c.queues().is_empty(), "the keys are forgotten once idle");
    }

    #[tokio::test]
    async fn calls_hold_at_most_max_items() {
        let c = Arc::new(Coalescer::new(3));
        let g = Gated::new();
        let first = spawn_read(&c, &g, 0);
        settle().await;
        let rest: Vec<_> = (1..=7).map(|i| spawn_read(&c, &g, i)).collect();
        settle().await;
        g.gate.add_permits(100);
        assert_eq!(first.await.unwrap(), 0);
        for (i, h) in (1..=7).zip(rest) {
            assert_eq!(h.await.unwrap(), i * 2);
        }
        let batches = g.batches();
        assert_eq!(batches[0], vec![0]);
        assert_eq!(batches[1..], [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_passes_the_queue_on() {
        let c = Arc::new(Coalescer::new(8));
        let g = Gated::new();
        let a = spawn_read(&c, &g, 1);
        settle().await;
        let b = spawn_read(&c, &g, 2);
        let cc = spawn_read(&c, &g, 3);
        settle().await;
        // B is told to lead the next call and goes away before it can: C leads instead.
        b.abort();
        let _ = b.await;
        g.gate.add_permits(1);
        assert_eq!(a.await.unwrap(), 2);
        settle().await;
        // Now the leader itself goes away in the middle of its call.
        let d = spawn_read(&c, &g, 4);
        settle().await;
        assert_eq!(g.batches(), vec![vec![1], vec![3]]);
        cc.abort();
        let _ = cc.await;
        settle().await;
        assert_eq!(g.batches(), vec![vec![1], vec![3], vec![4]]);
        g.gate.add_permits(1);
        assert_eq!(d.await.unwrap(), 8);
        assert!(c.queues().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_concurrent_read_gets_its_own_answer() {
        let c: Arc<Coalescer<u8, u32, u32>> = Arc::new(Coalescer::new(16));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..2_000u32 {
            let (c, calls) = (c.clone(), calls.clone());
            handles.push(tokio::spawn(async move {
                let key = (i % 3) as u8;
                let got = c
                    .run(&key, i, |items| {
                        let calls = calls.clone();
                        async move {
                            calls.fetch_add(1, Ordering::Relaxed);
                            assert!(items.len() <= 16);
                            tokio::time::sleep(Duration::from_micros(200)).await;
                            items.into_iter().map(|x| x + 1_000_000).collect()
                        }
                    })
                    .await;
                assert_eq!(got, i + 1_000_000);
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let calls = calls.load(Ordering::Relaxed);
        assert!(
            calls < 2_000,
            "{calls} calls for 2000 reads: nothing was coalesced"
        );
        assert!(c.queues().is_empty());
    }
}
