//! A cap on concurrent connections that idle connections cannot exhaust.
//!
//! The hook socket and the metrics endpoint are reachable by the job (untrusted code running as the
//! runner's user, or anything on loopback). A plain cap (refuse when full) lets a job that opens
//! connections and never speaks lock out the real job hooks and scrapes; no cap lets it exhaust the
//! agent's file descriptors (and then `/proc` reads fail). So: at most `cap` connections are open,
//! and when a new one arrives at the cap, the oldest connection that is *idle* (waiting for its
//! request, not being answered) is closed to make room. A real client sends its request as soon as
//! it connects and is answered in microseconds, so it is idle only for that instant; a connection
//! that holds a slot without speaking is what gets evicted. Only when every slot is busy being
//! answered is the new connection closed at once (the hook then answers its job right away).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

/// A listening socket whose connections [`serve`] hands out.
pub trait Accept {
    /// One accepted connection.
    type Stream: Send + 'static;
    /// Wait for the next connection.
    fn accept_one(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accept connections forever. Each one the limiter admits is served by `handle` (which owns its
/// slot, freed when the handler ends) within `deadline`, so a client that connects and never speaks
/// cannot hold a task forever; at the cap with every slot busy, the new connection is closed at
/// once. An accept error (EMFILE and friends) is logged as `what` and backed off for 100 ms instead
/// of spinning.
pub async fn serve<L, H, F>(listener: L, limiter: Arc<Limiter>, deadline: Duration, what: &'static str, handle: H)
where
    L: Accept,
    H: Fn(L::Stream, Slot) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept_one().await {
            Ok(stream) => {
                let Some(slot) = limiter.admit() else {
                    drop(stream);
                    continue;
                };
                let served = handle(stream, slot);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(deadline, served).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    members: BTreeSet<u64>,
    /// Idle members (ordered oldest first) and the way to tell each it is evicted.
    idle: BTreeMap<u64, oneshot::Sender<()>>,
    evicted: u64,
    refused: u64,
}

/// The connection limiter of one listening socket.
#[derive(Debug)]
pub struct Limiter {
    cap: usize,
    inner: Mutex<Inner>,
}

/// One admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<Limiter>,
    id: u64,
}

/// Resolves when the connection has been evicted (while idle).
pub type Evicted = oneshot::Receiver<()>;

impl Limiter {
    /// A limiter of `cap` connections (at least 1).
    pub fn new(cap: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admit a new connection, evicting the oldest idle one when at the cap. `None`: every slot is
    /// busy being answered; close the new connection at once.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.members.len() >= self.cap {
            match inner.idle.pop_first() {
                Some((oldest, evict)) => {
                    inner.members.remove(&oldest);
                    inner.evicted += 1;
                    let _ = evict.send(());
                }
                None => {
                    inner.refused += 1;
                    return None;
                }
            }
        }
        inner.next += 1;
        let id = inner.next;
        inner.members.insert(id);
        Some(Slot {
            limiter: self.clone(),
            id,
        })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.lock().members.len()
    }

    /// Connections evicted while idle, and connections refused because every slot was busy.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.evicted, inner.refused)
    }
}

impl Slot {
    /// The connection waits for its client (evictable) until [`Slot::busy`]; the receiver resolves
    /// if it is evicted meanwhile.
    pub fn idle(&self) -> Evicted {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.limiter.lock();
        if inner.members.contains(&self.id) {
            inner.idle.insert(self.id, tx);
        } else {
            let _ = tx.send(()); // already evicted
        }
        rx
    }

    /// The connection is being answered: not evictable.
    pub fn busy(&self) {
        self.limiter.lock().idle.remove(&self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.limiter.lock();
        inner.idle.remove(&self.id);
        inner.members.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_are_evicted_oldest_first_and_busy_ones_never() {
        let l = Limiter::new(3);
        let a = l.admit().expect("a");
        let b = l.admit().expect("b");
        let c = l.admit().expect("c");
        let mut a_ev = a.idle();
        let mut b_ev = b.idle();
        c.busy();
        assert_eq!(l.open(), 3);
        let d = l.admit().expect("d evicts a");
        assert!(a_ev.try_recv().is_ok(), "a evicted");
        assert!(b_ev.try_recv().is_err(), "b kept");
        assert_eq!(l.open(), 3);
        drop(a); // the evicted task ends: nothing changes
        assert_eq!(l.open(), 3);
        b.busy();
        d.busy();
        assert!(l.admit().is_none(), "all busy: refused");
        assert_eq!(l.counts(), (1, 1));
        drop(c);
        let e = l.admit().expect("a slot is free");
        assert_eq!(l.open(), 3);
        drop((b, d, e));
        assert_eq!(l.open(), 0);
    }

    #[test]
    fn a_flood_of_idle_connections_never_grows_past_the_cap() {
        let l = Limiter::new(64);
        let mut slots = Vec::new();
        for _ in 0..10_000 {
            let s = l.admit().expect("idle ones make room");
            let ev = s.idle();
            slots.push((s, ev));
            slots.retain_mut(|(_, ev)| ev.try_recv().is_err());
            assert!(l.open() <= 64);
        }
        assert_eq!(slots.len(), 64);
    }
}
