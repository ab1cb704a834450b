//! Request collapsing: one origin read per file however many viewers ask for it at once.
//!
//! The first viewer to miss starts a [`Flight`]; everyone who misses on the same key while it
//! is in the air joins it. The read runs in its own task, so a viewer who hangs up does not
//! cancel it for the others, and its bytes are shared as they arrive: every viewer gets the
//! first byte before the origin has sent the last, and the file is held once, not once per
//! viewer.

use std::borrow::Borrow;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use futures_util::Stream;
use tokio::sync::watch;

use super::OriginError;

/// What a flight knows before its body: enough to start a response.
#[derive(Debug, Clone)]
pub struct Head {
    /// `None` when the origin did not say (a chunked answer).
    pub len: Option<u64>,
    pub modified: Option<SystemTime>,
}

/// One origin read in progress, shared by everyone waiting for it.
#[derive(Debug)]
pub struct Flight {
    state: Mutex<State>,
    /// Bumped on every change, so waiters wake without polling.
    version: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    head: Option<Result<Head, OriginError>>,
    chunks: Vec<Bytes>,
    /// `Some(Ok)` once the body is complete; `Some(Err)` if it broke off.
    end: Option<Result<(), OriginError>>,
}

impl Flight {
    fn new() -> Arc<Flight> {
        Arc::new(Flight { state: Mutex::default(), version: watch::Sender::new(0) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a state that is still readable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn change(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The fetcher's side: the response head, or why there is none.
    pub fn set_head(&self, head: Result<Head, OriginError>) {
        let failed = head.as_ref().err().cloned();
        self.change(|s| {
            s.head = Some(head);
            if let Some(e) = failed {
                s.end = Some(Err(e));
            }
        });
    }

    pub fn push(&self, chunk: Bytes) {
        self.change(|s| s.chunks.push(chunk));
    }

    pub fn finish(&self, end: Result<(), OriginError>) {
        self.change(|s| s.end = Some(end));
    }

    /// Waits until `ready` says yes about the state.
    async fn wait_for<T>(&self, mut ready: impl FnMut(&State) -> Option<T>) -> T {
        let mut version = self.version.subscribe();
        loop {
            if let Some(value) = ready(&self.lock()) {
                return value;
            }
            // The sender lives as long as `self`, so this cannot fail while we hold `self`.
            if version.changed().await.is_err() {
                if let Some(value) = ready(&self.lock()) {
                    return value;
                }
                std::future::pending::<()>().await;
            }
        }
    }

    pub async fn head(&self) -> Result<Head, OriginError> {
        self.wait_for(|s| s.head.clone()).await
    }

    /// The whole body, once complete (for playlists, which are rewritten whole, and the cache).
    pub async fn whole(&self) -> Result<Bytes, OriginError> {
        self.wait_for(|s| match &s.end {
            Some(Ok(())) => Some(Ok(concat(&s.chunks))),
            Some(Err(e)) => Some(Err(e.clone())),
            None => None,
        })
        .await
    }

    /// The bytes received so far and `last`, as one buffer: the whole body, for the cache, as
    /// its last chunk comes in.
    pub fn received_with(&self, last: &Bytes) -> Bytes {
        let state = self.lock();
        let with_last: Vec<&Bytes> = state.chunks.iter().chain([last]).filter(|c| !c.is_empty()).collect();
        concat(&with_last)
    }

    /// The body from its first byte, as it arrives. An origin that breaks off mid-body ends the
    /// stream with an error, so the viewer's connection is cut rather than the file passed off
    /// as complete.
    pub fn body(self: Arc<Self>) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(Some((self, 0usize)), |state| async move {
            let (flight, next) = state?;
            let item = flight
                .wait_for(|s| match (s.chunks.get(next), &s.end) {
                    (Some(chunk), _) => Some(Some(Ok(chunk.clone()))),
                    (None, Some(Ok(()))) => Some(None),
                    (None, Some(Err(e))) => Some(Some(Err(io::Error::other(e.to_string())))),
                    (None, None) => None,
                })
                .await?;
            // After an error the stream is over.
            let next = item.is_ok().then_some((flight, next + 1));
            Some((item, next))
        })
    }
}

/// The chunks as one buffer; a single chunk is shared, not copied.
fn concat<B: Borrow<Bytes>>(chunks: &[B]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.borrow().clone(),
        many => {
            let mut all = BytesMut::with_capacity(many.iter().map(|c| c.borrow().len()).sum());
            for chunk in many {
                all.extend_from_slice(chunk.borrow());
            }
            all.freeze()
        }
    }
}

/// The flights in the air, by key.
#[derive(Debug, Default)]
pub struct Flights {
    by_key: DashMap<String, Arc<Flight>>,
}

/// Whether the caller started the flight (and must run the read) or joined one.
pub enum Joined {
    Started(Arc<Flight>),
    Joined(Arc<Flight>),
}

impl Flights {
    pub fn join(&self, key: &str) -> Joined {
        if let Some(flight) = self.by_key.get(key) {
            return Joined::Joined(Arc::clone(&flight));
        }
        match self.by_key.entry(key.to_owned()) {
            dashmap::Entry::Occupied(e) => Joined::Joined(Arc::clone(e.get())),
            dashmap::Entry::Vacant(e) => Joined::Started(Arc::clone(&e.insert(Flight::new()))),
        }
    }

    /// Lands a flight: later misses start a new one. Its readers keep what they hold.
    pub fn land(&self, key: &str, flight: &Arc<Flight>) {
        self.by_key.remove_if(key, |_, current| Arc::ptr_eq(current, flight));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    #[tokio::test]
    async fn joiners_share_one_flight_and_read_every_byte_as_it_arrives() {
        let flights = Flights::default();
        let Joined::Started(flight) = flights.join("k") else { panic!("first must start") };
        let Joined::Joined(joined) = flights.join("k") else { panic!("second must join") };
        assert!(Arc::ptr_eq(&flight, &joined));
        let mut early = Arc::clone(&joined).body().boxed();
        flight.set_head(Ok(Head { len: Some(6), modified: None }));
        flight.push(Bytes::from_static(b"abc"));
        // The first chunk is readable before the last has arrived.
        assert_eq!(early.next().await.unwrap().unwrap(), "abc");
        flight.push(Bytes::from_static(b"def"));
        flight.finish(Ok(()));
        assert_eq!(early.next().await.unwrap().unwrap(), "def");
        assert!(early.next().await.is_none());
        // A late joiner of the same flight still gets it all.
        let late: Vec<Bytes> = Arc::clone(&joined).body().map(Result::unwrap).collect().await;
        assert_eq!(late.concat(), b"abcdef");
        assert_eq!(joined.whole().await.unwrap(), "abcdef");
        flights.land("k", &flight);
        assert!(matches!(flights.join("k"), Joined::Started(_)));
    }

    #[tokio::test]
    async fn a_broken_body_ends_every_reader_with_an_error() {
        let flights = Flights::default();
        let Joined::Started(flight) = flights.join("k") else { panic!() };
        flight.set_head(Ok(Head { len: Some(10), modified: None }));
        flight.push(Bytes::from_static(b"abc"));
        flight.finish(Err(OriginError::Truncated));
        let read: Vec<io::Result<Bytes>> = Arc::clone(&flight).body().collect().await;
        assert_eq!(read.len(), 2);
        assert!(read[1].is_err());
        assert!(matches!(flight.whole().await, Err(OriginError::Truncated)));
    }

    #[tokio::test]
    async fn a_failed_head_is_everyones_answer() {
        let flights = Flights::default();
        let Joined::Started(flight) = flights.join("k") else { panic!() };
        flight.set_head(Err(OriginError::NotFound));
        assert!(matches!(flight.head().await, Err(OriginError::NotFound)));
        assert!(matches!(flight.whole().await, Err(OriginError::NotFound)));
    }
}
