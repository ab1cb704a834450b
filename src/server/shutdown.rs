//! Shutdown as a value: one [`Trigger`] fires it, any number of [`Shutdown`] handles hear it.
//!
//! The listeners stop accepting when they hear it; open connections are then drained, each
//! finishing the response it is sending, up to a deadline.

use tokio::sync::watch;

/// Fires the shutdown once; dropping it fires it too, so a crashed signal task still stops us.
pub struct Trigger(watch::Sender<bool>);

/// Hears the shutdown. Cheap to clone: one per listener.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown has been fired (at once if it already has).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which is also a reason to stop.
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}
