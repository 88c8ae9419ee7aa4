//! Reads of a live value (never cached) that many requests make at once, shared without
//! serving anything stale.
//!
//! Per key, one read is in flight at a time. A request that arrives while it runs waits for
//! the next read, which starts after the current one ends — so every answer comes from a read
//! that began after its request arrived, exactly what a read of its own would give, while the
//! database sees one query per batch instead of one per request. Under no load a batch is the
//! one request (one extra task spawn); under load, as many as arrived during one round trip.
//!
//! The read runs in a task of its own: a request dropped by its client does not cancel the
//! read the others wait for. Its waits are bounded by the pool's acquire and statement
//! timeouts like any other read.

use foldhash::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::{CoreError, CoreResult};

type Waiter<V> = oneshot::Sender<CoreResult<V>>;

pub struct Coalesced<K, V> {
    /// Keys with a read in flight, and who waits for the next one.
    waiting: Mutex<HashMap<K, Vec<Waiter<V>>>>,
}

impl<K, V> Default for Coalesced<K, V> {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(HashMap::default()),
        }
    }
}

impl<K, V> Coalesced<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    /// `read(key)` as run after this call began, shared with the calls waiting beside it.
    pub async fn read<F, Fut>(self: &Arc<Self>, key: &K, read: F) -> CoreResult<V>
    where
        F: Fn(K) -> Fut + Send + 'static,
        Fut: Future<Output = CoreResult<V>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut waiting = self.lock();
            match waiting.get_mut(key) {
                Some(next) => {
                    next.push(tx);
                    false
                }
                None => {
                    waiting.insert(key.clone(), vec![tx]);
                    true
                }
            }
        };
        if first {
            tokio::spawn(self.clone().serve(key.clone(), read));
        }
        // The sender is dropped without an answer only if the read panicked.
        rx.await.unwrap_or_else(|_| {
            Err(CoreError::Corrupt(
                "a shared read ended without an answer".into(),
            ))
        })
    }

    /// Reads for batch after batch of waiters until none is left.
    async fn serve<F, Fut>(self: Arc<Self>, key: K, read: F)
    where
        F: Fn(K) -> Fut,
        Fut: Future<Output = CoreResult<V>>,
    {
        let _unwind = Unwind {
            coalesced: &self,
            key: &key,
        };
        loop {
            let batch = {
                let mut waiting = self.lock();
                match waiting.get_mut(&key) {
                    Some(next) if !next.is_empty() => std::mem::take(next),
                    // Removed under the lock that arrivals take: a later arrival starts anew.
                    _ => {
                        waiting.remove(&key);
                        return;
                    }
                }
            };
            let answer = read(key.clone()).await;
            for waiter in batch {
                // A waiter whose request was dropped no longer listens.
                let _ = waiter.send(answer.as_ref().map(V::clone).map_err(CoreError::again));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Vec<Waiter<V>>>> {
        // The map stays consistent at every unlock, so a panic elsewhere cannot leave it torn.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Forgets the key if the read panics, so later arrivals start a read of their own instead
/// of waiting behind a task that is gone (the waiters of the lost batch get an error).
struct Unwind<'a, K: Eq + Hash, V> {
    coalesced: &'a Coalesced<K, V>,
    key: &'a K,
}

impl<K: Eq + Hash, V> Drop for Unwind<'_, K, V> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut waiting = self
                .coalesced
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            waiting.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn callers_during_a_read_share_the_next_one_not_the_current() {
        let coalesced: Arc<Coalesced<&str, usize>> = Arc::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let read = {
            let reads = reads.clone();
            move |_key| {
                let reads = reads.clone();
                async move {
                    // The value is which read answered; a slow read lets callers pile up.
                    let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(n)
                }
            }
        };
        let first = tokio::spawn({
            let (c, r) = (coalesced.clone(), read.clone());
            async move { c.read(&"org", r).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Arrived while read 1 runs: all answered by read 2, which began after them.
        let later: Vec<_> = (0..20)
            .map(|_| {
                let (c, r) = (coalesced.clone(), read.clone());
                tokio::spawn(async move { c.read(&"org", r).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for answer in later {
            assert_eq!(answer.await.unwrap().unwrap(), 2);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Idle again: the next caller starts a read of its own.
        assert_eq!(coalesced.read(&"org", read.clone()).await.unwrap(), 3);
        assert!(coalesced.lock().is_empty());
    }

    #[tokio::test]
    async fn keys_do_not_wait_for_each_other_and_errors_reach_every_waiter() {
        let coalesced: Arc<Coalesced<&str, usize>> = Arc::default();
        let slow = |_key| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(0)
        };
        let stuck = tokio::spawn({
            let c = coalesced.clone();
            async move { c.read(&"slow", slow).await }
        });
        let failing = |_key| async { Err(CoreError::Corrupt("bad row".into())) };
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let c = coalesced.clone();
                tokio::spawn(async move { c.read(&"other", failing).await })
            })
            .collect();
        for waiter in waiters {
            let answer = waiter.await.unwrap();
            assert!(matches!(answer, Err(CoreError::Corrupt(m)) if m == "bad row"));
        }
        stuck.abort();
    }

    #[tokio::test]
    async fn a_panicking_read_frees_the_key() {
        let coalesced: Arc<Coalesced<&str, usize>> = Arc::default();
        let answer = coalesced
            .read(&"org", |_key| async { panic!("read failed") })
            .await;
        assert!(answer.is_err());
        assert_eq!(
            coalesced
                .read(&"org", |_key| async { Ok(7) })
                .await
                .unwrap(),
            7
        );
    }
}
