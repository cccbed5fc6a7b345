//! A cap on concurrent connections that neither idle connections nor readers that never read can
//! exhaust.
//!
//! The hook socket and the metrics endpoint are reachable by the job (untrusted code running as the
//! runner's user, or anything on loopback). A plain cap (refuse when full) lets a job that opens
//! connections and never speaks lock out the real job hooks and scrapes; no cap lets it exhaust the
//! agent's file descriptors (and then `/proc` reads fail). So at most `cap` connections are open, and
//! each is in one of three phases:
//!
//! - **fresh**: waiting for its first request;
//! - **answering**: its request is being answered by the agent (microseconds; bounded by the
//!   caller's answer deadline). Never evicted: a real hook that has spoken is always answered;
//! - **served**: it has had at least one answer and is writing it, or waiting for another request.
//!
//! When a new connection arrives at the cap, the oldest *served* connection is closed to make room,
//! else the oldest *fresh* one that has had [`FRESH_GRACE`] to speak. A real client (a job hook,
//! `runner-lifecycle status`, a scrape) sends its request as soon as it connects and needs one
//! answer, so it is fresh for an instant and answering for microseconds; what gets evicted is a
//! connection that holds a slot without speaking, or one that keeps a slot by pipelining requests
//! and never reading the answers (issue 16: 64 such connections used to keep every slot "busy" being
//! answered and locked the hooks out). When nothing can be evicted (every slot answering, or fresh
//! within its grace), the new connection waits in the kernel's backlog, not refused, until a slot is
//! done or a grace runs out: at most [`FRESH_GRACE`], or the answer deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// How long a new connection is safe from eviction while it has not yet spoken: long enough for
/// the agent to read the request a real client writes right after connecting, short enough that
/// connections that never speak cycle through the slots quickly (64 slots: over a thousand a second).
pub const FRESH_GRACE: Duration = Duration::from_millis(50);

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
/// cannot hold a task forever, and is dropped at once if the limiter evicts it. At the cap with
/// every slot answering, the next connection is accepted only once a slot is free or evictable (it
/// waits in the kernel's backlog meanwhile). An accept error (EMFILE and friends) is logged as
/// `what` and backed off for 100 ms instead of spinning.
pub async fn serve<L, H, F>(listener: L, limiter: Arc<Limiter>, deadline: Duration, what: &'static str, handle: H)
where
    L: Accept,
    H: Fn(L::Stream, Slot) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        limiter.room().await;
        match listener.accept_one().await {
            Ok(stream) => {
                let (slot, evicted) = loop {
                    if let Some(admitted) = limiter.admit() {
                        break admitted;
                    }
                    // Every slot answering (a race with `room`): wait for one, briefly.
                    limiter.room().await;
                };
                let served = handle(stream, slot);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::timeout(deadline, served) => {}
                        _ = evicted => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Where a connection is in its life (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Fresh,
    Answering,
    Served,
}

#[derive(Debug)]
struct Member {
    phase: Phase,
    since: Instant,
    evict: Option<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// Open connections by admission order (oldest first).
    members: BTreeMap<u64, Member>,
    evicted: u64,
    waited: u64,
}

/// The connection limiter of one listening socket.
#[derive(Debug)]
pub struct Limiter {
    cap: usize,
    inner: Mutex<Inner>,
    /// Woken when a slot frees or stops answering.
    freed: Notify,
}

/// One admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<Limiter>,
    id: u64,
}

/// Resolves when the connection has been evicted.
pub type Evicted = oneshot::Receiver<()>;

impl Limiter {
    /// A limiter of `cap` connections (at least 1).
    pub fn new(cap: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection to close to make room: the oldest served one, else the oldest fresh one past
    /// its grace.
    fn victim(inner: &Inner, now: Instant) -> Option<u64> {
        let oldest = |phase, since_before: Option<Instant>| {
            inner
                .members
                .iter()
                .find(|(_, m)| m.phase == phase && since_before.is_none_or(|t| m.since <= t))
                .map(|(id, _)| *id)
        };
        oldest(Phase::Served, None).or_else(|| oldest(Phase::Fresh, now.checked_sub(FRESH_GRACE)))
    }

    /// `None` if a new connection could be admitted now, else when a fresh one's grace ends (if any).
    fn no_room(&self) -> Option<Option<Instant>> {
        let inner = self.lock();
        if inner.members.len() < self.cap || Self::victim(&inner, Instant::now()).is_some() {
            return None;
        }
        Some(
            inner
                .members
                .values()
                .filter(|m| m.phase == Phase::Fresh)
                .map(|m| m.since + FRESH_GRACE)
                .min(),
        )
    }

    /// Wait until a new connection can be admitted: at once, unless every slot is answering or
    /// fresh within its grace.
    pub async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let Some(grace_ends) = self.no_room() else {
                return;
            };
            self.lock().waited += 1;
            match grace_ends {
                Some(at) => {
                    tokio::select! {
                        () = freed => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => freed.await,
            }
        }
    }

    /// Admit a new connection, evicting one when at the cap (module docs). `None`: nothing can be
    /// evicted now; wait with [`Limiter::room`] and try again.
    pub fn admit(self: &Arc<Self>) -> Option<(Slot, Evicted)> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.members.len() >= self.cap {
            let victim = Self::victim(&inner, now)?;
            if let Some(mut m) = inner.members.remove(&victim) {
                inner.evicted += 1;
                if let Some(tx) = m.evict.take() {
                    let _ = tx.send(());
                }
            }
        }
        inner.next += 1;
        let id = inner.next;
        let (tx, rx) = oneshot::channel();
        inner.members.insert(
            id,
            Member {
                phase: Phase::Fresh,
                since: now,
                evict: Some(tx),
            },
        );
        Some((
            Slot {
                limiter: self.clone(),
                id,
            },
            rx,
        ))
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.lock().members.len()
    }

    /// Connections evicted, and times a new connection had to wait because every slot was answering.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.evicted, inner.waited)
    }

    fn set_phase(&self, id: u64, phase: Phase) {
        if let Some(m) = self.lock().members.get_mut(&id) {
            m.phase = phase;
        }
        if phase == Phase::Served {
            self.freed.notify_waiters();
        }
    }
}

impl Slot {
    /// Its request is being answered: not evictable until [`Slot::served`].
    pub fn answering(&self) {
        self.limiter.set_phase(self.id, Phase::Answering);
    }

    /// It has its answer (being written, or waiting for another request): evictable first.
    pub fn served(&self) {
        self.limiter.set_phase(self.id, Phase::Served);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.lock().members.remove(&self.id);
        self.limiter.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    async fn past_grace() {
        tokio::time::sleep(FRESH_GRACE + Duration::from_millis(10)).await;
    }

    #[test]
    fn served_connections_go_first_then_fresh_ones_past_their_grace_and_answering_ones_never() {
        block_on(async {
            let l = Limiter::new(3);
            let (a, mut a_ev) = l.admit().expect("a");
            let (b, mut b_ev) = l.admit().expect("b");
            let (c, mut c_ev) = l.admit().expect("c");
            assert!(l.admit().is_none(), "fresh ones within their grace are safe");
            a.answering();
            c.served();
            assert_eq!(l.open(), 3);
            let (d, mut d_ev) = l.admit().expect("d evicts c, served, though younger than b");
            assert!(c_ev.try_recv().is_ok(), "c evicted");
            assert!(a_ev.try_recv().is_err() && b_ev.try_recv().is_err());
            drop(c); // the evicted task ends: nothing changes
            assert_eq!(l.open(), 3);
            past_grace().await;
            let (e, _e_ev) = l.admit().expect("e evicts b, the oldest fresh one past its grace");
            assert!(b_ev.try_recv().is_ok(), "b evicted");
            drop(b);
            assert!(d_ev.try_recv().is_err());
            d.answering();
            e.answering();
            assert!(l.admit().is_none(), "every slot answering: wait");
            e.served();
            let (_f, _) = l.admit().expect("e served: it makes room");
            assert_eq!(l.counts().0, 3);
            drop(a);
            assert_eq!(l.open(), 2);
        });
    }

    /// Pipelining clients that never read their answers are served, then evictable: a newcomer
    /// always gets in, at once or as soon as one answer is done or a grace runs out.
    #[test]
    fn a_newcomer_waits_only_while_nothing_can_be_evicted() {
        block_on(async {
            let l = Limiter::new(2);
            let (a, _) = l.admit().expect("a");
            let (b, _) = l.admit().expect("b");
            a.answering();
            b.answering();
            let waiting = tokio::time::timeout(Duration::from_millis(50), l.room()).await;
            assert!(waiting.is_err(), "no room while both answer");
            let l2 = l.clone();
            let room = tokio::spawn(async move { l2.room().await });
            tokio::task::yield_now().await;
            b.served();
            tokio::time::timeout(Duration::from_secs(1), room)
                .await
                .expect("room once b has its answer")
                .expect("task");
            let (_c, _) = l.admit().expect("c evicts b");
            assert!(l.counts().1 >= 1);
            // c is fresh: room again once its grace is over.
            let started = Instant::now();
            tokio::time::timeout(Duration::from_secs(1), l.room())
                .await
                .expect("room after the grace");
            assert!(started.elapsed() >= FRESH_GRACE - Duration::from_millis(5));
        });
    }

    #[test]
    fn a_flood_of_idle_connections_never_grows_past_the_cap() {
        block_on(async {
            let l = Limiter::new(64);
            let mut slots = Vec::new();
            for _ in 0..1_000 {
                l.room().await;
                let admitted = l.admit().expect("idle ones make room");
                slots.push(admitted);
                slots.retain_mut(|(_, ev)| ev.try_recv().is_err());
                assert!(l.open() <= 64);
            }
            assert_eq!(slots.len(), 64);
        });
    }
}
